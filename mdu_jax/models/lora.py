"""Low-rank adapters (LoRA) on the decoder's projections, and the forward passes that use them.

A targeted projection kernel W (``layers/<name>/kernel``, stacked over layers) becomes
``W + (alpha / r) A B`` with A [L, in..., r] and B [L, r, out...]: for q/k/v/gate/up the input
is the hidden size D, for ``o`` the (heads, head_dim) pair and for ``down`` the mlp width F.
B starts at zero, so a fresh adapter leaves the model unchanged.

With LoRA the trainable params are the adapters only and the base weights are frozen: the
train loss's anchor pass is the base model itself (no second copy of the model), and the
conditional pass is base + adapters, computed as ``x W + s (x A) B`` so that no merged
weight matrix and no dense weight gradient are ever formed.

`paired_hidden_states` runs the conditional and anchor passes in one layer stack (one scan): both
passes use each layer's base weights in the same iteration, so under FSDP each layer is
all-gathered once instead of once per pass (and XLA may merge the two matmuls that share a
weight), while the backward pass and any remat recomputation touch the conditional rows only.

The layer below mirrors ``mdu_jax.models.transformer.decoder_layer`` op for op (tests check that
zero adapters give exactly the model core's hidden states for both families).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Sequence

import jax
import jax.numpy as jnp

from mdu_jax.models import layers
from mdu_jax.models.config import ModelConfig
from mdu_jax.models.params import param_specs
from mdu_jax.models.transformer import _maybe_remat, attention_mask_4d, default_positions

TARGETS = ("q", "k", "v", "o", "gate", "up", "down")
# Each projection as the model core writes it, and the number of leading kernel dims it contracts.
_EINSUM = {"q": ("btd,dnh->btnh", 1), "k": ("btd,dkh->btkh", 1), "v": ("btd,dkh->btkh", 1),
           "o": ("btnh,nhd->btd", 2), "gate": ("btd,df->btf", 1), "up": ("btd,df->btf", 1),
           "down": ("btf,fd->btd", 1)}
RANK_AXIS = "lora_rank"  # logical axis of the rank dimension (no sharding rule: replicated)


@dataclasses.dataclass(frozen=True)
class LoraSpec:
    """Rank r, scale numerator alpha (the update is ``alpha / r * A B``) and target projections."""

    rank: int
    alpha: float = 16.0
    targets: tuple[str, ...] = TARGETS

    def __post_init__(self):
        object.__setattr__(self, "targets", tuple(self.targets))
        if not isinstance(self.rank, int) or self.rank < 1:
            raise ValueError(f"lora rank: expected a positive integer, got {self.rank!r}")
        unknown = [t for t in self.targets if t not in TARGETS]
        if unknown or not self.targets or len(set(self.targets)) != len(self.targets):
            raise ValueError(f"lora targets: expected distinct names from {list(TARGETS)}, got {list(self.targets)}")

    @property
    def scale(self) -> float:
        return self.alpha / self.rank


def _kernel_spec(cfg: ModelConfig, name: str):
    return param_specs(cfg)["layers"][name]["kernel"]


def adapter_shapes(cfg: ModelConfig, spec: LoraSpec) -> dict[str, dict[str, tuple[int, ...]]]:
    """{target: {"a": (L, *in, r), "b": (L, r, *out)}} for the kernels of `cfg`."""
    out = {}
    for name in spec.targets:
        shape = _kernel_spec(cfg, name).shape
        n_in = _EINSUM[name][1]
        out[name] = {"a": shape[:1 + n_in] + (spec.rank,), "b": (shape[0], spec.rank) + shape[1 + n_in:]}
    return out


def adapter_axes(cfg: ModelConfig, spec: LoraSpec) -> dict[str, dict[str, tuple[str, ...]]]:
    """Logical axis names of the adapters (the kernel's own, plus `RANK_AXIS`), for sharding rules."""
    out = {}
    for name in spec.targets:
        axes = _kernel_spec(cfg, name).axes
        n_in = _EINSUM[name][1]
        out[name] = {"a": axes[:1 + n_in] + (RANK_AXIS,), "b": (axes[0], RANK_AXIS) + axes[1 + n_in:]}
    return out


def init_adapters(cfg: ModelConfig, spec: LoraSpec, key: jax.Array, dtype=jnp.float32) -> dict[str, Any]:
    """Fresh adapters: A ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in)) (PEFT's default), B = 0."""
    shapes = adapter_shapes(cfg, spec)
    keys = jax.random.split(key, len(spec.targets))
    out = {}
    for k, name in zip(keys, spec.targets):
        a_shape = shapes[name]["a"]
        bound = 1.0 / math.sqrt(math.prod(a_shape[1:-1]))
        out[name] = {"a": jax.random.uniform(k, a_shape, jnp.float32, -bound, bound).astype(dtype),
                     "b": jnp.zeros(shapes[name]["b"], dtype)}
    return out


def abstract_adapters(cfg: ModelConfig, spec: LoraSpec, dtype=jnp.float32) -> dict[str, Any]:
    """ShapeDtypeStructs of `init_adapters`' result, without allocating it."""
    return jax.tree.map(lambda s: jax.ShapeDtypeStruct(s, dtype), adapter_shapes(cfg, spec),
                        is_leaf=lambda x: isinstance(x, tuple))


def delta(a: jax.Array, b: jax.Array, scale: float) -> jax.Array:
    """The dense weight update ``scale * A B`` of one target: a [L, *in, r], b [L, r, *out] ->
    [L, *in, *out] in float32."""
    ins, outs = "abcd"[: a.ndim - 2], "efgh"[: b.ndim - 2]
    return scale * jnp.einsum(f"l{ins}r,lr{outs}->l{ins}{outs}", a.astype(jnp.float32), b.astype(jnp.float32))


def merge(cfg: ModelConfig, base: dict[str, Any], adapters: dict[str, Any], spec: LoraSpec,
          dtype=None) -> dict[str, Any]:
    """Full params with every targeted kernel replaced by ``W + scale A B`` (summed in float32,
    stored in `dtype`, default the base kernel's dtype): what an export or evaluation uses."""
    merged = jax.tree.map(lambda x: x, base)  # new containers, same leaves
    for name in spec.targets:
        w = base["layers"][name]["kernel"]
        new = w.astype(jnp.float32) + delta(adapters[name]["a"], adapters[name]["b"], spec.scale)
        merged["layers"][name]["kernel"] = new.astype(dtype or w.dtype)
    return merged


# ---------------------------------------------------------------------------------------------
# Forward passes


def _layer(cfg: ModelConfig, scale: float, p, ad, xs: tuple, mask, cos, sin) -> tuple:
    """One decoder block over one or two row streams: ``xs[0]`` gets base + adapters, an optional
    ``xs[1]`` (the anchor stream, no gradient) the base weights only."""
    dt = cfg.compute_dtype

    def proj(name, hs):
        eq = _EINSUM[name][0]
        w = p[name]["kernel"].astype(dt)
        ys = [jnp.einsum(eq, hs[0], w)]
        if len(hs) == 2:
            # Separate from the conditional matmul so that the backward pass (and a remat
            # recomputation) never touches the anchor rows; XLA may still merge the two dots.
            ys.append(jax.lax.stop_gradient(jnp.einsum(eq, jax.lax.stop_gradient(hs[1]), w)))
        if name in ad:
            n_in = _EINSUM[name][1]
            low = jnp.tensordot(hs[0], ad[name]["a"].astype(dt), axes=n_in)
            ys[0] = ys[0] + (scale * jnp.tensordot(low, ad[name]["b"].astype(dt), axes=1)).astype(dt)
        return ys

    def each(fn, *streams):
        return [fn(*args) for args in zip(*streams)]

    h = each(lambda x: layers.rms_norm(x, p["attn_norm"]["scale"], cfg.rms_norm_eps), xs)
    q, k, v = proj("q", h), proj("k", h), proj("v", h)
    if cfg.qkv_bias:
        q = each(lambda a: a + p["q"]["bias"].astype(dt), q)
        k = each(lambda a: a + p["k"]["bias"].astype(dt), k)
        v = each(lambda a: a + p["v"]["bias"].astype(dt), v)
    q = each(lambda a: layers.apply_rope(a, cos, sin, cfg.rope_in_fp32), q)
    k = each(lambda a: layers.apply_rope(a, cos, sin, cfg.rope_in_fp32), k)
    attn = each(lambda a, b, c: layers.attention(a, b, c, mask, cfg.attention_impl), q, k, v)
    xs = each(lambda x, a: x + a, xs, proj("o", attn))
    h = each(lambda x: layers.rms_norm(x, p["mlp_norm"]["scale"], cfg.rms_norm_eps), xs)
    g, u = proj("gate", h), proj("up", h)
    return tuple(each(lambda x, d: x + d, xs, proj("down", each(lambda a, b: jax.nn.silu(a) * b, g, u))))


def _stack(cfg: ModelConfig, base, adapters, spec: LoraSpec, ids: Sequence[jax.Array],
           attention_mask) -> tuple:
    for i in ids:
        if i.ndim != 2 or i.shape != ids[0].shape:
            raise ValueError(f"input_ids: expected [B, T] arrays of one shape, got {[a.shape for a in ids]}")
    if attention_mask is not None and attention_mask.shape != ids[0].shape:
        raise ValueError(f"attention_mask: expected shape {ids[0].shape}, got {attention_mask.shape}")
    dt = cfg.compute_dtype
    xs = tuple(jnp.take(base["embed"]["embedding"], i, axis=0).astype(dt) for i in ids)
    if len(xs) == 2:
        xs = (xs[0], jax.lax.stop_gradient(xs[1]))
    cos, sin = layers.rope_tables(default_positions(ids[0]), cfg.head_dim, cfg.rope_theta)
    mask = attention_mask_4d(cfg, attention_mask)

    def block(carry, layer):
        p, ad = layer
        return _layer(cfg, spec.scale, p, ad, carry, mask, cos, sin), None

    block = _maybe_remat(cfg, block)
    if cfg.scan_layers:
        xs, _ = jax.lax.scan(block, xs, (base["layers"], adapters))
    else:
        for i in range(cfg.num_layers):
            xs, _ = block(xs, jax.tree.map(lambda a: a[i], (base["layers"], adapters)))
    out = []
    for x in xs:
        x = layers.rms_norm(x, base["final_norm"]["scale"], cfg.rms_norm_eps)
        if cfg.shifts_logits:
            x = jnp.concatenate([x[:, :1], x[:, :-1]], axis=1)
        out.append(x)
    return tuple(out)


def hidden_states(cfg: ModelConfig, base, adapters, spec: LoraSpec, input_ids: jax.Array,
                  attention_mask: jax.Array | None = None) -> jax.Array:
    """Final hidden states [B, T, D] (compute dtype) of base + adapters; the same alignment and
    masking as ``mdu_jax.models.transformer.hidden_states``. Differentiable in `adapters`
    (and in `base`, though training treats it as frozen)."""
    return _stack(cfg, base, adapters, spec, (input_ids,), attention_mask)[0]


def paired_hidden_states(cfg: ModelConfig, base, adapters, spec: LoraSpec, cond_ids: jax.Array,
                         anchor_ids: jax.Array, attention_mask: jax.Array | None = None):
    """(hidden states of base + adapters on `cond_ids`, stop-gradient hidden states of the base
    alone on `anchor_ids`), both [B, T, D], from one layer stack. Equals ``(hidden_states(...cond_ids), transformer.hidden_states(base,
    anchor_ids))`` with gradients flowing to `adapters` through the first only. Both passes
    share `attention_mask`."""
    return _stack(cfg, base, adapters, spec, (cond_ids, anchor_ids), attention_mask)
