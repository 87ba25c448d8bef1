"""Pieces every denoising step shares: the model call on the generation slots, top-k selection
with a defined tie-break, and the per-row random streams.

Randomness: row r of a call with ``seed`` draws from ``fold_in(key(seed), prompt_index)``, and
step i from ``fold_in(row_key, i)``; token noise uses ``fold_in(step_key, 0)`` and position
noise (random remasking, Dream 'origin', ``alg_temp``) ``fold_in(step_key, 1)``. A prompt's
output therefore depends on the seed and its index in the caller's list, not on how prompts
were batched or padded. All draws are over the ``gen_length`` slots, never over the canvas.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from mdu_jax.models.config import ModelConfig
from mdu_jax.models.transformer import hidden_states, logits_from_hidden

TOKEN_STREAM = 0
POSITION_STREAM = 1


def row_keys(seed: jax.Array, row_ids: jax.Array) -> jax.Array:
    """Typed PRNG keys [B]: ``fold_in(key(seed), row_id)``."""
    base = jax.random.key(seed)
    return jax.vmap(lambda r: jax.random.fold_in(base, r))(row_ids)


def step_keys(keys: jax.Array, step: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(token keys [B], position keys [B]) of denoising step ``step`` for rows with ``keys``."""
    k = jax.vmap(lambda key: jax.random.fold_in(key, step))(keys)
    return (jax.vmap(lambda key: jax.random.fold_in(key, TOKEN_STREAM))(k),
            jax.vmap(lambda key: jax.random.fold_in(key, POSITION_STREAM))(k))


def write_slots(canvas: jax.Array, gen_index: jax.Array, gen: jax.Array) -> jax.Array:
    """canvas [B, T] with ``gen`` [B, G] written at the positions ``gen_index`` [B, G]."""
    rows = jnp.arange(canvas.shape[0])[:, None]
    return canvas.at[rows, gen_index].set(gen)


def slot_logits(cfg: ModelConfig, params, gen: jax.Array, input_ids: jax.Array, uncond_ids: jax.Array,
                attention_mask: jax.Array, position_ids: jax.Array, gen_index: jax.Array,
                cfg_scale: float, read_index: jax.Array | None = None) -> jax.Array:
    """float32 logits [B, R, V] predicting the canvas positions ``read_index`` [B, R] (default
    ``gen_index``: every generation slot, R = G) from the current canvas, whose slots
    ``gen_index`` hold ``gen``.

    The full canvas goes through the network but the last layer, which (like the LM head)
    computes only the positions read. With
    ``cfg_scale > 0`` the prompt-masked canvas ``uncond_ids`` runs in the same batch and the
    logits are ``un + (cfg_scale + 1) * (cond - un)`` (LLaDA's classifier-free guidance).
    """
    ids = write_slots(input_ids, gen_index, gen)
    index = gen_index if read_index is None else read_index
    if cfg_scale > 0:
        ids = jnp.concatenate([ids, write_slots(uncond_ids, gen_index, gen)])
        attention_mask = jnp.concatenate([attention_mask, attention_mask])
        position_ids = jnp.concatenate([position_ids, position_ids])
        index = jnp.concatenate([index, index])
    h = hidden_states(cfg, params, ids, attention_mask, position_ids, read_at=index)
    logits = logits_from_hidden(cfg, params, h).astype(jnp.float32)
    if cfg_scale > 0:
        cond, un = jnp.split(logits, 2)
        logits = un + (cfg_scale + 1.0) * (cond - un)
    return logits


def suppress(logits: jax.Array, token_ids: tuple[int, ...]) -> jax.Array:
    """logits with the given vocabulary entries set to -inf (no-op for an empty tuple)."""
    if not token_ids:
        return logits
    return logits.at[..., jnp.asarray(token_ids)].set(-jnp.inf)


def select_top(scores: jax.Array, eligible: jax.Array, count: jax.Array) -> jax.Array:
    """bool [B, G]: per row, the ``count`` eligible slots with the highest scores.

    Ties go to the lowest slot index (a stable sort), which the NumPy references repeat with
    ``np.argsort(-scores, kind='stable')``. Never selects an ineligible slot.
    """
    scores = jnp.where(eligible, scores, -jnp.inf)
    order = jnp.argsort(-scores, axis=-1, stable=True)
    rank = jnp.argsort(order, axis=-1)
    return (rank < count) & eligible
