"""The train state: a plain dict pytree ``{params, opt_state, step, rng}`` and its shardings.

``rng`` holds raw key data so that orbax saves it like any array; ``step`` counts micro-steps.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax


def init_state(params, tx: optax.GradientTransformation, seed: int) -> dict[str, Any]:
    """The initial train state: params, optimiser state, micro-step 0, RNG key data."""
    return {"params": params, "opt_state": tx.init(params), "step": jnp.zeros((), jnp.int32),
            "rng": jax.random.key_data(jax.random.key(seed))}


def state_shardings(tx: optax.GradientTransformation, params, scalar_sharding) -> dict[str, Any]:
    """Shardings of ``init_state(params, tx, seed)``: every param-shaped optimiser leaf (moments,
    accumulated gradients, master weights) takes its parameter's sharding; counters, step and
    RNG take `scalar_sharding` (replicated). `params`: arrays or ShapeDtypeStructs with shardings.

    Needed because ``jax.jit(init_state)`` alone leaves the ``zeros_like`` moments replicated
    (their values do not depend on the sharded params), i.e. a full optimiser state per device.
    """
    shardings = state_shardings_from(params)
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), params)
    opt = optax.tree_map_params(tx, lambda _, s: s, jax.eval_shape(tx.init, abstract), shardings,
                                transform_non_params=lambda _: scalar_sharding)
    return {"params": shardings, "opt_state": opt, "step": scalar_sharding, "rng": scalar_sharding}


def init_state_sharded(params, tx: optax.GradientTransformation, seed: int, scalar_sharding) -> dict[str, Any]:
    """``init_state`` compiled so that the optimiser state is sharded like the params it mirrors."""
    out = state_shardings(tx, params, scalar_sharding)
    return jax.jit(lambda p: init_state(p, tx, seed), out_shardings=out)(params)


def state_shardings_from(state) -> Any:
    """The shardings a (propagated) state actually has, for in/out shardings of the jit step."""
    return jax.tree.map(lambda x: x.sharding, state)


def abstract_like(tree: Any) -> Any:
    """ShapeDtypeStructs (with shardings) mirroring a pytree of arrays."""
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), tree)
