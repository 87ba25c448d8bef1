"""The bidirectional decoder stack shared by LLaDA and Dream, as pure functions.

``forward(cfg, params, input_ids, attention_mask)`` returns logits [B, T, V] where
``logits[:, i]`` predicts token i for both families. For Dream the network's raw logit at i
predicts token i+1 (Qwen alignment), so the hidden states are shifted right by one before the
LM head: position 0 then holds a copy of raw position 0 and is never a valid target.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from jax.ad_checkpoint import checkpoint_name

from mdu_jax.models import layers
from mdu_jax.models.config import ModelConfig

Params = dict[str, Any]

_REMAT_POLICIES = {
    "full": jax.checkpoint_policies.nothing_saveable,
    "dots": jax.checkpoint_policies.checkpoint_dots,
    "dots_no_batch": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
    "save_attn_mlp_out": jax.checkpoint_policies.save_only_these_names("attn_out", "mlp_out"),
}


def attention_mask_4d(cfg: ModelConfig, attention_mask: jax.Array | None) -> jax.Array | None:
    """Boolean [B, 1, T|1, T] attention mask from a [B, T] padding mask (1 = token, 0 = pad).

    LLaDA masks keys only (pad queries still see every valid key); Dream masks queries and keys,
    so a pad row sees nothing (the attention then returns a finite, meaningless value there).
    """
    if attention_mask is None:
        return None
    valid = attention_mask.astype(bool)
    keys = valid[:, None, None, :]
    if cfg.masks_queries:
        return keys & valid[:, None, :, None]
    return keys


def default_positions(input_ids: jax.Array) -> jax.Array:
    """Position ids [B, T] = 0..T-1, what both PyTorch models use when none are passed.

    Padding does not shift them (LLaDA has no position argument at all). Dream's sampler passes
    cumsum(mask) - 1 explicitly for left-padded prompts.
    """
    B, T = input_ids.shape
    return jnp.broadcast_to(jnp.arange(T, dtype=jnp.int32), (B, T))


def decoder_layer(cfg: ModelConfig, p: Params, x: jax.Array, mask, cos, sin) -> jax.Array:
    """One pre-norm block: x + attn(norm(x)); x + swiglu(norm(x)). x [B, T, D]."""
    dt = cfg.compute_dtype
    h = layers.rms_norm(x, p["attn_norm"]["scale"], cfg.rms_norm_eps)
    q = jnp.einsum("btd,dnh->btnh", h, p["q"]["kernel"].astype(dt))
    k = jnp.einsum("btd,dkh->btkh", h, p["k"]["kernel"].astype(dt))
    v = jnp.einsum("btd,dkh->btkh", h, p["v"]["kernel"].astype(dt))
    if cfg.qkv_bias:
        q = q + p["q"]["bias"].astype(dt)
        k = k + p["k"]["bias"].astype(dt)
        v = v + p["v"]["bias"].astype(dt)
    q = layers.apply_rope(q, cos, sin, cfg.rope_in_fp32)
    k = layers.apply_rope(k, cos, sin, cfg.rope_in_fp32)
    attn = layers.attention(q, k, v, mask, cfg.attention_impl)
    attn_out = jnp.einsum("btnh,nhd->btd", attn, p["o"]["kernel"].astype(dt))
    x = x + checkpoint_name(attn_out, "attn_out")
    h = layers.rms_norm(x, p["mlp_norm"]["scale"], cfg.rms_norm_eps)
    mlp_out = layers.swiglu(h, p["gate"]["kernel"].astype(dt), p["up"]["kernel"].astype(dt),
                            p["down"]["kernel"].astype(dt))
    return x + checkpoint_name(mlp_out, "mlp_out")


def _maybe_remat(cfg: ModelConfig, fn):
    if cfg.remat_policy == "none":
        return fn
    return jax.checkpoint(fn, policy=_REMAT_POLICIES[cfg.remat_policy], prevent_cse=not cfg.scan_layers)


def hidden_states(cfg: ModelConfig, params: Params, input_ids: jax.Array,
                  attention_mask: jax.Array | None = None,
                  position_ids: jax.Array | None = None) -> jax.Array:
    """Final-norm hidden states [B, T, D] in the compute dtype, aligned so that position i
    predicts token i (Dream's right shift already applied)."""
    if input_ids.ndim != 2:
        raise ValueError(f"input_ids: expected shape [B, T], got {input_ids.shape}")
    if attention_mask is not None and attention_mask.shape != input_ids.shape:
        raise ValueError(f"attention_mask: expected shape {input_ids.shape}, got {attention_mask.shape}")
    dt = cfg.compute_dtype
    x = jnp.take(params["embed"]["embedding"], input_ids, axis=0).astype(dt)
    if position_ids is None:
        position_ids = default_positions(input_ids)
    cos, sin = layers.rope_tables(position_ids, cfg.head_dim, cfg.rope_theta)
    mask = attention_mask_4d(cfg, attention_mask)

    def block(carry, layer_params):
        return decoder_layer(cfg, layer_params, carry, mask, cos, sin), None

    block = _maybe_remat(cfg, block)
    if cfg.scan_layers:
        x, _ = jax.lax.scan(block, x, params["layers"])
    else:
        for i in range(cfg.num_layers):
            x, _ = block(x, jax.tree.map(lambda a: a[i], params["layers"]))
    x = layers.rms_norm(x, params["final_norm"]["scale"], cfg.rms_norm_eps)
    if cfg.shifts_logits:
        x = jnp.concatenate([x[:, :1], x[:, :-1]], axis=1)
    return x


def lm_head_kernel(cfg: ModelConfig, params: Params) -> jax.Array:
    """The output matrix [D, V] (the transposed embedding when tied)."""
    if cfg.tie_word_embeddings:
        return params["embed"]["embedding"].T
    return params["lm_head"]["kernel"]


def logits_from_hidden(cfg: ModelConfig, params: Params, hidden: jax.Array) -> jax.Array:
    """hidden [..., D] -> logits [..., V] in the compute dtype (upcast before any softmax)."""
    return jnp.einsum("...d,dv->...v", hidden, lm_head_kernel(cfg, params).astype(cfg.compute_dtype))


def forward(cfg: ModelConfig, params: Params, input_ids: jax.Array,
            attention_mask: jax.Array | None = None,
            position_ids: jax.Array | None = None) -> jax.Array:
    """Logits [B, T, V] (compute dtype) with ``logits[:, i]`` predicting token i, both families.

    input_ids: int [B, T]. attention_mask: optional [B, T] (1 = token, 0 = padding); an all-ones
    mask is the same as None. position_ids: optional [B, T]; default 0..T-1 for both families,
    as in the PyTorch models. For Dream, ``logits[:, 0]`` is a copy of the raw first logit and must
    never be used as a prediction (the first token of a sequence is always given).
    """
    return logits_from_hidden(cfg, params, hidden_states(cfg, params, input_ids, attention_mask, position_ids))
