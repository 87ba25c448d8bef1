"""The parameter table: every parameter's shape, logical axes and initialiser, as data.

Layout (L = layers, D = hidden, H/K = query/kv heads, h = head_dim, F = mlp, V = vocab)::

    embed/embedding        [V, D]         (vocab, embed)
    layers/attn_norm/scale [L, D]         (layers, norm)
    layers/q/kernel        [L, D, H, h]   (layers, embed, heads, head_dim)
    layers/q/bias          [L, H, h]      Dream only (k, v likewise)
    layers/k/kernel        [L, D, K, h]   (layers, embed, kv_heads, head_dim)
    layers/v/kernel        [L, D, K, h]
    layers/o/kernel        [L, H, h, D]   (layers, heads, head_dim, embed)
    layers/mlp_norm/scale  [L, D]
    layers/gate/kernel     [L, D, F]      (layers, embed, mlp)   LLaDA ff_proj, Dream gate_proj
    layers/up/kernel       [L, D, F]
    layers/down/kernel     [L, F, D]      (layers, mlp, embed)   LLaDA block ff_out
    final_norm/scale       [D]
    lm_head/kernel         [D, V]         absent when embeddings are tied

The NNX modules (``models/modules.py``, ``block.py``, ``transformer.py``) create their
``nnx.Param``s from this table, with the axes as sharding metadata; the decoder block sees the
``layers`` rows without their leading axis, which ``nnx.vmap`` adds back when it stacks the blocks.
The converter and the checkpoint code read the same table for shapes.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp

from mdu_jax.models.config import ModelConfig

INIT_STDDEV = 0.02
LAYER_AXIS = "layers"


@dataclasses.dataclass(frozen=True)
class ParamSpec:
    """One parameter: its shape, logical axis names and initialiser kind."""

    shape: tuple[int, ...]
    axes: tuple[str, ...]
    init: str  # "normal" | "ones" | "zeros"

    def initial_value(self, key: jax.Array, dtype) -> jax.Array:
        """N(0, INIT_STDDEV) drawn in float32 (normal), ones or zeros, stored in `dtype`."""
        if self.init == "ones":
            return jnp.ones(self.shape, dtype)
        if self.init == "zeros":
            return jnp.zeros(self.shape, dtype)
        return (INIT_STDDEV * jax.random.normal(key, self.shape, jnp.float32)).astype(dtype)

    def unstacked(self) -> "ParamSpec":
        """One layer's slice of a stacked parameter (the leading ``layers`` axis removed)."""
        if not self.axes or self.axes[0] != LAYER_AXIS:
            raise ValueError(f"not a stacked parameter: axes {self.axes}")
        return ParamSpec(self.shape[1:], self.axes[1:], self.init)


def param_specs(cfg: ModelConfig) -> dict[str, Any]:
    """The nested dict of ParamSpec describing every parameter of `cfg` (layers stacked)."""
    L, D, H, K, h, F, V = (cfg.num_layers, cfg.hidden_size, cfg.num_heads, cfg.num_kv_heads,
                           cfg.head_dim, cfg.intermediate_size, cfg.vocab_size)
    layers = {
        "attn_norm": {"scale": ParamSpec((L, D), (LAYER_AXIS, "norm"), "ones")},
        "q": {"kernel": ParamSpec((L, D, H, h), (LAYER_AXIS, "embed", "heads", "head_dim"), "normal")},
        "k": {"kernel": ParamSpec((L, D, K, h), (LAYER_AXIS, "embed", "kv_heads", "head_dim"), "normal")},
        "v": {"kernel": ParamSpec((L, D, K, h), (LAYER_AXIS, "embed", "kv_heads", "head_dim"), "normal")},
        "o": {"kernel": ParamSpec((L, H, h, D), (LAYER_AXIS, "heads", "head_dim", "embed"), "normal")},
        "mlp_norm": {"scale": ParamSpec((L, D), (LAYER_AXIS, "norm"), "ones")},
        "gate": {"kernel": ParamSpec((L, D, F), (LAYER_AXIS, "embed", "mlp"), "normal")},
        "up": {"kernel": ParamSpec((L, D, F), (LAYER_AXIS, "embed", "mlp"), "normal")},
        "down": {"kernel": ParamSpec((L, F, D), (LAYER_AXIS, "mlp", "embed"), "normal")},
    }
    if cfg.qkv_bias:
        layers["q"]["bias"] = ParamSpec((L, H, h), (LAYER_AXIS, "heads", "head_dim"), "zeros")
        layers["k"]["bias"] = ParamSpec((L, K, h), (LAYER_AXIS, "kv_heads", "head_dim"), "zeros")
        layers["v"]["bias"] = ParamSpec((L, K, h), (LAYER_AXIS, "kv_heads", "head_dim"), "zeros")
    specs = {
        "embed": {"embedding": ParamSpec((V, D), ("vocab", "embed"), "normal")},
        "layers": layers,
        "final_norm": {"scale": ParamSpec((D,), ("norm",), "ones")},
    }
    if not cfg.tie_word_embeddings:
        specs["lm_head"] = {"kernel": ParamSpec((D, V), ("embed", "vocab"), "normal")}
    return specs


def block_specs(cfg: ModelConfig) -> dict[str, dict[str, ParamSpec]]:
    """One decoder block's parameters: the ``layers`` rows of `param_specs` without the layer axis."""
    return {name: {leaf: spec.unstacked() for leaf, spec in group.items()}
            for name, group in param_specs(cfg)["layers"].items()}


def is_spec(x) -> bool:
    return isinstance(x, ParamSpec)
