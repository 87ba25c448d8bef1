"""The Optax chain: global-norm clipping, AdamW with a weight-decay mask, warmup + decay,
gradient accumulation (mean or, as HF's Trainer for Dream, sum of micro-batches), and optional float32 master weights for low-precision params."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from mdu_jax.training.config import OptimSection


def learning_rate_schedule(cfg: OptimSection, total_steps: int) -> optax.Schedule:
    """Linear warmup over ``warmup_ratio * total_steps`` then cosine / linear decay to 0 (or constant)."""
    total_steps = max(int(total_steps), 1)
    warmup = int(round(cfg.warmup_ratio * total_steps))
    decay_steps = max(total_steps - warmup, 1)
    if cfg.schedule == "cosine":
        decay = optax.cosine_decay_schedule(cfg.lr, decay_steps)
    elif cfg.schedule == "linear":
        decay = optax.linear_schedule(cfg.lr, 0.0, decay_steps)
    else:
        decay = optax.constant_schedule(cfg.lr)
    if warmup == 0:
        return decay
    # HF's warmup starts at 0 at step 0 and reaches lr at step `warmup`.
    return optax.join_schedules([optax.linear_schedule(0.0, cfg.lr, warmup), decay], [warmup])


def decay_mask(params):
    """Weight decay on matrices only (not on norm scales or biases), the usual LLM recipe."""
    return jax.tree_util.tree_map_with_path(
        lambda path, x: x.ndim >= 2 and path[-1].key not in ("scale", "bias"), params)


class MasterState(NamedTuple):
    """State of `with_master_weights`: the float32 master params and the inner optimiser's state."""

    master: Any
    inner: Any


def with_master_weights(inner: optax.GradientTransformation, dtype=jnp.float32) -> optax.GradientTransformation:
    """Runs `inner` on a `dtype` (float32) master copy of low-precision (bf16) params.

    The state holds ``master = params.astype(dtype)`` and `inner`'s state built on it (so Adam's
    moments and any accumulated gradients are float32 too). Each update casts the gradients to
    `dtype`, applies `inner` to the master, and returns the updates (float32) that move the
    params to the master rounded to their own dtype: ``params + updates == round(master)``.
    Updates smaller than a bf16 ulp therefore accumulate in the master instead of being lost.
    Memory: `dtype` bytes per parameter more than `inner` alone on float32 params.
    """

    def init(params):
        master = jax.tree.map(lambda p: jnp.asarray(p, dtype), params)
        return MasterState(master, inner.init(master))

    def update(grads, state, params=None):
        if params is None:
            raise ValueError("with_master_weights: update needs the current params")
        grads = jax.tree.map(lambda g: g.astype(dtype), grads)
        updates, inner_state = inner.update(grads, state.inner, state.master)
        master = optax.apply_updates(state.master, updates)
        # round(master) - params is exact in float32 for nearby values, so optax.apply_updates
        # (which adds in float32 and casts back) lands exactly on round(master).
        out = jax.tree.map(lambda m, p: m.astype(p.dtype).astype(dtype) - p.astype(dtype), master, params)
        return out, MasterState(master, inner_state)

    return optax.GradientTransformation(init, update)


def make_optimizer(cfg: OptimSection, total_steps: int) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """(optimizer, lr schedule). `total_steps` counts optimiser updates (after accumulation)."""
    schedule = learning_rate_schedule(cfg, total_steps)
    tx = optax.chain(
        optax.clip_by_global_norm(cfg.clip_norm) if cfg.clip_norm > 0 else optax.identity(),
        optax.adamw(schedule, b1=cfg.b1, b2=cfg.b2, eps=cfg.eps, weight_decay=cfg.weight_decay, mask=decay_mask),
    )
    if cfg.grad_accum > 1:
        if cfg.accumulation == "sum":
            # MultiSteps hands the inner chain the mean of the micro-batch gradients: scaling by
            # grad_accum first turns it into their sum, before clipping sees it.
            tx = optax.chain(optax.scale(float(cfg.grad_accum)), tx)
        tx = optax.MultiSteps(tx, every_k_schedule=cfg.grad_accum)
    if cfg.master_weights:
        # Outside MultiSteps, so gradients are also accumulated in float32.
        tx = with_master_weights(tx)
    return tx, schedule
