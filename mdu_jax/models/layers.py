"""Building blocks shared by LLaDA and Dream: RMSNorm, RoPE, attention, SwiGLU.

All functions are pure; shapes use B batch, T sequence, D hidden, H query heads, K kv heads,
h head_dim, F mlp width.
"""

from __future__ import annotations

import os

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


# --------------------------------------------------------------------------- attention
# Environment switch for running the TPU splash kernel elsewhere (CPU/GPU) in Pallas interpret
# mode. Interpret mode runs the kernel body with ordinary XLA ops: same semantics, very slow, so it
# is for tests only and never chosen silently. Read at trace time.
SPLASH_INTERPRET_ENV = "MDU_JAX_SPLASH_INTERPRET"
# The kernel computes kv blocks in multiples of the TPU lane width, and its segment-id masking
# needs kv blocks of whole lanes: the sequence length must be a multiple of this.
SPLASH_LANES = 128
_SPLASH_BLOCKS = (512, 256, 128)


def splash_unsupported_reason(seq_len: int, mask_shape: tuple[int, ...] | None = None) -> str | None:
    """Why the splash kernel cannot run self-attention of length `seq_len`, or None if it can.

    `mask_shape` (the boolean mask given to `attention`) must not vary over heads: the kernel's
    padding mask is expressed as per-sequence segment ids.
    """
    if seq_len % SPLASH_LANES:
        return (f"attention_impl='splash' needs the sequence length T to be a multiple of "
                f"{SPLASH_LANES} (the kernel's kv block width), got T={seq_len}")
    if mask_shape is not None:
        shape = (1,) * (4 - len(mask_shape)) + tuple(mask_shape)
        if len(shape) != 4 or shape[1] != 1:
            return (f"attention_impl='splash' supports padding masks shared by all heads "
                    f"([B, 1, T|1, T]), got a mask of shape {tuple(mask_shape)}")
    return None


def splash_block_size(seq_len: int) -> int:
    """The q/kv tile of the splash kernel: the largest of 512, 256, 128 that divides seq_len."""
    for block in _SPLASH_BLOCKS:
        if seq_len % block == 0:
            return block
    raise ValueError(splash_unsupported_reason(seq_len) or f"no splash block divides T={seq_len}")


def _splash_interpret() -> bool:
    """False on TPU; True off-TPU only when the opt-in environment variable is set, else raises."""
    backend = jax.default_backend()
    if backend == "tpu":
        return False
    if os.environ.get(SPLASH_INTERPRET_ENV, "").strip().lower() in ("1", "true", "yes", "on"):
        return True
    raise ValueError(f"attention_impl='splash' is a TPU kernel and the backend is {backend!r}; use "
                     f"'xla'/'auto', or set {SPLASH_INTERPRET_ENV}=1 to run it in Pallas interpret "
                     "mode (same kernel semantics, very slow; meant for tests)")


def _splash_segment_ids(mask: jax.Array, batch: int, seq_len: int) -> tuple[jax.Array, jax.Array]:
    """int32 q and kv segment ids [B, T] that reproduce a padding mask inside the splash kernel.

    The kernel lets query i see key j iff q_ids[i] == kv_ids[j]. With valid keys 0, padded keys
    1, queries that see some key 0 and queries that see none 2, this is exactly
    ``q_valid[i] & kv_valid[j]``, i.e. any mask that is an outer product of a query and a key
    vector: LLaDA's keys-only mask (every query valid) and Dream's queries-and-keys mask both are.
    A row that sees no key is fully masked in both paths and gets a uniform softmax over all T
    keys (same finite mask value), so even padded positions agree with the XLA path.
    """
    m = mask.astype(bool)
    m = m.reshape((1,) * (4 - m.ndim) + m.shape)[:, 0]  # [B|1, T|1, T|1]
    m = jnp.broadcast_to(m, (m.shape[0], seq_len, seq_len))
    kv_valid = jnp.any(m, axis=-2)
    q_valid = jnp.any(m, axis=-1)
    kv_ids = jnp.where(kv_valid, 0, 1).astype(jnp.int32)
    q_ids = jnp.where(q_valid, 0, 2).astype(jnp.int32)
    return (jnp.broadcast_to(q_ids, (batch, seq_len)), jnp.broadcast_to(kv_ids, (batch, seq_len)))


