"""The parameter pytree of the functional API: the NNX model's Params as a nested dict.

``init_params(cfg, key)`` is ``nnx.to_pure_dict(nnx.state(Transformer(cfg, rngs=nnx.Rngs(key)),
nnx.Param))``: names, stacking and shapes as in the table of ``models/specs.py``
(``embed/embedding``, ``layers/q/kernel`` [L, D, H, h], ...), values in ``cfg.param_dtype``. This
dict is what the converter, orbax checkpoints, the train state and the sharding rules see;
``abstract_params`` and ``logical_axes`` read the same tree off the abstract model (shapes, and
the ``out_sharding`` metadata every Param carries).
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np
from flax import nnx

from mdu_jax.models.config import ModelConfig
from mdu_jax.models.specs import INIT_STDDEV, ParamSpec, param_specs
from mdu_jax.models.transformer import Transformer, abstract_model


def logical_axes(cfg: ModelConfig) -> dict[str, Any]:
    """Pytree (same structure as the params) of logical axis-name tuples: each Param's metadata."""
    return nnx.to_pure_dict(abstract_model(cfg)[1], lambda v: tuple(v.out_sharding))


def abstract_params(cfg: ModelConfig, dtype=None) -> dict[str, Any]:
    """Pytree of ``jax.ShapeDtypeStruct``: the params' shapes (in `dtype`, default the param dtype)
    without allocating them."""
    dtype = dtype or cfg.weight_dtype
    return jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, dtype), nnx.to_pure_dict(abstract_model(cfg)[1]))


def init_params(cfg: ModelConfig, key: jax.Array) -> dict[str, Any]:
    """Random parameters for `cfg` in ``cfg.param_dtype``: N(0, 0.02) matrices, unit norms, zero
    biases, each layer from its own split of `key` (``nnx.vmap`` over ``nnx.split_rngs``).

    Pure and jit-friendly: ``jax.eval_shape(lambda k: init_params(cfg, k), key)`` gives the
    shapes of a full-size model without allocating it.
    """
    return nnx.to_pure_dict(nnx.state(Transformer(cfg, rngs=nnx.Rngs(key)), nnx.Param))


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


__all__ = ["ParamSpec", "INIT_STDDEV", "param_specs", "logical_axes", "abstract_params", "init_params",
           "count_params", "get_path", "set_path", "flatten_paths"]
