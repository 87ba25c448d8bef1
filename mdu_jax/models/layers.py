"""Building blocks shared by LLaDA and Dream: RMSNorm, RoPE, attention, SwiGLU.

All functions are pure; shapes use B batch, T sequence, D hidden, H query heads, K kv heads,
h head_dim, F mlp width.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

# A large finite negative for masked attention logits: finite so that a fully masked query row
# (a Dream pad position) yields a finite (uniform) softmax instead of NaN.
MASK_VALUE = -0.7 * float(jnp.finfo(jnp.float32).max)


def rms_norm(x: jax.Array, scale: jax.Array, eps: float) -> jax.Array:
    """x / sqrt(mean(x^2) + eps) * scale over the last axis.

    Statistics in float32; the normalised value is cast back to x's dtype *before* the scale is
    applied, as both reference models do (LLaDA RMSLayerNorm, Qwen2RMSNorm).
    """
    x32 = x.astype(jnp.float32)
    normed = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + eps)
    return normed.astype(x.dtype) * scale.astype(x.dtype)


def rope_tables(positions: jax.Array, head_dim: int, theta: float) -> tuple[jax.Array, jax.Array]:
    """cos, sin of shape [..., T, h] (float32) for half-split ("rotate_half") RoPE.

    inv_freq[j] = theta^(-2j/h), angles = positions x inv_freq, duplicated to width h.
    """
    inv_freq = 1.0 / (theta ** (jnp.arange(0, head_dim, 2, dtype=jnp.float32) / head_dim))
    angles = positions.astype(jnp.float32)[..., None] * inv_freq
    angles = jnp.concatenate([angles, angles], axis=-1)
    return jnp.cos(angles), jnp.sin(angles)


def apply_rope(x: jax.Array, cos: jax.Array, sin: jax.Array, in_fp32: bool) -> jax.Array:
    """Rotates x [B, T, N, h] by the tables cos/sin [B or 1, T, h].

    rotate_half(x) = concat(-x2, x1) with x1, x2 the two halves of the head dimension (the
    NeoX/HF layout, not interleaved pairs). `in_fp32` rotates in float32 and casts back (LLaDA's
    ``rope_full_precision``); otherwise the tables are cast to x's dtype first (Dream/Qwen2).
    """
    dtype = x.dtype
    compute = jnp.float32 if in_fp32 else dtype
    xc = x.astype(compute)
    cos = cos.astype(compute)[:, :, None, :]
    sin = sin.astype(compute)[:, :, None, :]
    half = x.shape[-1] // 2
    rotated = jnp.concatenate([-xc[..., half:], xc[..., :half]], axis=-1)
    return (xc * cos + rotated * sin).astype(dtype)


def attention(q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array | None,
              implementation: str = "xla") -> jax.Array:
    """Bidirectional scaled dot-product attention with grouped-query support.

    q [B, T, H, h], k/v [B, T, K, h] with H % K == 0 (query head n uses kv head n // (H/K)),
    mask: boolean, broadcastable to [B, H, T, T] (True = attend) or None. Softmax in float32.
    Returns [B, T, H, h] in q's dtype. `implementation` is 'xla', 'cudnn' (GPU flash attention,
    bf16/fp16 only) or 'auto' (cuDNN where the backend and dtype allow it, else XLA).
    """
    scale = 1.0 / (q.shape[-1] ** 0.5)
    impl = implementation
    if impl == "auto":
        impl = "cudnn" if (jax.default_backend() == "gpu" and q.dtype in (jnp.bfloat16, jnp.float16)) else "xla"
    if impl == "cudnn":
        return jax.nn.dot_product_attention(q, k, v, mask=mask, scale=scale, is_causal=False,
                                            implementation="cudnn")
    # The XLA path, written out so that the masked value is a finite constant and GQA does not
    # materialise repeated keys.
    B, T, H, h = q.shape
    K = k.shape[2]
    G = H // K
    qg = q.reshape(B, T, K, G, h)
    logits = jnp.einsum("btkgh,bskh->bkgts", qg, k, preferred_element_type=jnp.float32) * scale
    if mask is not None:
        mask = jnp.broadcast_to(mask, (mask.shape[0], H, T, T)).reshape(mask.shape[0], K, G, T, T)
        logits = jnp.where(mask, logits, MASK_VALUE)
    probs = jax.nn.softmax(logits, axis=-1).astype(v.dtype)
    out = jnp.einsum("bkgts,bskh->btkgh", probs, v)
    return out.reshape(B, T, H, h)


def swiglu(x: jax.Array, gate: jax.Array, up: jax.Array, down: jax.Array) -> jax.Array:
    """down(silu(x @ gate) * (x @ up)): x [B, T, D], gate/up [D, F], down [F, D]."""
    g = jnp.einsum("btd,df->btf", x, gate)
    u = jnp.einsum("btd,df->btf", x, up)
    return jnp.einsum("btf,fd->btd", jax.nn.silu(g) * u, down)
