"""Masked diffusion: noise schedules, the forward masking process and the MDLM loss.

Conventions (reference-mdlm.md section 3, dllm ``MDLMTrainer``):

- A schedule gives alpha(t), the probability that a token is still clean at time t in [0, 1];
  a maskable token is masked with probability ``p_mask = 1 - alpha(t)``, the same for every
  token of a row. The ELBO weight is ``w(t) = -alpha'(t) / (1 - alpha(t) + 1e-6)`` (1/t for the
  linear schedule).
- ``maskable`` [B, T] bool marks the positions that may be masked and are scored (the response;
  prompt and padding are False). They are the only positions ever masked.
- Every loss returns fp32. Log-softmax and cross-entropy are computed in fp32 whatever the
  logits dtype. Denominators are clamped at 1, so a batch without masked or maskable tokens
  gives 0, not NaN.
- Randomness: ``key`` is one PRNG key, or one key per row (shape [B], e.g. from ``row_keys``)
  so that a row's draws do not depend on how the batch is split over devices.
- ``axis_name``: inside ``pmap`` / ``shard_map``, pass the batch axis name. The denominators
  (token and row counts) are then summed over it, so each device returns its share of the
  global loss and the shares add up to the loss of the global batch.
"""

from __future__ import annotations

import math
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

Array = jax.Array

WEIGHT_EPS = 1e-6  # dllm adds it to 1 - alpha(t) in the loss weight


class Schedule(NamedTuple):
    """1 - alpha(t) (the mask probability) and alpha'(t), elementwise on float arrays.

    The mask probability is the primary function: forming 1 - alpha(t) from alpha(t) would
    lose ~1e-5 relative precision in fp32 at t = 1e-3, where the 1/t weight is largest.
    """

    mask_prob: Callable[[Array], Array]
    alpha_prime: Callable[[Array], Array]


SCHEDULES: dict[str, Schedule] = {
    # alpha(t) = 1 - t: p_mask = t, w(t) = 1 / t.
    "linear": Schedule(mask_prob=lambda t: t, alpha_prime=lambda t: -jnp.ones_like(t)),
    # alpha(t) = 1 - cos(pi/2 (1 - t)), as dllm's CosineAlphaScheduler, written with
    # cos(pi/2 (1 - t)) = sin(pi/2 t), which stays accurate in fp32 for small t.
    "cosine": Schedule(mask_prob=lambda t: jnp.sin(0.5 * math.pi * t),
                       alpha_prime=lambda t: -0.5 * math.pi * jnp.cos(0.5 * math.pi * t)),
}

WEIGHTS = ("scheduler", "uniform", "cart")
NORMS = ("token", "sequence", "batch")


def upcast(x: Array) -> Array:
    """x as a float of at least fp32 precision (bf16 -> fp32; fp64 stays fp64)."""
    x = jnp.asarray(x)
    return x.astype(jnp.promote_types(x.dtype, jnp.float32))


def get_schedule(name: str) -> Schedule:
    """The schedule called `name` ('linear' or 'cosine')."""
    try:
        return SCHEDULES[name]
    except KeyError:
        raise ValueError(f"schedule: unknown {name!r}; expected one of {sorted(SCHEDULES)}") from None


def alpha(t: Array, schedule: str = "linear") -> Array:
    """alpha(t) [same shape as t], fp32 (or fp64): probability that a token is unmasked at time t."""
    return 1.0 - mask_probability(t, schedule)


def alpha_prime(t: Array, schedule: str = "linear") -> Array:
    """d alpha / dt at t, fp32 (or fp64)."""
    return get_schedule(schedule).alpha_prime(upcast(t))


def mask_probability(t: Array, schedule: str = "linear") -> Array:
    """p_mask(t) = 1 - alpha(t), fp32 (or fp64)."""
    return get_schedule(schedule).mask_prob(upcast(t))


def loss_weight(t: Array, schedule: str = "linear") -> Array:
    """The ELBO weight w(t) = -alpha'(t) / (1 - alpha(t) + 1e-6), fp32 (1/(t + 1e-6) when linear)."""
    return -alpha_prime(t, schedule) / (mask_probability(t, schedule) + WEIGHT_EPS)


# ----------------------------------------------------------------------------- randomness

def row_keys(key: Array, batch_size: int, offset: Array | int = 0) -> Array:
    """One key per row, ``fold_in(key, offset + row)`` [batch_size]: a row's randomness then
    depends only on its global index (offset = index of the first local row)."""
    return jax.vmap(lambda i: jax.random.fold_in(key, offset + i))(jnp.arange(batch_size))


def _is_row_keys(key: Array) -> bool:
    if jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key):
        return key.ndim == 1
    return key.ndim == 2  # raw uint32 keys: [2] is one key, [B, 2] one per row


