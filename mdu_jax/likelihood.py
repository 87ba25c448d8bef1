"""Monte Carlo likelihood of an answer given a prompt, for LLaDA and Dream (reference-mdlm 5).

Two estimators, both on ``[prompt | answer]`` with only answer tokens masked and without
padding effects (pairs are right-padded to a length bucket and padding is masked out of
attention, which leaves every row's logits as if it were alone):

- ``loglikelihood``: LLaDA's estimator (``get_log_likelihood.py``). Samples come in groups of
  ``batch_size`` that share one draw k ~ U{1..L}; row j of a group masks
  ``((k - 1 + round(j L / b)) mod L) + 1`` answer tokens chosen uniformly (stratified mask
  counts) and scores ``(L / count) * sum of masked CE``. The mean over samples is an unbiased
  estimate of the masked-diffusion bound on the **total** answer log-likelihood (returned with
  a plus sign: higher is more likely).
- ``eq14_nll``: MDU's "Eq. 14" evaluation estimator (``compute_eq14_loss``): each sample draws
  l ~ U{1..L} independently, masks l uniform answer tokens and scores ``sum of masked CE / l``.
  The mean is a **per-token** average NLL; MDU's probability is ``exp(-nll)``.

Dream needs nothing special: ``forward`` already right-shifts its logits, so the prediction for
answer position i is read at i, as Dream's own evaluation does after its shift.

Randomness: sample s of pair n draws from ``fold_in(fold_in(key(seed), n), ...)``: the value
of a pair depends on the seed, its index in ``pairs`` and the options, not on batching (nor on
the number of answer slots of the program: jax's partitionable threefry gives the first L
uniforms of a longer draw unchanged).

Batching (``likelihood_batches``): the Monte Carlo rows of all pairs whose ``[prompt | answer]``
falls in one length bucket share one compiled program, with answer slots for the longest answer
of the group, and run ``rows_per_forward`` at a time (fewer for a small group: ``batch_bucket``).
One deliberate difference from LLaDA's code: the stratification offset round(j L / b) rounds
halves up. LLaDA rounds ``k + j L / b`` half to even, which makes the count depend on the parity
of k and its distribution non-uniform when j L / b is a half-integer (a small bias); with a
constant offset every row's count is exactly U{1..L} and the estimator is unbiased.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from mdu_jax.models.config import ModelConfig, inference_config
from mdu_jax.models.transformer import hidden_states, logits_from_hidden
from mdu_jax.sampling.prompts import batch_bucket, bucket_length, pack_rows, shared_buckets

ESTIMATORS = ("llada", "eq14")


def stratified_count(k, j, answer_len, group):
    """Masked-token count of row j (0-based) of a stratified group of ``group`` rows that drew
    k in 1..L: ``((k - 1 + round_half_up(j L / group)) mod L) + 1`` (works on ints and arrays)."""
    offset = (2 * j * answer_len + group) // (2 * group)
    return (k - 1 + offset) % answer_len + 1


def _row_mask(answer_slots: int, stratified: bool, pair_key, sample_id, answer_len, group):
    """(masked answer slots bool [A], weight float32) of one Monte Carlo row.

    stratified (LLaDA): rows of group ``sample_id // group`` share k, the count is
    ``stratified_count`` and the weight L/count. Otherwise (Eq. 14) the count is drawn per
    sample and the weight is 1/count. ``stratified`` is static: only the estimator's own draws
    are traced (the random streams are most of a program's operations, and of its compile time).
    """
    if stratified:
        round_key = jax.random.fold_in(pair_key, sample_id // group)
        k = jax.random.randint(jax.random.fold_in(round_key, 0), (), 1, answer_len + 1)
        count = stratified_count(k, sample_id % group, answer_len, group)
        weight = (answer_len / count).astype(jnp.float32)
        u = jax.random.uniform(jax.random.fold_in(round_key, sample_id % group + 1), (answer_slots,))
    else:
        sample_key = jax.random.fold_in(pair_key, sample_id)
        count = jax.random.randint(jax.random.fold_in(sample_key, 0), (), 1, answer_len + 1)
        weight = (1.0 / count).astype(jnp.float32)
        u = jax.random.uniform(jax.random.fold_in(sample_key, 1), (answer_slots,))
    u = jnp.where(jnp.arange(answer_slots) < answer_len, u, 2.0)
    rank = jnp.argsort(jnp.argsort(u))  # a uniformly random order of the valid slots
    return rank < count, weight


@functools.partial(jax.jit, static_argnames=("cfg", "guided", "answer_slots", "stratified"))
def row_scores(cfg: ModelConfig, guided: bool, answer_slots: int, params, input_ids, attention_mask, prompt_len,
               answer_len, pair_ids, sample_ids, seed, stratified, group, cfg_scale):
    """float32 [R]: one Monte Carlo score per row (compiled once per bucket and ``guided``).

    input_ids int32 [R, T]: ``[prompt | answer | pad]``; attention_mask [R, T]; prompt_len,
    answer_len int32 [R] (answer_len >= 1); pair_ids, sample_ids int32 [R] pick the random
    stream; answer_slots (static) >= max answer_len. ``stratified`` (static bool) selects LLaDA's
    estimator with stratified groups of ``group`` rows (score = L/count * sum of masked-answer
    CE) over Eq. 14 (score = sum of masked-answer CE / count); CE in float32 nats. With
    ``guided`` the logits are ``un + (cfg_scale + 1)(cond - un)``, the unconditional pass having
    every prompt token masked.
    """
    R, T = input_ids.shape
    base = jax.random.key(seed)
    pair_keys = jax.vmap(lambda n: jax.random.fold_in(base, n))(pair_ids)
    row_mask = functools.partial(_row_mask, answer_slots, bool(stratified))
    masked, weight = jax.vmap(row_mask, in_axes=(0, 0, 0, None))(pair_keys, sample_ids, answer_len, group)
    slots = jnp.arange(answer_slots)
    valid = slots[None, :] < answer_len[:, None]
    positions = prompt_len[:, None] + slots[None, :]
    rows = jnp.arange(R)[:, None]
    # Invalid slots point past the end and are dropped, so they never collide with real ones.
    noised = jnp.zeros((R, T), bool).at[rows, jnp.where(valid, positions, T)].set(masked, mode="drop")
    gather_at = jnp.minimum(positions, T - 1)
    targets = jnp.take_along_axis(input_ids, gather_at, axis=1)
    ids = jnp.where(noised, cfg.mask_token_id, input_ids)
    if guided:
        is_prompt = jnp.arange(T)[None, :] < prompt_len[:, None]
        ids = jnp.concatenate([ids, jnp.where(is_prompt, cfg.mask_token_id, ids)])
        attention_mask = jnp.concatenate([attention_mask, attention_mask])
        gather_at = jnp.concatenate([gather_at, gather_at])
    h = hidden_states(cfg, params, ids, attention_mask)
    h = jnp.take_along_axis(h, gather_at[..., None], axis=1)
    logits = logits_from_hidden(cfg, params, h).astype(jnp.float32)
    if guided:
        cond, un = jnp.split(logits, 2)
        logits = un + (cfg_scale + 1.0) * (cond - un)
    logp = jax.nn.log_softmax(logits, axis=-1)
    ce = -jnp.take_along_axis(logp, targets[..., None], axis=-1)[..., 0]
    return weight * jnp.sum(jnp.where(masked & valid, ce, 0.0), axis=-1)


def _as_pairs(cfg: ModelConfig, pairs) -> list[tuple[list[int], list[int]]]:
    out = []
    for n, pair in enumerate(pairs):
        if len(pair) != 2:
            raise ValueError(f"pairs[{n}]: expected (prompt_ids, answer_ids)")
        prompt, answer = ([int(t) for t in np.asarray(x).reshape(-1)] for x in pair)
        for name, seq in (("prompt", prompt), ("answer", answer)):
            if cfg.mask_token_id in seq:
                raise ValueError(f"pairs[{n}] {name} contains the mask token id {cfg.mask_token_id}")
            if any(not 0 <= t < cfg.vocab_size for t in seq):
                raise ValueError(f"pairs[{n}] {name}: a token id is outside [0, vocab_size={cfg.vocab_size})")
        if cfg.family == "dream" and answer and not prompt:
            raise ValueError(f"pairs[{n}]: empty prompt; Dream predicts position i from i-1, so the first "
                             "token cannot be scored (prepend BOS)")
        out.append((prompt, answer))
    return out


@dataclasses.dataclass(frozen=True)
class LikelihoodBatch:
    """One forward pass of ``row_scores``: ``rows`` (pair index, sample index) padded to
    ``padded_rows`` rows of ``length`` tokens, with ``answer_slots`` answer slots."""

    length: int
    answer_slots: int
    padded_rows: int
    rows: tuple[tuple[int, int], ...]


def likelihood_batches(lengths: Sequence[tuple[int, int]], *, mc_samples: int, rows_per_forward: int,
                       buckets: Sequence[int] | None = None) -> list[LikelihoodBatch]:
    """The forward passes that score pairs of these (prompt length, answer length), in order.

    Pairs group by the bucket of prompt + answer length (an empty answer needs no pass), buckets
    less than ``SPLIT_RATIO`` apart sharing one group padded to the longer (``shared_buckets``:
    one compiled program fewer for a few padded positions); a group's answer slots are the
    bucket of its longest answer; its ``n * mc_samples`` rows run
    ``batch_bucket(n * mc_samples, rows_per_forward)`` at a time, the last pass padded.
    """
    if rows_per_forward < 1:
        raise ValueError(f"rows_per_forward: expected >= 1, got {rows_per_forward!r}")
    bucket = {n: bucket_length(p + a, buckets) for n, (p, a) in enumerate(lengths) if a}
    shared = shared_buckets(bucket.values())
    groups: dict[int, list[int]] = {}
    for n, b in bucket.items():
        groups.setdefault(shared[b], []).append(n)
    out = []
    for T, members in sorted(groups.items()):
        A = min(T, max(bucket_length(lengths[n][1], buckets) for n in members))
        rows = [(n, s) for n in members for s in range(mc_samples)]
        R = batch_bucket(len(rows), rows_per_forward)
        out += [LikelihoodBatch(T, A, R, tuple(rows[lo:lo + R])) for lo in range(0, len(rows), R)]
    return out


def _estimate(cfg: ModelConfig, params, pairs, *, estimator: str, mc_samples: int, group: int, seed: int,
              cfg_scale: float, rows_per_forward: int, buckets,
              on_forward: Callable[[int], None] | None = None) -> np.ndarray:
    if estimator not in ESTIMATORS:
        raise ValueError(f"estimator: unknown {estimator!r}; expected one of {ESTIMATORS}")
    if mc_samples < 1:
        raise ValueError(f"mc_samples: expected >= 1, got {mc_samples!r}")
    pairs = _as_pairs(cfg, pairs)
    run_cfg = inference_config(cfg)
    totals = np.zeros(len(pairs), dtype=np.float64)
    # An empty answer needs no pass and scores 0, as in MDU's compute_eq14_loss.
    batches = likelihood_batches([(len(p), len(a)) for p, a in pairs], mc_samples=mc_samples,
                                 rows_per_forward=rows_per_forward, buckets=buckets)
    for b in batches:
        R, T, chunk = b.padded_rows, b.length, list(b.rows)
        padded = chunk + [chunk[0]] * (R - len(chunk))
        ids, attn = pack_rows([pairs[n][0] + pairs[n][1] for n, _ in padded], R, T, cfg.pad_token_id)
        P = np.asarray([len(pairs[n][0]) for n, _ in padded], dtype=np.int32)
        L = np.asarray([len(pairs[n][1]) for n, _ in padded], dtype=np.int32)
        pair_ids = np.asarray([n for n, _ in padded], dtype=np.int32)
        sample_ids = np.asarray([s for _, s in padded], dtype=np.int32)
        scores = np.asarray(row_scores(run_cfg, cfg_scale > 0, b.answer_slots, params, ids, attn, P, L, pair_ids,
                                       sample_ids, np.uint32(seed), estimator == "llada", np.int32(group),
                                       np.float32(cfg_scale)), dtype=np.float64)
        np.add.at(totals, pair_ids[:len(chunk)], scores[:len(chunk)])
        if on_forward is not None:
            on_forward(1)
    return totals / mc_samples


def loglikelihood(cfg: ModelConfig, params, pairs: Sequence, *, mc_samples: int = 128, batch_size: int = 16,
                  seed: int = 0, cfg_scale: float = 0.0, rows_per_forward: int = 32,
                  buckets: Sequence[int] | None = None, on_forward: Callable[[int], None] | None = None) -> np.ndarray:
    """LLaDA's Monte Carlo estimate of log p(answer | prompt), float64 [N], summed over answer
    tokens (natural log; 0 for an empty answer).

    pairs: a sequence of (prompt_ids, answer_ids). ``mc_samples`` samples per pair in stratified
    groups of ``batch_size`` (LLaDA's ``batch_size``; must divide ``mc_samples``). For a
    one-token answer every sample is exact. ``cfg_scale`` > 0 adds classifier-free guidance.
    ``rows_per_forward`` rows, possibly from several pairs, share one compiled forward; pairs
    are padded to ``buckets`` (default ``sampling.prompts.default_buckets``); see
    ``likelihood_batches``. ``on_forward(1)`` is called after each forward pass.
    """
    if batch_size < 1 or mc_samples % batch_size:
        raise ValueError(f"batch_size: {batch_size} must be >= 1 and divide mc_samples={mc_samples} "
                         "(the stratified groups of LLaDA's estimator)")
    nll = _estimate(cfg, params, pairs, estimator="llada", mc_samples=mc_samples, group=batch_size, seed=seed,
                    cfg_scale=cfg_scale, rows_per_forward=rows_per_forward, buckets=buckets, on_forward=on_forward)
    return -nll


def eq14_nll(cfg: ModelConfig, params, pairs: Sequence, *, mc_samples: int = 128, seed: int = 42,
             cfg_scale: float = 0.0, rows_per_forward: int = 32,
             buckets: Sequence[int] | None = None, on_forward: Callable[[int], None] | None = None) -> np.ndarray:
    """MDU's Eq. 14 estimate of the per-token average NLL of each answer, float64 [N] (nats per
    token; MDU's probability is ``exp(-nll)``; 0 for an empty answer).

    pairs: a sequence of (prompt_ids, answer_ids), the answer without a trailing EOT (as MDU
    scores it). ``mc_samples`` independent samples per pair (MDU: 128, seed 42). Options as
    in ``loglikelihood``.
    """
    return _estimate(cfg, params, pairs, estimator="eq14", mc_samples=mc_samples, group=1, seed=seed,
                     cfg_scale=cfg_scale, rows_per_forward=rows_per_forward, buckets=buckets, on_forward=on_forward)


__all__ = ["loglikelihood", "eq14_nll", "row_scores", "stratified_count", "likelihood_batches", "LikelihoodBatch",
           "ESTIMATORS"]
