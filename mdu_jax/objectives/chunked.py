"""The objectives evaluated in chunks over the sequence, from hidden states and the LM head.

A full fp32 logits array is large (LLaDA: V = 126,464, so T = 1024 is about 0.5 GB per row and
per model pass), and the backward pass of a loss on it keeps several such arrays alive. Here
the logits never exist whole: `chunked_position_sum` scans over chunks of C positions, forms
``logits = hidden_chunk @ kernel`` inside the chunk, reduces them to per-position values and
adds those up per row. The chunk body is wrapped in `jax.checkpoint`, so the backward pass
recomputes each chunk's logits instead of storing them: peak memory holds O(B C V) logits
instead of O(B T V).

Every function here equals its unchunked twin on ``logits = hidden @ kernel`` up to fp32
summation order (tested at rtol 1e-6). hidden [B, T, D] comes from
``mdu_jax.hidden_states`` and kernel [D, V] from ``mdu_jax.models.transformer.lm_head_kernel``;
the logits are formed in the hidden states' dtype, as ``logits_from_hidden`` does, then
upcast to fp32 inside the losses.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import jax
import jax.numpy as jnp

from mdu_jax import diffusion
from mdu_jax.objectives import baselines
from mdu_jax.objectives.mdu import token_divergence

Array = jax.Array


def project(hidden: Array, kernel: Array) -> Array:
    """logits [..., V] = hidden [..., D] @ kernel [D, V], in the hidden states' dtype."""
    return jnp.einsum("...d,dv->...v", hidden, kernel.astype(hidden.dtype))


def _split_chunks(a: Array, n: int, size: int) -> Array:
    """[B, T, ...] -> [n, B, size, ...], zero-padded at the end of the sequence."""
    pad = n * size - a.shape[1]
    if pad:
        a = jnp.pad(a, [(0, 0), (0, pad)] + [(0, 0)] * (a.ndim - 2))
    a = a.reshape((a.shape[0], n, size) + a.shape[2:])
    return jnp.moveaxis(a, 1, 0)


def chunked_position_sum(fn: Callable[..., Any], chunk_size: int, *arrays: Array) -> Any:
    """Per-row sums over all positions of ``fn(*chunks)``: a pytree of fp32 [B] arrays.

    arrays: each [B, T, ...] (same B and T). fn takes the arrays restricted to C = chunk_size
    consecutive positions ([B, C, ...] each) and returns a pytree of per-position values
    [B, C]; it may close over other arrays (the LM-head kernel) and is differentiable through
    them. The result equals ``tree.map(lambda v: v.sum(1), fn(*arrays))``. A last partial chunk
    is zero-padded and its padded positions are dropped, so fn must stay finite on zero
    inputs. chunk_size <= 0 or >= T: one chunk, no scan.
    """
    if not arrays:
        raise ValueError("chunked_position_sum: needs at least one [B, T, ...] array")
    B, T = arrays[0].shape[:2]
    for i, a in enumerate(arrays):
        if a.shape[:2] != (B, T):
            raise ValueError(f"chunked_position_sum: array {i} has leading shape {a.shape[:2]}, "
                             f"expected {(B, T)}")

    def row_sums(out, valid):
        return jax.tree.map(lambda o: jnp.sum(jnp.where(valid, diffusion.upcast(o), 0.0), axis=1), out)

    if chunk_size <= 0 or chunk_size >= T:
        return row_sums(fn(*arrays), jnp.ones((1, T), bool))

    n = math.ceil(T / chunk_size)
    xs = tuple(_split_chunks(a, n, chunk_size) for a in arrays)
    valid = (jnp.arange(n * chunk_size) < T).reshape(n, 1, chunk_size)
    # Recompute each chunk's logits in the backward pass instead of saving them per chunk.
    body = jax.checkpoint(fn, prevent_cse=False)
    out_shape = jax.eval_shape(fn, *(x[0] for x in xs))
    init = jax.tree.map(lambda s: jnp.zeros((B,), jnp.promote_types(s.dtype, jnp.float32)), out_shape)

    def step(acc, inputs):
        v, *chunk = inputs
        return jax.tree.map(jnp.add, acc, row_sums(body(*chunk), v)), None

    total, _ = jax.lax.scan(step, init, (valid,) + xs)
    return total


# ----------------------------------------------------------------------------- MDLM family

def chunked_sequence_nll(hidden: Array, kernel: Array, target_ids: Array, masked: Array,
                         maskable: Array, t: Array, *, chunk_size: int, weight: str = "scheduler",
                         schedule: str = "linear", cart_p: float = 0.3) -> Array:
    """`diffusion.sequence_nll` of ``hidden @ kernel``, in chunks: fp32 [B].

    Feed it to the ``baselines.*_from_nll`` functions (NPO, SimNPO, DPO / IdkPO) to chunk them.
    """
    masked = masked.astype(bool) & maskable.astype(bool)
    w = diffusion.loss_weights(masked, t, weight=weight, schedule=schedule, cart_p=cart_p)

    def fn(h, y, m, wc):
        return diffusion.mdlm_position_loss(project(h, kernel), y, m, wc)

    return chunked_position_sum(fn, chunk_size, hidden, target_ids, masked, w)


