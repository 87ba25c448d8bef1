"""The decoder block of LLaDA and Dream (the only one in the code base), as an NNX module.

A pre-norm block: ``x + attn(norm(x))``, then ``x + swiglu(norm(x))``, with rotate-half RoPE on
q/k, grouped-query attention and optional q/k/v biases (Dream). The family differences are
fields of the ModelConfig (``rope_in_fp32``, ``qkv_bias``, ``num_kv_heads``); the padding mask
arrives already built (``transformer.attention_mask_4d``).

The block runs one or two row streams through the same weights (``streams``):

- ``__call__(x, ...)``: one stream, optionally with low-rank adapters (``models/lora.py``) added to
  its projections;
- ``paired(x_cond, x_anchor, ...)``: MDU's fused conditional/anchor pass. The conditional stream
  gets base + adapters, the anchor stream the base weights alone and no gradient. Both use each
  base matmul in the same layer iteration, so under FSDP a layer's weights are gathered once
  for both passes, while the backward pass and remat recomputation touch the conditional rows only.
"""

from __future__ import annotations

from typing import Protocol

import jax
import jax.numpy as jnp
from flax import nnx
from jax.ad_checkpoint import checkpoint_name

from mdu_jax.models import layers
from mdu_jax.models.config import ModelConfig
from mdu_jax.models.modules import Projection, RMSNorm
from mdu_jax.models.specs import block_specs

# Each projection's einsum, and how many leading kernel axes it contracts (the input side a LoRA
# adapter's A matrix takes: D for q/k/v/gate/up, (heads, head_dim) for o, F for down).
PROJECTIONS = {"q": ("btd,dnh->btnh", 1), "k": ("btd,dkh->btkh", 1), "v": ("btd,dkh->btkh", 1),
               "o": ("btnh,nhd->btd", 2), "gate": ("btd,df->btf", 1), "up": ("btd,df->btf", 1),
               "down": ("btf,fd->btd", 1)}


class Adapters(Protocol):
    """What a block needs of low-rank adapters: which projections they cover, and each one's update."""

    def __contains__(self, name: str) -> bool: ...

    def __call__(self, name: str, x: jax.Array) -> jax.Array: ...


class DecoderBlock(nnx.Module):
    """One decoder layer: ``attn_norm``, ``q``/``k``/``v``/``o``, ``mlp_norm``, ``gate``/``up``/``down``.

    Parameters as in ``models/specs.py`` without the layer axis; x [B, T, D] in the compute dtype.
    """

    def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
        specs = block_specs(cfg)
        stored, dtype = cfg.weight_dtype, cfg.compute_dtype
        self.attn_norm = RMSNorm(specs["attn_norm"]["scale"], stored, cfg.rms_norm_eps, rngs=rngs)
        self.q = Projection(specs["q"], PROJECTIONS["q"][0], stored, dtype, rngs=rngs)
        self.k = Projection(specs["k"], PROJECTIONS["k"][0], stored, dtype, rngs=rngs)
        self.v = Projection(specs["v"], PROJECTIONS["v"][0], stored, dtype, rngs=rngs)
        self.o = Projection(specs["o"], PROJECTIONS["o"][0], stored, dtype, rngs=rngs)
        self.mlp_norm = RMSNorm(specs["mlp_norm"]["scale"], stored, cfg.rms_norm_eps, rngs=rngs)
        self.gate = Projection(specs["gate"], PROJECTIONS["gate"][0], stored, dtype, rngs=rngs)
        self.up = Projection(specs["up"], PROJECTIONS["up"][0], stored, dtype, rngs=rngs)
        self.down = Projection(specs["down"], PROJECTIONS["down"][0], stored, dtype, rngs=rngs)
        self.rope_in_fp32 = cfg.rope_in_fp32
        self.attention_impl = cfg.attention_impl

    def __call__(self, x: jax.Array, mask, cos, sin, adapters: Adapters | None = None) -> jax.Array:
        """x [B, T, D] -> [B, T, D]; `mask` boolean [B, 1, T|1, T] or None, cos/sin [B|1, T, h]."""
        return self.streams((x,), mask, cos, sin, adapters)[0]

    def paired(self, x_cond: jax.Array, x_anchor: jax.Array, mask, cos, sin,
               adapters: Adapters | None = None) -> tuple[jax.Array, jax.Array]:
        """(conditional stream through base + adapters, anchor stream through the base alone, no
        gradient), both [B, T, D]: the fused MDU pass (module docstring)."""
        return self.streams((x_cond, x_anchor), mask, cos, sin, adapters)

    def streams(self, xs: tuple[jax.Array, ...], mask, cos, sin, adapters: Adapters | None = None,
                rows: jax.Array | None = None) -> tuple:
        """The block over one stream, or over (conditional, anchor): see `__call__` and `paired`.

        ``rows`` (int [B, R]): only these positions' outputs, [B, R, D] per stream; keys and
        values still come from every position. Each output row is computed as in the full
        block (the same per-row arithmetic), so it equals the full block's row bit for bit on
        backends whose kernels do not mix rows (XLA on CPU)."""

        def each(fn, *streams):
            return tuple(fn(*args) for args in zip(*streams))

        def project(name, hs):
            proj = getattr(self, name)
            ys = [proj.matmul(hs[0])]
            if len(hs) == 2:
                # A matmul of its own so that the backward pass (and a remat recomputation) never
                # touches the anchor rows; XLA may still merge the two dots that share the weight.
                ys.append(jax.lax.stop_gradient(proj.matmul(jax.lax.stop_gradient(hs[1]))))
            if adapters is not None and name in adapters:
                ys[0] = ys[0] + adapters(name, hs[0])
            return tuple(proj.add_bias(y) for y in ys)

        h = each(self.attn_norm, xs)
        k, v = project("k", h), project("v", h)
        k = each(lambda a: layers.apply_rope(a, cos, sin, self.rope_in_fp32), k)
        if rows is not None:
            xs, h = each(lambda a: _take_rows(a, rows), xs), each(lambda a: _take_rows(a, rows), h)
            cos, sin = (_take_rows(jnp.broadcast_to(t, (rows.shape[0],) + t.shape[1:]), rows) for t in (cos, sin))
            if mask is not None and mask.shape[2] != 1:  # query-masked (Dream): this subset's query rows
                mask = jnp.take_along_axis(mask, rows[:, None, :, None], axis=2)
        q = project("q", h)
        q = each(lambda a: layers.apply_rope(a, cos, sin, self.rope_in_fp32), q)
        attn = each(lambda a, b, c: layers.attention(a, b, c, mask, self.attention_impl), q, k, v)
        xs = each(lambda x, a: x + checkpoint_name(a, "attn_out"), xs, project("o", attn))
        h = each(self.mlp_norm, xs)
        gate, up = project("gate", h), project("up", h)
        mlp = project("down", each(lambda g, u: jax.nn.silu(g) * u, gate, up))
        return each(lambda x, m: x + checkpoint_name(m, "mlp_out"), xs, mlp)


def _take_rows(a: jax.Array, rows: jax.Array) -> jax.Array:
    """a [B, T, ...] at positions ``rows`` int [B, R]: [B, R, ...]."""
    return jnp.take_along_axis(a, rows.reshape(rows.shape + (1,) * (a.ndim - 2)), axis=1)
