"""The parameter-holding NNX modules of the network: embedding, RMSNorm and einsum projections.

Each creates its ``nnx.Param``s from the table in ``models/specs.py``: the initial value from
the spec's initialiser and the spec's logical axes as the Param's ``out_sharding`` metadata.
Eager sharding is off because those are logical names ('embed', 'heads', ...), not mesh axes:
``mdu_jax.parallel``'s rule table maps them onto a mesh (leaving a dimension the mesh does not
divide replicated) when the caller places the params.

Values are stored in the param dtype and cast to the compute dtype where they are used.
"""

from __future__ import annotations

from typing import Mapping

import jax
import jax.numpy as jnp
from flax import nnx

from mdu_jax.models import layers
from mdu_jax.models.specs import ParamSpec


def spec_param(spec: ParamSpec, dtype, rngs: nnx.Rngs, kind: type[nnx.Param] = nnx.Param) -> nnx.Param:
    """A `kind` Param initialised per `spec` in `dtype`, carrying ``spec.axes`` as ``out_sharding``."""
    return kind(spec.initial_value(rngs.params(), dtype), out_sharding=spec.axes, eager_sharding=False)


class Embedding(nnx.Module):
    """Token embedding table ``embedding`` [V, D]."""

    def __init__(self, spec: ParamSpec, param_dtype, dtype, *, rngs: nnx.Rngs):
        self.embedding = spec_param(spec, param_dtype, rngs)
        self.dtype = dtype

    def __call__(self, input_ids: jax.Array) -> jax.Array:
        """int [B, T] -> [B, T, D] in the compute dtype."""
        return jnp.take(self.embedding[...], input_ids, axis=0).astype(self.dtype)


class RMSNorm(nnx.Module):
    """RMSNorm with a learned ``scale`` [D] (``layers.rms_norm``: statistics in float32)."""

    def __init__(self, spec: ParamSpec, param_dtype, eps: float, *, rngs: nnx.Rngs):
        self.scale = spec_param(spec, param_dtype, rngs)
        self.eps = eps

    def __call__(self, x: jax.Array) -> jax.Array:
        return layers.rms_norm(x, self.scale[...], self.eps)


class Projection(nnx.Module):
    """``einsum(equation, x, kernel)`` plus an optional ``bias``, in the compute dtype.

    The kernel keeps the head structure (e.g. q [D, H, h], o [H, h, D]), so the einsum names the
    contracted and produced axes and no reshape sits between the projections and attention.
    """

    def __init__(self, specs: Mapping[str, ParamSpec], equation: str, param_dtype, dtype, *, rngs: nnx.Rngs):
        self.kernel = spec_param(specs["kernel"], param_dtype, rngs)
        self.bias = spec_param(specs["bias"], param_dtype, rngs) if "bias" in specs else None
        self.equation = equation
        self.dtype = dtype

    def matmul(self, x: jax.Array) -> jax.Array:
        """``einsum(equation, x, kernel)``, without the bias."""
        return jnp.einsum(self.equation, x, self.kernel[...].astype(self.dtype))

    def add_bias(self, y: jax.Array) -> jax.Array:
        return y if self.bias is None else y + self.bias[...].astype(self.dtype)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.add_bias(self.matmul(x))
