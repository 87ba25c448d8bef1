"""Low-rank adapters (LoRA) on the decoder's projections, as an NNX wrapper around ``Transformer``.

A targeted projection kernel W (``layers/<name>/kernel``, stacked over layers) becomes
``W + (alpha / r) A B`` with A [L, in..., r] and B [L, r, out...]: for q/k/v/gate/up the input
is the hidden size D, for ``o`` the (heads, head_dim) pair and for ``down`` the mlp width F, so the
adapters keep the kernels' head shapes. A and B are ``nnx.LoRAParam``s (a kind of ``nnx.Param``)
carrying the kernel's logical axes plus ``lora_rank``; B starts at zero, so a fresh adapter leaves
the model unchanged.

``LoraTransformer(base, spec, rngs=...)`` holds ``base`` (the Transformer) and ``adapters``
(``LoraAdapters`` stacked over layers like the blocks). The trainable set is a filter:
``nnx.LoRAParam`` (``TRAINABLE``) selects the adapters, ``FROZEN`` the base weights. The forward
passes are the base model's own, with the adapters handed to its one decoder block: the
conditional pass computes ``x W + s (x A) B`` (no merged weight, no dense weight gradient) and
``paired_hidden_states`` runs the conditional and anchor passes in one scan
(``DecoderBlock.paired``).

The functional API mirrors ``models/transformer.py``: adapters are the pure dict
``{target: {"a", "b"}}`` (what a LoRA run's train state and checkpoints hold), the base its
params dict.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from mdu_jax.models.block import PROJECTIONS
from mdu_jax.models.config import ModelConfig
from mdu_jax.models.specs import ParamSpec, block_specs
from mdu_jax.models.transformer import Transformer, stacked, state_from_params

TARGETS = tuple(PROJECTIONS)
RANK_AXIS = "lora_rank"  # logical axis of the rank dimension (no sharding rule: replicated)
TRAINABLE = nnx.LoRAParam
FROZEN = nnx.All(nnx.Param, nnx.Not(nnx.LoRAParam))


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


class LoraAdapter(nnx.Module):
    """The adapter of one projection: ``a`` [*in, r] ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in)) (PEFT's
    default), ``b`` [r, *out] = 0; its update to the projection's output is ``scale (x a) b``."""

    def __init__(self, kernel: ParamSpec, n_in: int, rank: int, scale: float, param_dtype, dtype, *,
                 rngs: nnx.Rngs):
        ins, outs = kernel.shape[:n_in], kernel.shape[n_in:]
        bound = 1.0 / math.sqrt(math.prod(ins))
        a = jax.random.uniform(rngs.params(), ins + (rank,), jnp.float32, -bound, bound).astype(param_dtype)
        self.a = nnx.LoRAParam(a, out_sharding=kernel.axes[:n_in] + (RANK_AXIS,), eager_sharding=False)
        self.b = nnx.LoRAParam(jnp.zeros((rank,) + outs, param_dtype), out_sharding=(RANK_AXIS,) + kernel.axes[n_in:],
                               eager_sharding=False)
        self.n_in, self.scale, self.dtype = n_in, scale, dtype

    def __call__(self, x: jax.Array) -> jax.Array:
        """x [B, T, *in] -> the update [B, T, *out] in the compute dtype."""
        low = jnp.tensordot(x, self.a[...].astype(self.dtype), axes=self.n_in)
        return (self.scale * jnp.tensordot(low, self.b[...].astype(self.dtype), axes=1)).astype(self.dtype)


class LoraAdapters(nnx.Module):
    """One ``LoraAdapter`` per target projection of a decoder block, as attributes named by target."""

    def __init__(self, cfg: ModelConfig, spec: LoraSpec, param_dtype, *, rngs: nnx.Rngs):
        specs = block_specs(cfg)
        for name in spec.targets:
            setattr(self, name, LoraAdapter(specs[name]["kernel"], PROJECTIONS[name][1], spec.rank, spec.scale,
                                            param_dtype, cfg.compute_dtype, rngs=rngs))
        self.targets = spec.targets

    def __contains__(self, name: str) -> bool:
        return name in self.targets

    def __call__(self, name: str, x: jax.Array) -> jax.Array:
        return getattr(self, name)(x)


def stacked_adapters(cfg: ModelConfig, spec: LoraSpec, param_dtype, rngs: nnx.Rngs) -> LoraAdapters:
    """``LoraAdapters`` for every layer, stacked like the blocks (leading ``layers`` axis)."""
    return stacked(lambda r: LoraAdapters(cfg, spec, param_dtype, rngs=r), cfg.num_layers, rngs)