def chunked_mdlm_loss(hidden: Array, kernel: Array, target_ids: Array, masked: Array,
                      maskable: Array, t: Array, *, chunk_size: int, weight: str = "scheduler",
                      schedule: str = "linear", norm: str = "token", cart_p: float = 0.3,
                      rows: Array | None = None, axis_name: str | None = None) -> Array:
    """`diffusion.mdlm_loss` of ``hidden @ kernel`` [B, T, D] x [D, V], in chunks: scalar fp32."""
    s = chunked_sequence_nll(hidden, kernel, target_ids, masked, maskable, t, chunk_size=chunk_size,
                             weight=weight, schedule=schedule, cart_p=cart_p)
    return diffusion.normalize_rows(s, maskable, norm=norm, rows=rows, axis_name=axis_name)


def chunked_me_loss(hidden: Array, kernel: Array, masked: Array, *, chunk_size: int,
                    axis_name: str | None = None) -> Array:
    """`baselines.me_loss` of ``hidden @ kernel``, in chunks: scalar fp32."""
    masked = masked.astype(bool)

    def fn(h, m):
        return jnp.where(m, baselines.token_kl_to_uniform(project(h, kernel)), 0.0)

    total = jnp.sum(chunked_position_sum(fn, chunk_size, hidden, masked))
    count = diffusion.global_sum(jnp.sum(masked.astype(jnp.float32)), axis_name)
    return total / jnp.maximum(1.0, count)


# ----------------------------------------------------------------------------- MDU

def chunked_mdu_loss(hidden_cond: Array, kernel_cond: Array, hidden_anchor: Array,
                     kernel_anchor: Array, masked: Array, *, chunk_size: int,
                     tau: float | Array = 1.0, eta: float | Array = 0.0,
                     divergence: str = "forward", exclude_ids=None, nan_to_num: bool = False,
                     axis_name: str | None = None) -> Array:
    """`objectives.mdu_loss(hidden_cond @ kernel_cond, hidden_anchor @ kernel_anchor, masked)`
    in chunks: scalar fp32. No gradient reaches hidden_anchor or kernel_anchor."""
    masked = masked.astype(bool)
    kernel_anchor = jax.lax.stop_gradient(kernel_anchor)

    def fn(hc, ha, m):
        d = token_divergence(project(hc, kernel_cond), project(jax.lax.stop_gradient(ha), kernel_anchor),
                             tau=tau, eta=eta, divergence=divergence, exclude_ids=exclude_ids,
                             nan_to_num=nan_to_num)
        return jnp.where(m, d, 0.0)

    total = jnp.sum(chunked_position_sum(fn, chunk_size, hidden_cond, hidden_anchor, masked))
    count = diffusion.global_sum(jnp.sum(masked.astype(jnp.float32)), axis_name)
    return total / jnp.maximum(1.0, count)


def chunked_mdu_objective(hidden_cond: Array, kernel_cond: Array, hidden_anchor: Array,
                          kernel_anchor: Array, target_ids: Array, masked: Array, maskable: Array,
                          t: Array, is_forget: Array, *, chunk_size: int,
                          tau: float | Array = 1.0, eta: float | Array = 0.0,
                          divergence: str = "forward", exclude_ids=None, nan_to_num: bool = False,
                          retain_weight: float | Array = 1.0, retain_loss_weight: str = "scheduler",
                          schedule: str = "linear", norm: str = "token", cart_p: float = 0.3,
                          axis_name: str | None = None) -> tuple[Array, dict[str, Array]]:
    """`objectives.mdu_objective` from hidden states, in one chunked pass: (loss, aux).

    Each chunk forms the conditional logits once and uses them for both the forget KL (forget
    rows) and the retain cross entropy (retain rows).
    """
    forget_rows = is_forget.astype(bool)
    masked = masked.astype(bool) & maskable.astype(bool)
    forget_masked = masked & forget_rows[:, None]
    retain_masked = masked & ~forget_rows[:, None]
    w = diffusion.loss_weights(masked, t, weight=retain_loss_weight, schedule=schedule, cart_p=cart_p)
    kernel_anchor = jax.lax.stop_gradient(kernel_anchor)

    def fn(hc, ha, y, fm, rm, wc):
        lc = project(hc, kernel_cond)
        d = token_divergence(lc, project(jax.lax.stop_gradient(ha), kernel_anchor), tau=tau, eta=eta,
                             divergence=divergence, exclude_ids=exclude_ids, nan_to_num=nan_to_num)
        return {"kl": jnp.where(fm, d, 0.0), "nll": diffusion.mdlm_position_loss(lc, y, rm, wc)}

    sums = chunked_position_sum(fn, chunk_size, hidden_cond, hidden_anchor, target_ids,
                                forget_masked, retain_masked, w)
    n_forget = diffusion.global_sum(jnp.sum(forget_masked.astype(jnp.float32)), axis_name)
    forget = jnp.sum(sums["kl"]) / jnp.maximum(1.0, n_forget)
    retain = diffusion.normalize_rows(sums["nll"], maskable, norm=norm, rows=~forget_rows,
                                      axis_name=axis_name)
    aux = {"forget_loss": forget, "retain_loss": retain,
           "forget_tokens": jnp.sum(forget_masked.astype(jnp.float32)),
           "retain_tokens": jnp.sum((maskable.astype(bool) & ~forget_rows[:, None]).astype(jnp.float32))}
    return forget + retain_weight * retain, aux
