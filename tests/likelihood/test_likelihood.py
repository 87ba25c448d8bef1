"""Monte Carlo likelihood estimators: exact for one-token answers, unbiased against the exact
expectation computed by enumerating every mask subset, reproducible from the seed.

Exact expectation. Both estimators average, over a mask count c ~ U{1..L} and a uniform subset
S of c answer positions, a score s(S) = w(c) * sum_{i in S} CE_i(answer with S masked), with
w = L/c (LLaDA) or 1/c (Eq. 14). Enumerating the 2^L - 1 subsets gives E[s] and Var[s] exactly.

Monte Carlo bound. Eq. 14 samples are independent: the mean of n samples has standard error
sigma / sqrt(n). LLaDA's samples are dependent inside a stratified group of b rows, but a mean
of b identically distributed scores has variance <= sigma^2, so n/b groups give a standard error
<= sigma / sqrt(n / b). The tests allow 4 of these standard errors (a false failure has
probability < 1e-4 for a normal mean).
"""

import itertools
import math

import numpy as np
import pytest

from mdu_jax.likelihood import eq14_nll, loglikelihood, stratified_count
from mdu_jax.models.config import inference_config
from tests.sampling.tiny import MASK, row_logits, tiny_model

FAMILIES = ("llada", "dream")


def log_softmax(logits):
    z = logits - logits.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def guided_logits(cfg, params, rows, prompt_len, cfg_scale):
    logits = row_logits(cfg, params, rows)
    if cfg_scale > 0:
        un_rows = [[MASK] * prompt_len + list(r[prompt_len:]) for r in rows]
        un = row_logits(cfg, params, un_rows)
        logits = un + (cfg_scale + 1) * (logits - un)
    return logits


def exact_moments(cfg, params, prompt, answer, estimator, cfg_scale=0.0):
    """(E[score], sd[score]) of one Monte Carlo sample, by enumerating the mask subsets."""
    P, L = len(prompt), len(answer)
    subsets = [S for c in range(1, L + 1) for S in itertools.combinations(range(L), c)]
    rows = [list(prompt) + [MASK if i in S else a for i, a in enumerate(answer)] for S in subsets]
    logp = log_softmax(guided_logits(cfg, params, rows, P, cfg_scale))
    scores, probs = [], []
    for S, lp in zip(subsets, logp):
        ce = -sum(lp[P + i, answer[i]] for i in S)
        c = len(S)
        scores.append(ce * (L / c if estimator == "llada" else 1 / c))
        probs.append(1 / L / math.comb(L, c))
    scores, probs = np.asarray(scores), np.asarray(probs)
    mean = float(probs @ scores)
    return mean, float(np.sqrt(probs @ (scores - mean) ** 2))


