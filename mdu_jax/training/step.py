"""One loss function, two compiled train steps: ``jax.jit`` over a mesh, and ``jax.pmap``.

The loss function has the signature
``loss_fn(params, anchor, batch, key, row_offset, axis_name) -> (loss, aux)`` and must
normalise by *global* counts (it ``psum``s its denominators over `axis_name` when given) and
draw each row's randomness from ``fold_in(key, row_offset + row)``. Then the pmap step, whose
devices each see a slice of the rows, sums per-device gradients into exactly the gradient of
the global batch, and every mesh layout computes the same numbers.

The train state is ``training.state``'s dict pytree; the frozen anchor is a separate argument
that is never donated, updated, or differentiated.
"""

from __future__ import annotations

import functools
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

LossFn = Callable[..., tuple[jax.Array, dict[str, jax.Array]]]


# The guard costs one variadic reduction per leaf (plain sums and an `and`), a second evaluation of
# the optimiser's update, and one lax.cond over the whole (params, opt_state). The update is traced
# once (``_apply`` under a nested jit) and evaluated twice: reduced to the statistics that decide,
# then inside the cond's applying branch, which writes the new state over the donated old one in
# place. The previous form selected the already computed new state with the cond: XLA kept that
# state whole beside the old one and copied it into the output buffers on every applied step
# (bench.memory_plan, LLaDA-8B shipped on one device: peak 209.09 GiB against 168.61 now). The
# first form took two reductions per leaf and a jnp.where per leaf of params and moments.
# bench.train_step's tiny step, compiled (kernels, lines of unoptimised / optimised LLVM IR, HLO
# instructions, copies; XLA's compile time follows the IR it emits): without any guard 225,
# 31395 / 57595, 4688, 182; 541a937's guard (finite loss and gradient norm, a where per leaf)
# 226, 31777 / 66658, 5088, 205; the cond selecting 244, 33870 / 63002, 5779, 219; this form
# 250, 34862 / 63163, 6401, 181.

# Sums of squares of x * 2^-64, x and x * 2^64 in float32 (powers of two: scaling is exact). For a
# finite norm the finest of them that is finite holds every square that matters: at 2^64 for norms
# below ~1, at 1 up to ~1.8e19 (squares flushed to 0 there are below 1.2e-38, against a norm^2
# of at least ~1), at 2^-64 above (flushed squares are those of |x| < ~2, against >= 3.4e38).
_SCALES = (np.float32(2.0 ** -64), np.float32(1.0), np.float32(2.0 ** 64))


def _add_sums_and_flags(a, b):
    """The reducer of `_leaf_sums`: sums add, the finiteness flag (last) ands. One module-level
    function, so that JAX traces it once rather than once per leaf."""
    return (*(x + y for x, y in zip(a[:-1], b[:-1])), a[-1] & b[-1])


def _leaf_sums(update: jax.Array, param: jax.Array, new_param: jax.Array):
    """(sums of squares of update x each of _SCALES, the same of param, every entry of new_param
    finite) of one leaf, float32 scalars and a bool, in one pass."""
    u, p = update.astype(jnp.float32), param.astype(jnp.float32)
    squares = [jnp.square(x * c) for x in (u, p) for c in _SCALES]
    zero = np.float32(0)
    return jax.lax.reduce((*squares, jnp.isfinite(new_param)), (zero,) * len(squares) + (np.True_,),
                          _add_sums_and_flags, tuple(range(param.ndim)))


def _norm(coarse, unit, fine) -> jax.Array:
    """The L2 norm from its sums of squares at _SCALES: the finest scale whose sum is finite."""
    return jnp.where(jnp.isfinite(fine), jnp.sqrt(fine) / _SCALES[2],
                     jnp.where(jnp.isfinite(unit), jnp.sqrt(unit), jnp.sqrt(coarse) / _SCALES[0]))


def _norms_and_finite(updates, params, new_params) -> tuple[jax.Array, jax.Array, jax.Array]:
    """(||updates||, ||params||, every leaf of new_params finite). The global L2 norms are float32,
    finite for any finite values whose norm is (squares of 1e30 would overflow; see _SCALES)."""
    per_leaf = [_leaf_sums(u, p, n) for u, p, n in
                zip(jax.tree.leaves(updates), jax.tree.leaves(params), jax.tree.leaves(new_params))]
    totals = jnp.sum(jnp.stack([jnp.stack(leaf[:-1]) for leaf in per_leaf]), axis=0)
    finite = jnp.all(jnp.stack([leaf[-1] for leaf in per_leaf]))
    return _norm(*totals[:3]), _norm(*totals[3:]), finite


def _apply(tx, grads, params, opt_state):
    """(new params, new optimiser state, updates): one optimiser update of `params` by `grads`."""
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, updates


