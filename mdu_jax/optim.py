"""The Optax chain: global-norm clipping, AdamW with a weight-decay mask, warmup + decay,
gradient accumulation."""

from __future__ import annotations

import jax
import optax

from mdu_jax.config import OptimSection


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


def make_optimizer(cfg: OptimSection, total_steps: int) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """(optimizer, lr schedule). `total_steps` counts optimiser updates (after accumulation)."""
    schedule = learning_rate_schedule(cfg, total_steps)
    tx = optax.chain(
        optax.clip_by_global_norm(cfg.clip_norm) if cfg.clip_norm > 0 else optax.identity(),
        optax.adamw(schedule, b1=cfg.b1, b2=cfg.b2, eps=cfg.eps, weight_decay=cfg.weight_decay, mask=decay_mask),
    )
    if cfg.grad_accum > 1:
        tx = optax.MultiSteps(tx, every_k_schedule=cfg.grad_accum)
    return tx, schedule