class LoraTransformer(nnx.Module):
    """A ``Transformer`` (``base``) with LoRA ``adapters`` on the projections `spec` targets.

    Train the adapters only: ``nnx.Optimizer(model, tx, wrt=TRAINABLE)``, or
    ``nnx.split(model, TRAINABLE, FROZEN)``. Adapters are stored in `param_dtype` (float32 by default).
    """

    def __init__(self, base: Transformer, spec: LoraSpec, *, rngs: nnx.Rngs, param_dtype=jnp.float32):
        self.base = base
        self.adapters = stacked_adapters(base.cfg, spec, param_dtype, rngs)
        self.spec = spec

    def __call__(self, input_ids: jax.Array, attention_mask: jax.Array | None = None,
                 position_ids: jax.Array | None = None) -> jax.Array:
        """Logits [B, T, V] of base + adapters (the base's LM head; alignment as ``Transformer``)."""
        return self.base.logits_from_hidden(self.hidden_states(input_ids, attention_mask, position_ids))

    def hidden_states(self, input_ids: jax.Array, attention_mask: jax.Array | None = None,
                      position_ids: jax.Array | None = None) -> jax.Array:
        """Final hidden states [B, T, D] (compute dtype) of base + adapters."""
        return self.base.hidden_states(input_ids, attention_mask, position_ids, adapters=self.adapters)

    def paired_hidden_states(self, cond_ids: jax.Array, anchor_ids: jax.Array,
                             attention_mask: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
        """(base + adapters on `cond_ids`, stop-gradient base alone on `anchor_ids`), both [B, T, D],
        from one layer scan: ``Transformer.paired_hidden_states``."""
        return self.base.paired_hidden_states(cond_ids, anchor_ids, attention_mask, adapters=self.adapters)


# ---------------------------------------------------------------------------------------------
# The functional API over pure dicts.


@functools.lru_cache(maxsize=64)
def abstract_lora_model(cfg: ModelConfig, spec: LoraSpec) -> tuple[nnx.GraphDef, nnx.State]:
    """(graphdef, abstract state ``{"base": ..., "adapters": ...}``) of a LoraTransformer; cached."""
    return nnx.split(nnx.eval_shape(lambda: LoraTransformer(Transformer(cfg, rngs=nnx.Rngs(0)), spec,
                                                            rngs=nnx.Rngs(1))))


def lora_model_from_params(cfg: ModelConfig, base, adapters, spec: LoraSpec) -> LoraTransformer:
    """The cached LoraTransformer graphdef merged with `base` params and `adapters` (pure dicts)."""
    graphdef, abstract = abstract_lora_model(cfg, spec)
    base_state = state_from_params(abstract["base"], base, "base params")
    adapter_state = state_from_params(abstract["adapters"], adapters, "adapters")
    return nnx.merge(graphdef, nnx.State({"base": base_state, "adapters": adapter_state}))


def _abstract_adapter_state(cfg: ModelConfig, spec: LoraSpec) -> nnx.State:
    return abstract_lora_model(cfg, spec)[1]["adapters"]


def adapter_shapes(cfg: ModelConfig, spec: LoraSpec) -> dict[str, dict[str, tuple[int, ...]]]:
    """{target: {"a": (L, *in, r), "b": (L, r, *out)}} for the kernels of `cfg`."""
    return jax.tree.map(lambda s: tuple(s.shape), nnx.to_pure_dict(_abstract_adapter_state(cfg, spec)))


def adapter_axes(cfg: ModelConfig, spec: LoraSpec) -> dict[str, dict[str, tuple[str, ...]]]:
    """Logical axis names of the adapters (the kernel's own, plus `RANK_AXIS`), for sharding rules:
    the adapters' ``out_sharding`` metadata."""
    return nnx.to_pure_dict(_abstract_adapter_state(cfg, spec), lambda v: tuple(v.out_sharding))


def abstract_adapters(cfg: ModelConfig, spec: LoraSpec, dtype=jnp.float32) -> dict[str, Any]:
    """ShapeDtypeStructs of `init_adapters`' result, without allocating it."""
    return jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, dtype), nnx.to_pure_dict(_abstract_adapter_state(cfg, spec)))


def init_adapters(cfg: ModelConfig, spec: LoraSpec, key: jax.Array, dtype=jnp.float32) -> dict[str, Any]:
    """Fresh adapters (pure dict) in `dtype`: A ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in)), B = 0; jit-friendly."""
    return nnx.to_pure_dict(nnx.state(stacked_adapters(cfg, spec, dtype, nnx.Rngs(key)), nnx.LoRAParam))


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


def hidden_states(cfg: ModelConfig, base, adapters, spec: LoraSpec, input_ids: jax.Array,
                  attention_mask: jax.Array | None = None) -> jax.Array:
    """Final hidden states [B, T, D] (compute dtype) of base + adapters; the same alignment and
    masking as ``mdu_jax.models.transformer.hidden_states``. Differentiable in `adapters`
    (and in `base`, though training treats it as frozen)."""
    return lora_model_from_params(cfg, base, adapters, spec).hidden_states(input_ids, attention_mask)


def paired_hidden_states(cfg: ModelConfig, base, adapters, spec: LoraSpec, cond_ids: jax.Array,
                         anchor_ids: jax.Array, attention_mask: jax.Array | None = None):
    """(hidden states of base + adapters on `cond_ids`, stop-gradient hidden states of the base
    alone on `anchor_ids`), both [B, T, D], from one layer stack. Equals ``(hidden_states(...cond_ids),
    transformer.hidden_states(base, anchor_ids))`` with gradients flowing to `adapters` through the
    first only. Both passes share `attention_mask`."""
    return lora_model_from_params(cfg, base, adapters, spec).paired_hidden_states(cond_ids, anchor_ids, attention_mask)


__all__ = ["LoraSpec", "LoraAdapter", "LoraAdapters", "LoraTransformer", "TARGETS", "RANK_AXIS", "TRAINABLE",
           "FROZEN", "abstract_lora_model", "adapter_shapes", "adapter_axes", "abstract_adapters", "init_adapters",
           "delta", "merge", "hidden_states", "paired_hidden_states", "lora_model_from_params"]
