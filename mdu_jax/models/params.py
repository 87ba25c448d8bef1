"""The parameter pytree: shapes, logical axes and initialisation, as one table.

Layout (L = layers, D = hidden, H/K = query/kv heads, h = head_dim, F = mlp, V = vocab)::

    embed/embedding        [V, D]         (vocab, embed)
    layers/attn_norm/scale [L, D]         (layers, norm)
    layers/q/kernel        [L, D, H, h]   (layers, embed, heads, head_dim)
    layers/q/bias          [L, H, h]      Dream only
    layers/k/kernel        [L, D, K, h]   (layers, embed, kv_heads, head_dim)
    layers/v/kernel        [L, D, K, h]
    layers/o/kernel        [L, H, h, D]   (layers, heads, head_dim, embed)
    layers/mlp_norm/scale  [L, D]
    layers/gate/kernel     [L, D, F]      (layers, embed, mlp)   LLaDA ff_proj, Dream gate_proj
    layers/up/kernel       [L, D, F]
    layers/down/kernel     [L, F, D]      (layers, mlp, embed)   LLaDA block ff_out
    final_norm/scale       [D]
    lm_head/kernel         [D, V]         absent when embeddings are tied

Layers are stacked on a leading axis so the decoder is one ``lax.scan``.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from mdu_jax.models.config import ModelConfig

INIT_STDDEV = 0.02


@dataclasses.dataclass(frozen=True)
class ParamSpec:
    """One parameter: its shape, logical axis names and initialiser kind."""

    shape: tuple[int, ...]
    axes: tuple[str, ...]
    init: str  # "normal" | "ones" | "zeros"


def param_specs(cfg: ModelConfig) -> dict[str, Any]:
    """The nested dict of ParamSpec describing every parameter of `cfg`."""
    L, D, H, K, h, F, V = (cfg.num_layers, cfg.hidden_size, cfg.num_heads, cfg.num_kv_heads,
                           cfg.head_dim, cfg.intermediate_size, cfg.vocab_size)
    layers = {
        "attn_norm": {"scale": ParamSpec((L, D), ("layers", "norm"), "ones")},
        "q": {"kernel": ParamSpec((L, D, H, h), ("layers", "embed", "heads", "head_dim"), "normal")},
        "k": {"kernel": ParamSpec((L, D, K, h), ("layers", "embed", "kv_heads", "head_dim"), "normal")},
        "v": {"kernel": ParamSpec((L, D, K, h), ("layers", "embed", "kv_heads", "head_dim"), "normal")},
        "o": {"kernel": ParamSpec((L, H, h, D), ("layers", "heads", "head_dim", "embed"), "normal")},
        "mlp_norm": {"scale": ParamSpec((L, D), ("layers", "norm"), "ones")},
        "gate": {"kernel": ParamSpec((L, D, F), ("layers", "embed", "mlp"), "normal")},
        "up": {"kernel": ParamSpec((L, D, F), ("layers", "embed", "mlp"), "normal")},
        "down": {"kernel": ParamSpec((L, F, D), ("layers", "mlp", "embed"), "normal")},
    }
    if cfg.qkv_bias:
        layers["q"]["bias"] = ParamSpec((L, H, h), ("layers", "heads", "head_dim"), "zeros")
        layers["k"]["bias"] = ParamSpec((L, K, h), ("layers", "kv_heads", "head_dim"), "zeros")
        layers["v"]["bias"] = ParamSpec((L, K, h), ("layers", "kv_heads", "head_dim"), "zeros")
    specs = {
        "embed": {"embedding": ParamSpec((V, D), ("vocab", "embed"), "normal")},
        "layers": layers,
        "final_norm": {"scale": ParamSpec((D,), ("norm",), "ones")},
    }
    if not cfg.tie_word_embeddings:
        specs["lm_head"] = {"kernel": ParamSpec((D, V), ("embed", "vocab"), "normal")}
    return specs


def _is_spec(x) -> bool:
    return isinstance(x, ParamSpec)


def logical_axes(cfg: ModelConfig) -> dict[str, Any]:
    """Pytree (same structure as the params) of logical axis-name tuples."""
    return jax.tree.map(lambda s: s.axes, param_specs(cfg), is_leaf=_is_spec)


def abstract_params(cfg: ModelConfig, dtype=None) -> dict[str, Any]:
    """Pytree of ``jax.ShapeDtypeStruct``: the params' shapes without allocating them."""
    dtype = dtype or cfg.weight_dtype
    return jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, dtype), param_specs(cfg), is_leaf=_is_spec)


def init_params(cfg: ModelConfig, key: jax.Array) -> dict[str, Any]:
    """Random parameters for `cfg` in ``cfg.param_dtype``: N(0, 0.02) matrices, unit norms, zero biases.

    Pure and jit-friendly: ``jax.eval_shape(lambda k: init_params(cfg, k), key)`` gives the
    shapes of a full-size model without allocating it.
    """
    specs = param_specs(cfg)
    leaves, treedef = jax.tree.flatten(specs, is_leaf=_is_spec)
    keys = jax.random.split(key, len(leaves))
    dtype = cfg.weight_dtype

    def make(spec: ParamSpec, k):
        if spec.init == "ones":
            return jnp.ones(spec.shape, dtype)
        if spec.init == "zeros":
            return jnp.zeros(spec.shape, dtype)
        return (INIT_STDDEV * jax.random.normal(k, spec.shape, jnp.float32)).astype(dtype)

    return jax.tree.unflatten(treedef, [make(s, k) for s, k in zip(leaves, keys)])


def count_params(params) -> int:
    """Total number of scalars in a params pytree (arrays or ShapeDtypeStructs)."""
    return int(sum(np.prod(x.shape) for x in jax.tree.leaves(params)))


def get_path(tree: dict, path: tuple[str, ...]):
    for name in path:
        tree = tree[name]
    return tree


def set_path(tree: dict, path: tuple[str, ...], value) -> None:
    for name in path[:-1]:
        tree = tree.setdefault(name, {})
    tree[path[-1]] = value


def flatten_paths(tree: dict, prefix: tuple[str, ...] = ()) -> dict[tuple[str, ...], Any]:
    """{('layers', 'q', 'kernel'): leaf, ...} for a nested dict pytree."""
    out = {}
    for name, sub in tree.items():
        if isinstance(sub, dict):
            out.update(flatten_paths(sub, prefix + (name,)))
        else:
            out[prefix + (name,)] = sub
    return out