# Rows per forward in most tests: their passes all have R rows of T = 16 tokens with 16 answer
# slots (3 pairs x 16 samples, or more rows R at a time), so one compiled program per family,
# estimator and guidance serves every test (each program takes seconds to compile here). The
# samples follow each pair's own random stream, so R changes no value.
R = 48
PAIRS = [([5, 6, 7], [9]), ([4, 8, 9, 10, 11, 12], [30]), ([20, 21], [3])]


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("cfg_scale", [0.0, 1.0])
def test_one_token_answers_give_the_exact_log_probability(family, cfg_scale):
    cfg, params = tiny_model(family)
    exact = []
    for prompt, answer in PAIRS:
        lp = log_softmax(guided_logits(cfg, params, [prompt + [MASK]], len(prompt), cfg_scale))
        exact.append(lp[0, len(prompt), answer[0]])
    # Every sample of a one-token answer is exact; 16 per pair fill the R rows of a pass.
    ll = loglikelihood(cfg, params, PAIRS, mc_samples=16, batch_size=2, cfg_scale=cfg_scale, rows_per_forward=R)
    nll = eq14_nll(cfg, params, PAIRS, mc_samples=16, cfg_scale=cfg_scale, rows_per_forward=R)
    np.testing.assert_allclose(ll, exact, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(nll, -np.asarray(exact), rtol=1e-5, atol=1e-5)


PROMPT, ANSWER = [5, 6, 7, 8], [12, 30, 9, 41]  # L = 4: 15 subsets
COPIES, SAMPLES, GROUP = 48, 32, 8  # 48 independent estimates of 32 samples each, per seed


@pytest.mark.parametrize("family", FAMILIES)
def test_mean_over_seeds_matches_the_enumerated_expectation(family):
    cfg, params = tiny_model(family)
    # The same pair at 48 indices: 48 independent random streams per seed (2 seeds).
    pairs = [(PROMPT, ANSWER)] * COPIES
    for estimator in ("llada", "eq14"):
        mean, sd = exact_moments(cfg, params, PROMPT, ANSWER, estimator)
        values = []
        for seed in (0, 1):
            if estimator == "llada":
                values.append(-loglikelihood(cfg, params, pairs, mc_samples=SAMPLES, batch_size=GROUP, seed=seed,
                                             rows_per_forward=R))
            else:
                values.append(eq14_nll(cfg, params, pairs, mc_samples=SAMPLES, seed=seed, rows_per_forward=R))
        values = np.concatenate(values)
        n = values.size * SAMPLES
        standard_error = sd / math.sqrt(n / GROUP if estimator == "llada" else n)
        assert abs(values.mean() - mean) < 4 * standard_error, (estimator, values.mean(), mean, standard_error)
        # The estimates do vary: the test compares a mean, not a constant.
        assert values.std() > 0.1 * sd / math.sqrt(SAMPLES)


def test_same_seed_same_values_whatever_the_batching():
    cfg, params = tiny_model("llada")
    pairs = [([5, 6, 7], [9, 10, 11]), ([4, 8], [30, 31]), ([20, 21, 22, 23, 24, 25], [3, 4, 5, 6, 7])]
    kw = dict(mc_samples=16, batch_size=4, rows_per_forward=R)
    a = loglikelihood(cfg, params, pairs, seed=3, **kw)
    np.testing.assert_array_equal(a, loglikelihood(cfg, params, pairs, seed=3, **kw))
    # Two passes of 24 rows instead of one of 48 (the program of the bucket test below).
    b = loglikelihood(cfg, params, pairs, seed=3, **{**kw, "rows_per_forward": 24})
    np.testing.assert_allclose(a, b, rtol=1e-6)
    c = loglikelihood(cfg, params, pairs[::-1], seed=3, **kw)
    assert not np.allclose(a, c[::-1])  # a pair's stream follows its index in the list
    assert not np.allclose(a, loglikelihood(cfg, params, pairs, seed=4, **kw))
    e = eq14_nll(cfg, params, pairs, mc_samples=16, rows_per_forward=R)
    np.testing.assert_array_equal(e, eq14_nll(cfg, params, pairs, mc_samples=16, rows_per_forward=R))


def official_llada_counts(k, L, b):
    """LLaDA's get_log_likelihood: round(linspace(k, k + (b-1) L / b, b)), wrapped to 1..L."""
    import torch

    x = torch.round(torch.linspace(float(k), k + (b - 1) * (L / b), steps=b)).long()
    return (((x - 1) % L) + 1).tolist()


def test_stratified_counts_are_uniform_and_match_llada_without_half_offsets():
    for L in range(1, 13):
        for b in (1, 2, 3, 4, 8, 16):
            for j in range(b):
                # Each row's count runs over 1..L exactly once as k does: U{1..L} marginals.
                assert sorted(stratified_count(k, j, L, b) for k in range(1, L + 1)) == list(range(1, L + 1))
            if all((2 * j * L) % (2 * b) != b for j in range(b)):  # no j L / b ends in .5
                for k in range(1, L + 1):
                    assert [stratified_count(k, j, L, b) for j in range(b)] == official_llada_counts(k, L, b)


def test_empty_answers_score_zero_and_bad_inputs_raise():
    cfg, params = tiny_model("llada")
    assert loglikelihood(cfg, params, [([5, 6], [])], mc_samples=2, batch_size=2).tolist() == [0.0]
    assert eq14_nll(cfg, params, [([5, 6], []), ([5], [9])], mc_samples=R, rows_per_forward=R)[0] == 0.0
    with pytest.raises(ValueError, match="batch_size"):
        loglikelihood(cfg, params, PAIRS, mc_samples=10, batch_size=4)
    with pytest.raises(ValueError, match="mask token"):
        eq14_nll(cfg, params, [([5], [MASK])])
    dream_cfg, dream_params = tiny_model("dream")
    with pytest.raises(ValueError, match="empty prompt"):
        eq14_nll(dream_cfg, dream_params, [([], [5, 6])])


def test_buckets_less_than_twice_apart_share_one_program():
    from mdu_jax.likelihood import likelihood_batches

    lengths = [(50, 10), (80, 10), (150, 30), (60, 0)]  # buckets 64, 96, 192; an empty answer
    plan = likelihood_batches(lengths, mc_samples=4, rows_per_forward=8)
    assert [(b.length, b.answer_slots, len(b.rows)) for b in plan] == [(96, 16, 8), (192, 32, 4)]
    assert {n for b in plan for n, _ in b.rows} == {0, 1, 2}


def test_one_program_per_length_bucket_whatever_the_answer_lengths():
    """Answers of different lengths in one length bucket share one program (answer slots for the
    longest); a pair's extra, unused slots draw nothing that reaches its masks (partitionable
    threefry: the first L uniforms of a longer draw are the same), so each pair's value equals
    the one from a program sized for its own answer (fp32 sums; rtol 1e-6)."""
    from mdu_jax.likelihood import likelihood_batches, row_scores

    cfg, params = tiny_model("llada")
    pairs = [([5, 6, 7, 8, 10], [9]), ([4, 8], [30, 31, 32, 33, 34, 35, 36, 37, 38, 39]), ([20, 21], [3, 4, 5])]
    buckets = (4, 16, 64)
    plan = likelihood_batches([(len(p), len(a)) for p, a in pairs], mc_samples=8, rows_per_forward=R,
                              buckets=buckets)
    assert [(b.length, b.answer_slots, b.padded_rows, len(b.rows)) for b in plan] == [(16, 16, 24, 24)]
    together = loglikelihood(cfg, params, pairs, mc_samples=8, batch_size=4, seed=5, rows_per_forward=R,
                             buckets=buckets)
    # A pair's 8 samples, each three times: 24 rows, as in the shared pass (each row's score is
    # its own), under the config the estimators run, so the pair sized to 16 answer slots reuses
    # that program.
    rows, run_cfg = 24, inference_config(cfg)
    for n, (prompt, answer) in enumerate(pairs):
        T, A = 16, 4 if len(answer) <= 4 else 16
        ids = np.full((rows, T), cfg.pad_token_id, np.int32)
        ids[:, :len(prompt) + len(answer)] = prompt + answer
        attn = (np.arange(T)[None, :] < len(prompt) + len(answer)).astype(np.int32).repeat(rows, axis=0)
        scores = row_scores(run_cfg, False, A, params, ids, attn, np.full(rows, len(prompt), np.int32),
                            np.full(rows, len(answer), np.int32), np.full(rows, n, np.int32),
                            np.arange(rows, dtype=np.int32) % 8, np.uint32(5), True, np.int32(4), np.float32(0.0))
        scores = np.asarray(scores, np.float64).reshape(3, 8)
        np.testing.assert_allclose(together[n], -np.mean(scores[0]), rtol=1e-6)