def _update(tx, state, grads, loss, max_update_ratio: float):
    """Applies `grads` only if the result is sound; otherwise params and optimiser state stay as they were.

    Sound: the loss, the gradient norm and every updated parameter are finite, and (when
    `max_update_ratio` > 0) the update's global L2 norm is at most `max_update_ratio` times the
    parameters' global L2 norm. Returns (state, metrics) with ``finite``, ``applied`` (bool) and
    ``update_ratio`` (||update|| / ||params||, float32; 0 on an accumulation micro-step).
    """
    grad_norm = optax.global_norm(grads)
    # One jit object for both evaluations: the second reuses the first's trace.
    apply = jax.jit(functools.partial(_apply, tx))
    params, _, updates = apply(grads, state["params"], state["opt_state"])  # for the statistics only
    update_norm, param_norm, params_finite = _norms_and_finite(updates, state["params"], params)
    finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm) & params_finite
    ratio = update_norm / jnp.maximum(param_norm, jnp.finfo(jnp.float32).tiny)
    # A finite but exploded update (e.g. lr = 1e30) is caught here, before the weights take it:
    # Adam moves each weight by about lr per step, so the ratio is about lr / rms(weights), far
    # below 1 for any learning rate that trains (see OptimSection.max_update_ratio).
    within = (max_update_ratio <= 0) | (ratio <= max_update_ratio)
    applied = finite & within
    params, opt_state = jax.lax.cond(applied, lambda p, o: apply(grads, p, o)[:2], lambda p, o: (p, o),
                                     state["params"], state["opt_state"])
    new_state = {"params": params, "opt_state": opt_state, "step": state["step"] + 1, "rng": state["rng"]}
    return new_state, {"grad_norm": grad_norm, "finite": finite, "applied": applied, "update_ratio": ratio}


def make_step(loss_fn: LossFn, tx: optax.GradientTransformation, *, axis_name: str | None = None,
              local_rows: int | None = None, max_update_ratio: float = 0.0):
    """The uncompiled step ``(state, anchor, batch) -> (state, metrics)``.

    With `axis_name` (pmap), each device holds `local_rows` rows; gradients and losses are
    summed over the axis (the loss function already divides by global counts). An update that
    is not finite or exceeds `max_update_ratio` (``_update``) is not applied: metrics
    ``applied`` is then False and the state only advances its micro-step counter.
    """

    def step(state, anchor, batch):
        key = jax.random.fold_in(jax.random.wrap_key_data(state["rng"]), state["step"])
        offset = 0 if axis_name is None else jax.lax.axis_index(axis_name) * local_rows
        grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
        (loss, aux), grads = grad_fn(state["params"], anchor, batch, key, offset, axis_name)
        if axis_name is not None:
            grads, loss, aux = jax.lax.psum((grads, loss, aux), axis_name)
        new_state, update_metrics = _update(tx, state, grads, loss, max_update_ratio)
        tokens = jnp.sum(batch["attention_mask"])
        if axis_name is not None:
            tokens = jax.lax.psum(tokens, axis_name)
        metrics = {"loss": loss, "tokens": tokens, **update_metrics, **aux}
        return new_state, metrics

    return step


def jit_step(loss_fn: LossFn, tx, state_shardings, anchor_shardings, batch_shardings, metrics_sharding, *,
             max_update_ratio: float = 0.0):
    """The mesh-sharded step: state and anchor in their shardings, rows over (data, fsdp)."""
    return jax.jit(make_step(loss_fn, tx, max_update_ratio=max_update_ratio),
                   in_shardings=(state_shardings, anchor_shardings, batch_shardings),
                   out_shardings=(state_shardings, metrics_sharding), donate_argnums=(0,))


def pmap_step(loss_fn: LossFn, tx, local_rows: int, axis_name: str = "data", devices=None, *,
              max_update_ratio: float = 0.0):
    """The data-parallel step: replicated state, the batch split over the (local) devices."""
    return jax.pmap(make_step(loss_fn, tx, axis_name=axis_name, local_rows=local_rows,
                              max_update_ratio=max_update_ratio),
                    axis_name=axis_name, donate_argnums=(0,), devices=devices)


def split_for_pmap(batch: dict[str, np.ndarray], n: int) -> dict[str, np.ndarray]:
    """[B, ...] -> [n, B/n, ...] for every array of the batch."""
    out = {}
    for k, v in batch.items():
        if v.shape[0] % n:
            raise ValueError(f"batch {k!r}: {v.shape[0]} rows do not split over {n} devices")
        out[k] = v.reshape((n, v.shape[0] // n) + v.shape[1:])
    return out


def replicate(tree, devices):
    """One copy per device along a new leading axis, placed for a pmap over `devices`."""
    n = len(devices)
    mesh = jax.sharding.Mesh(np.array(devices), ("pmap",))
    sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("pmap"))
    return jax.tree.map(lambda x: jax.device_put(np.broadcast_to(np.asarray(x), (n,) + x.shape), sharding), tree)


@jax.jit
def _drop_leading_axis(tree):
    return jax.tree.map(lambda x: x[0], tree)


def _first_shard(x: jax.Array) -> jax.Array:
    """The [1, ...] block of a pmap-sharded array with the lowest index this process holds (index
    0 on one host; on other hosts of a pod their first replica), as a one-device array."""
    return min(x.addressable_shards, key=lambda s: s.index[0].start or 0).data


def unreplicate(tree):
    """One device's copy of a pmap-replicated tree (every replica holds the same values), as arrays
    on that device: one program for the whole tree (``x[0]`` per leaf compiled a gather and a
    broadcast per leaf shape, and left each result on every device, so that orbax sliced it again
    per replica to save it)."""
    return _drop_leading_axis(jax.tree.map(_first_shard, tree))


def unreplicate_host(tree):
    """Device 0's copy of a pmap-replicated tree as host arrays: the whole tree is copied to the
    host, then indexed there (indexing on device compiles a program per leaf shape); for small
    trees such as a step's metrics."""
    return jax.tree.map(lambda x: x[0], jax.device_get(tree))
