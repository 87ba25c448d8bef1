"""The scorers compile one program per shape bucket and reuse it: a second call whose passes
fall in buckets an earlier call compiled compiles nothing (other pairs, other lengths, other
answer lengths within the buckets), for the likelihood estimators, the teacher-forced
statistics and the sampler on a long canvas (with the 'chunked' attention the CPU runs)."""

import numpy as np

from mdu_jax.eval import scoring as S
from mdu_jax.sampling import generate
from tests.sampling.test_generate_programs import count_compiles
from tests.sampling.tiny import tiny_model

def _pairs(rng, n, prompt_len, answer_len):
    return [(list(rng.integers(6, 60, prompt_len)), list(rng.integers(6, 60, answer_len))) for _ in range(n)]


def test_answer_nll_and_teacher_forced_do_not_recompile_a_bucket():
    cfg, params = tiny_model("llada")
    rng = np.random.default_rng(0)
    kw = dict(mc_samples=4, rows_per_forward=8, buckets=(32, 64))
    first = _pairs(rng, 3, 10, 6)
    with count_compiles() as compiles:
        S.answer_avg_nll(cfg, params, first, **kw)
        S.teacher_forced(cfg, params, first, rows_per_forward=8, buckets=(32, 64))
    assert len(compiles) >= 2  # the counter sees the programs being built
    again = _pairs(rng, 5, 14, 3) + _pairs(rng, 1, 7, 9)  # other lengths, the same [8 x 32] passes
    assert {(b.length, b.padded_rows) for b in S.answer_nll_batches(again, **kw)} == \
        {(b.length, b.padded_rows) for b in S.answer_nll_batches(first, **kw)}
    with count_compiles() as compiles:
        for seed in (1, 2):  # the seed is an argument, not part of the program
            S.answer_avg_nll(cfg, params, again, seed=seed, **kw)
        S.teacher_forced(cfg, params, again, rows_per_forward=8, buckets=(32, 64))
    assert compiles == []


def test_generate_on_a_long_canvas_compiles_once_per_bucket():
    cfg, params = tiny_model("llada")
    length = 1024  # a long canvas (several blocks of the chunked attention a CPU runs)
    kw = dict(gen_length=8, steps=4, block_length=4, prompt_buckets=(length,))
    rng = np.random.default_rng(1)
    with count_compiles() as compiles:
        generate(cfg, params, [list(rng.integers(6, 60, 300))], **kw)
    assert len(compiles) >= 1
    with count_compiles() as compiles:
        out = generate(cfg, params, [list(rng.integers(6, 60, 700))], **kw)
    assert compiles == [] and out.tokens.shape == (1, 8)