def splash_attention(q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array | None,
                     interpret: bool | None = None) -> jax.Array:
    """`attention` computed by the Pallas TPU splash kernel (bidirectional, grouped-query).

    q [B, T, H, h], k/v [B, T, K, h], mask None or a boolean padding mask broadcastable to
    [B, 1, T, T] that is an outer product of query and key validity (see `_splash_segment_ids`);
    a mask that is not (e.g. causal or per-head) is NOT representable and would be applied wrongly.
    T must be a multiple of 128 (ValueError otherwise). Returns [B, T, H, h] in q's dtype.

    The kernel takes one sequence [H, T, h] with K kv heads natively (query head n uses kv head
    n // (H/K)), so it is vmapped over B; its custom VJP gives gradients. q is scaled by
    1/sqrt(h) in float32 and cast back before the kernel (the XLA path scales the float32
    logits instead: identical in fp32 up to rounding, one extra rounding of q in bf16). The
    kernel also keeps the probabilities in float32 for the value product, where the XLA path
    casts them to v's dtype. `interpret` None means: compiled on TPU, interpret mode elsewhere
    only with ``MDU_JAX_SPLASH_INTERPRET=1``.
    """
    from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_kernel as sk
    from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_mask as sm

    B, T, H, h = q.shape
    reason = splash_unsupported_reason(T, None if mask is None else mask.shape)
    if reason:
        raise ValueError(reason)
    if interpret is None:
        interpret = _splash_interpret()
    block = splash_block_size(T)
    blocks = sk.BlockSizes(block_q=block, block_kv=block, block_kv_compute=block,
                           block_q_dkv=block, block_kv_dkv=block, block_kv_dkv_compute=block,
                           block_q_dq=block, block_kv_dq=block)
    full = sm.MultiHeadMask([sm.FullMask((T, T)) for _ in range(H)])
    kernel = sk.make_splash_mha(full, block_sizes=blocks, head_shards=1, q_seq_shards=1,
                                mask_value=MASK_VALUE, interpret=interpret)
    scale = 1.0 / (h ** 0.5)
    qh = (q.astype(jnp.float32) * scale).astype(q.dtype).transpose(0, 2, 1, 3)
    kh = k.transpose(0, 2, 1, 3)
    vh = v.transpose(0, 2, 1, 3)
    if mask is None:
        out = jax.vmap(lambda a, b, c: kernel(a, b, c))(qh, kh, vh)
    else:
        q_ids, kv_ids = _splash_segment_ids(mask, B, T)
        out = jax.vmap(lambda a, b, c, qi, ki: kernel(a, b, c, segment_ids=sk.SegmentIds(q=qi, kv=ki)))(
            qh, kh, vh, q_ids, kv_ids)
    return out.transpose(0, 2, 1, 3).astype(q.dtype)


# 'chunked' attention: queries per map item (fewer when there are fewer queries).
ATTENTION_CHUNK = 128