def _uniform(key: Array, shape: tuple[int, ...]) -> Array:
    """U[0, 1) fp32 of `shape`; with per-row keys row b is drawn from key[b] alone."""
    if _is_row_keys(key):
        if key.shape[0] != shape[0]:
            raise ValueError(f"key: {key.shape[0]} row keys for {shape[0]} rows")
        return jax.vmap(lambda k: jax.random.uniform(k, shape[1:], jnp.float32))(key)
    return jax.random.uniform(key, shape, jnp.float32)


def check_t_range(t_range) -> tuple[float, float]:
    """(lo, hi) of a diffusion-time band, checked: two numbers with 0 < lo < hi <= 1."""
    if len(t_range) != 2:
        raise ValueError(f"t_range: expected [lo, hi], got {list(t_range)}")
    lo, hi = (float(x) for x in t_range)
    if not 0.0 < lo < hi <= 1.0:
        raise ValueError(f"t_range: expected 0 < lo < hi <= 1, got [{lo}, {hi}]")
    return lo, hi


def sample_times(key: Array, batch_size: int, eps: float = 1e-3, t_range=None,
                 band_rows: Array | None = None) -> Array:
    """Diffusion times t = eps + (1 - eps) U, U ~ U[0, 1), one per row: fp32 [batch_size].

    With `t_range` (lo, hi) (the timestep ablation), rows draw t = lo + (hi - lo) U from the same
    U instead: all rows, or only those where `band_rows` (bool [batch_size]) is True. With the
    linear schedule t is each token's masking probability, so the band is a band of masking ratios.
    """
    u = _uniform(key, (batch_size,))
    t = eps + (1.0 - eps) * u
    if t_range is None:
        return t
    lo, hi = check_t_range(t_range)
    banded = lo + (hi - lo) * u
    return banded if band_rows is None else jnp.where(band_rows, banded, t)


def forward_mask(key: Array, input_ids: Array, maskable: Array, t: Array, mask_id: int,
                 schedule: str = "linear") -> tuple[Array, Array]:
    """The forward process at time t: (noised_ids [B, T] int, masked [B, T] bool).

    Each maskable token of row b is masked independently with probability 1 - alpha(t[b]) and
    replaced by `mask_id`; non-maskable positions (prompt, padding) are never masked.
    """
    p = mask_probability(t, schedule)
    masked = (_uniform(key, input_ids.shape) < p[:, None]) & maskable.astype(bool)
    return jnp.where(masked, jnp.asarray(mask_id, input_ids.dtype), input_ids), masked


def noise_batch(key: Array, input_ids: Array, maskable: Array, mask_id: int, *, eps: float = 1e-3,
                schedule: str = "linear", t_range=None, band_rows: Array | None = None
                ) -> tuple[Array, Array, Array]:
    """sample_times then forward_mask: (noised_ids, masked, t). With per-row keys, each row's
    time and mask come from its own key only. `t_range`, `band_rows`: see ``sample_times``."""
    if _is_row_keys(key):
        pairs = jax.vmap(lambda k: jax.random.split(k))(key)
        k_t, k_m = pairs[:, 0], pairs[:, 1]
    else:
        k_t, k_m = jax.random.split(key)
    t = sample_times(k_t, input_ids.shape[0], eps, t_range, band_rows)
    noised, masked = forward_mask(k_m, input_ids, maskable, t, mask_id, schedule)
    return noised, masked, t


# ----------------------------------------------------------------------------- the MDLM loss

def token_nll(logits: Array, target_ids: Array) -> Array:
    """Cross entropy -log softmax(logits)[target] at every position: fp32 [B, T].

    logits [B, T, V] (any float dtype, upcast to fp32); target_ids int [B, T].
    """
    logits = upcast(logits)
    picked = jnp.take_along_axis(logits, target_ids[..., None].astype(jnp.int32), axis=-1)[..., 0]
    return jax.nn.logsumexp(logits, axis=-1) - picked


def cart_weights(masked: Array, p: float = 0.3) -> Array:
    """Dream's CART weights [B, T] fp32 (dllm ``cart_weight``).

    For a masked position i: w_i = sum over unmasked j != i of 0.5 p (1 - p)^(|i - j| - 1);
    0 at unmasked positions. "Unmasked" is every position not in `masked`, prompt and padding
    included. No 1/t factor.
    """
    T = masked.shape[-1]
    idx = jnp.arange(T)
    dist = jnp.abs(idx[:, None] - idx[None, :])
    geo = jnp.where(dist == 0, 0.0,
                    0.5 * p * jnp.power(1.0 - p, jnp.maximum(dist - 1, 0).astype(jnp.float32)))
    unmasked = (~masked.astype(bool)).astype(jnp.float32)
    w = jnp.einsum("bj,ij->bi", unmasked, geo, precision=jax.lax.Precision.HIGHEST)
    return w * masked.astype(jnp.float32)