def chunked_attention(q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array | None,
                      chunk: int = ATTENTION_CHUNK) -> jax.Array:
    """`attention`'s XLA arithmetic computed one (batch row, query head, block of `chunk` queries)
    at a time under ``lax.map``: scores [chunk, S] per item instead of [B, H, T, S] at once.

    Shapes and mask as in `attention` (any T; blocks of min(`chunk`, T) queries, the last one
    padded). Why: XLA on a CPU streams the whole float32 score tensor through memory several
    times (scale, mask, max, exp, sum, divide, cast); at T = 3072 with 4 heads that is 150 MB
    per layer per pass, while one item's 1.5 MB stays in cache. Measured on the 2-core CPU, per
    layer (d=64, 4 heads): ~10x faster at [1, 3072], ~5x at [64, 384], ~3x at [4, 128] and
    ~2x at [64, 64]; no size measured was slower. Each row is computed alone, so a row's value
    does not depend on its batch; it differs from the one-shot path only in float32 summation
    order (a few ulp).
    """
    B, T, H, h = q.shape
    S, K = k.shape[1], k.shape[2]
    G = H // K
    scale = 1.0 / (h ** 0.5)
    if mask is None:
        mask = jnp.ones((B, 1, 1, S), bool)
    mask = jnp.broadcast_to(mask, (B, 1, mask.shape[2], S))[:, 0]  # [B, T|1, S]
    rows_masked = mask.shape[1] != 1
    chunk = min(chunk, T)
    n = -(-T // chunk)
    if n * chunk != T:  # padding queries (their outputs are dropped below)
        q = jnp.pad(q, ((0, 0), (0, n * chunk - T), (0, 0), (0, 0)))
        if rows_masked:
            mask = jnp.pad(mask, ((0, 0), (0, n * chunk - T), (0, 0)), constant_values=True)
    items = jnp.stack(jnp.meshgrid(jnp.arange(B), jnp.arange(H), jnp.arange(n), indexing="ij"), -1).reshape(-1, 3)

    def one(item):
        b, head, i = item[0], item[1], item[2]
        qi = jax.lax.dynamic_slice(q, (b, i * chunk, head, 0), (1, chunk, 1, h))[0, :, 0]
        kv = head // G
        ki = jax.lax.dynamic_slice(k, (b, 0, kv, 0), (1, S, 1, h))[0, :, 0]
        vi = jax.lax.dynamic_slice(v, (b, 0, kv, 0), (1, S, 1, h))[0, :, 0]
        m = jax.lax.dynamic_slice(mask, (b, i * chunk if rows_masked else 0, 0),
                                  (1, chunk if rows_masked else 1, S))[0]
        logits = jnp.einsum("th,sh->ts", qi, ki, preferred_element_type=jnp.float32) * scale
        probs = jax.nn.softmax(jnp.where(m, logits, MASK_VALUE), axis=-1).astype(v.dtype)
        return jnp.einsum("ts,sh->th", probs, vi)

    out = jax.lax.map(one, items)  # [B * H * n, chunk, h]
    return out.reshape(B, H, n, chunk, h).transpose(0, 2, 3, 1, 4).reshape(B, n * chunk, H, h)[:, :T]


def attention(q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array | None,
              implementation: str = "xla") -> jax.Array:
    """Bidirectional scaled dot-product attention with grouped-query support.

    q [B, T, H, h], k/v [B, S, K, h] with H % K == 0 (query head n uses kv head n // (H/K));
    S = T, or the queries are a subset of the S positions (``DecoderBlock.streams``' ``rows``).
    mask: boolean, broadcastable to [B, H, T, S] (True = attend) or None. Softmax in float32.
    Returns [B, T, H, h] in q's dtype. `implementation`:

    - 'xla': the reference path below.
    - 'cudnn': GPU flash attention (bf16/fp16 only).
    - 'splash': the Pallas TPU splash kernel (`splash_attention`; padding masks only, T a
      multiple of 128). Off TPU it raises unless ``MDU_JAX_SPLASH_INTERPRET=1`` is set, which runs
      it in Pallas interpret mode (slow; for tests).
    - 'chunked': the XLA path's arithmetic one (row, head, query chunk) at a time
      (`chunked_attention`): the [T, S] score matrix never exists whole, which on a CPU makes
      every size measured faster; the same values up to float32 summation order.
    - 'auto': cuDNN on GPU for bf16/fp16, splash on TPU when the shape and mask are supported
      and head_dim is a multiple of 128 (the lane width; LLaDA-8B and Dream-7B have 128), else XLA.
    """
    scale = 1.0 / (q.shape[-1] ** 0.5)
    impl = implementation
    if impl == "auto":
        backend = jax.default_backend()
        if backend == "gpu" and q.dtype in (jnp.bfloat16, jnp.float16):
            impl = "cudnn"
        elif (backend == "tpu" and q.shape[-1] % SPLASH_LANES == 0
              and splash_unsupported_reason(q.shape[1], None if mask is None else mask.shape) is None):
            impl = "splash"
        else:
            impl = "xla"
    if impl == "splash" and q.shape[1] != k.shape[1]:
        impl = "xla"  # the splash kernel takes square attention only
    if impl == "splash":
        return splash_attention(q, k, v, mask)
    if impl == "cudnn":
        return jax.nn.dot_product_attention(q, k, v, mask=mask, scale=scale, is_causal=False,
                                            implementation="cudnn")
    if impl == "chunked":
        return chunked_attention(q, k, v, mask)
    # The XLA path, written out so that the masked value is a finite constant and GQA does not
    # materialise repeated keys.
    B, T, H, h = q.shape
    S, K = k.shape[1], k.shape[2]
    G = H // K
    qg = q.reshape(B, T, K, G, h)
    logits = jnp.einsum("btkgh,bskh->bkgts", qg, k, preferred_element_type=jnp.float32) * scale
    if mask is not None:
        mask = jnp.broadcast_to(mask, (mask.shape[0], H, T, S)).reshape(mask.shape[0], K, G, T, S)
        logits = jnp.where(mask, logits, MASK_VALUE)
    probs = jax.nn.softmax(logits, axis=-1).astype(v.dtype)
    out = jnp.einsum("bkgts,bskh->btkgh", probs, v)
    return out.reshape(B, T, H, h)


def swiglu(x: jax.Array, gate: jax.Array, up: jax.Array, down: jax.Array) -> jax.Array:
    """down(silu(x @ gate) * (x @ up)): x [B, T, D], gate/up [D, F], down [F, D]."""
    g = jnp.einsum("btd,df->btf", x, gate)
    u = jnp.einsum("btd,df->btf", x, up)
    return jnp.einsum("btf,fd->btd", jax.nn.silu(g) * u, down)