def loss_weights(masked: Array, t: Array, *, weight: str = "scheduler", schedule: str = "linear",
                 cart_p: float = 0.3) -> Array:
    """Per-position loss weights [B, T] fp32: w(t_b) ('scheduler'), 1 ('uniform') or CART ('cart')."""
    if weight == "scheduler":
        return jnp.broadcast_to(loss_weight(t, schedule)[:, None], masked.shape)
    if weight == "uniform":
        return jnp.ones(masked.shape, jnp.float32)
    if weight == "cart":
        return cart_weights(masked, cart_p)
    raise ValueError(f"weight: unknown {weight!r}; expected one of {list(WEIGHTS)}")


def mdlm_position_loss(logits: Array, target_ids: Array, masked: Array, weights: Array) -> Array:
    """weights * CE(logits, target) at masked positions, 0 elsewhere: fp32 [B, T].

    The summand of the MDLM loss; a chunk of positions can be evaluated on its own.
    """
    nll = token_nll(logits, target_ids)
    return jnp.where(masked.astype(bool), weights * nll, 0.0)


def global_sum(x: Array, axis_name: str | None) -> Array:
    """x summed over the named batch axis (pmap / shard_map), or x itself without one."""
    return x if axis_name is None else jax.lax.psum(x, axis_name)


def _row_filter(rows: Array | None, batch_size: int) -> Array:
    return jnp.ones((batch_size,), jnp.float32) if rows is None else rows.astype(jnp.float32)


def normalize_rows(row_sums: Array, maskable: Array, *, norm: str = "token", rows: Array | None = None,
                   axis_name: str | None = None) -> Array:
    """The MDLM normalisation of per-row loss sums [B] -> scalar fp32 (reference-mdlm 3 step 7).

    Over the selected rows (`rows` [B] bool, default all), with N_b = # maskable tokens of row
    b and b = # selected rows:
    'token' sum_b S_b / max(1, sum_b N_b); 'sequence' sum_b S_b / max(1, N_b) / max(1, b);
    'batch' sum_b S_b / max(1, b). Counts are global over `axis_name`.
    """
    r = _row_filter(rows, row_sums.shape[0])
    n_tok = jnp.sum(maskable.astype(jnp.float32), axis=-1)
    s = upcast(row_sums) * r
    if norm == "token":
        return jnp.sum(s) / jnp.maximum(1.0, global_sum(jnp.sum(n_tok * r), axis_name))
    n_rows = jnp.maximum(1.0, global_sum(jnp.sum(r), axis_name))
    if norm == "sequence":
        return jnp.sum(s / jnp.maximum(1.0, n_tok)) / n_rows
    if norm == "batch":
        return jnp.sum(s) / n_rows
    raise ValueError(f"norm: unknown {norm!r}; expected one of {list(NORMS)}")


def mdlm_loss(logits: Array, target_ids: Array, masked: Array, maskable: Array, t: Array, *,
              weight: str = "scheduler", schedule: str = "linear", norm: str = "token",
              cart_p: float = 0.3, rows: Array | None = None, axis_name: str | None = None) -> Array:
    """The masked diffusion (SFT / retain) loss, scalar fp32.

    L = normalise_b( sum_i w_i * CE(logits[b, i], target_ids[b, i]) * masked[b, i] )

    logits [B, T, V] (any float dtype; aligned so that position i predicts token i);
    target_ids int [B, T] (the clean tokens); masked, maskable bool [B, T]; t fp32 [B].
    w_i: `weight` = 'scheduler' (w(t_b) of `schedule`, 1/(t+1e-6) when linear), 'uniform' (1) or
    'cart' (Dream's CART weights with geometric p = `cart_p`). Normalisation `norm` as in
    `normalize_rows`: 'token' divides by the number of *maskable* tokens (dllm default).
    With scheduler weights and norm='batch', its expectation over t and masks is the negative
    ELBO of the responses, per row.
    """
    masked = masked.astype(bool) & maskable.astype(bool)
    w = loss_weights(masked, t, weight=weight, schedule=schedule, cart_p=cart_p)
    row_sums = jnp.sum(mdlm_position_loss(logits, target_ids, masked, w), axis=-1)
    return normalize_rows(row_sums, maskable, norm=norm, rows=rows, axis_name=axis_name)


def sequence_nll(logits: Array, target_ids: Array, masked: Array, maskable: Array, t: Array, *,
                 weight: str = "scheduler", schedule: str = "linear", cart_p: float = 0.3) -> Array:
    """Per-row weighted NLL S_b = sum_i w_i CE_i masked_i: fp32 [B].

    With scheduler weights, an unbiased one-sample estimate of the row's negative ELBO
    (an upper bound on -log p(response | prompt)); the sequence log-likelihood proxy of the
    preference-style baselines.
    """
    masked = masked.astype(bool) & maskable.astype(bool)
    w = loss_weights(masked, t, weight=weight, schedule=schedule, cart_p=cart_p)
    return jnp.sum(mdlm_position_loss(logits, target_ids, masked, w), axis=-1)
