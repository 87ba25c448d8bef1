"""bf16 params with float32 master weights (optim.master_weights) and the sharded optimiser state.

What is compared: fed the same gradients, the master copy follows exactly the trajectory of the
plain optimiser (same clipping, AdamW, schedule, accumulation) run on float32 params, its moments
are the float32 moments of that run (rtol 1e-6, atol 1e-8: the same float32 operations on the
same values, but in two compiled programs that XLA may fuse, and so round, differently: a few
ulps), and the bf16 params are exactly the master rounded to bf16 after every update. The loss
and gradients of a step do not depend on the option at all (same bf16 params): bitwise equal.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P

from mdu_jax import parallel
from mdu_jax.training import state as train_state
from mdu_jax.training import step as train_step
from mdu_jax.training.config import OptimSection
from mdu_jax.training.optimizer import MasterState, make_optimizer


def bf16_params(seed=0):
    rng = np.random.default_rng(seed)
    return {"layers": {"kernel": jnp.asarray(rng.standard_normal((16, 8)), jnp.bfloat16)},
            "norm": {"scale": jnp.asarray(1.0 + 0.1 * rng.standard_normal(8), jnp.bfloat16)}}


def grad_sequence(params, n, seed=1):
    rng = np.random.default_rng(seed)
    return [jax.tree.map(lambda p: jnp.asarray(rng.standard_normal(p.shape), jnp.bfloat16), params)
            for _ in range(n)]


def adam_moments(state):
    """The (mu, nu) of the AdamW inside whatever wrappers `state` has."""
    found = [s for s in jax.tree.leaves(state, is_leaf=lambda x: isinstance(x, optax.ScaleByAdamState))
             if isinstance(s, optax.ScaleByAdamState)]
    assert len(found) == 1
    return found[0].mu, found[0].nu


@pytest.mark.parametrize("grad_accum", [1, 2])
def test_master_follows_the_float32_run_and_params_are_its_rounding(grad_accum):
    cfg = dict(lr=3e-2, warmup_ratio=0.25, weight_decay=0.1, clip_norm=1.0, grad_accum=grad_accum)
    tx_master, _ = make_optimizer(OptimSection(master_weights=True, **cfg), 8)
    tx_ref, _ = make_optimizer(OptimSection(**cfg), 8)
    params = bf16_params()
    ref = jax.tree.map(lambda p: p.astype(jnp.float32), params)
    s_master, s_ref = tx_master.init(params), tx_ref.init(ref)
    assert isinstance(s_master, MasterState)
    step_master = jax.jit(lambda g, s, p: tx_master.update(g, s, p))
    step_ref = jax.jit(lambda g, s, p: tx_ref.update(g, s, p))
    for g in grad_sequence(params, 4 * grad_accum):
        u, s_master = step_master(g, s_master, params)
        params = optax.apply_updates(params, u)
        u_ref, s_ref = step_ref(jax.tree.map(lambda x: x.astype(jnp.float32), g), s_ref, ref)
        ref = optax.apply_updates(ref, u_ref)
        for m, r, p in zip(jax.tree.leaves(s_master.master), jax.tree.leaves(ref), jax.tree.leaves(params)):
            assert m.dtype == jnp.float32 and p.dtype == jnp.bfloat16
            np.testing.assert_allclose(np.asarray(m), np.asarray(r), rtol=1e-6, atol=1e-8)
            np.testing.assert_array_equal(np.asarray(p), np.asarray(m.astype(jnp.bfloat16)))
        for a, b in zip(jax.tree.leaves(adam_moments(s_master)), jax.tree.leaves(adam_moments(s_ref))):
            assert a.dtype == jnp.float32
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-8)
    assert not np.array_equal(np.asarray(ref["layers"]["kernel"]),
                              np.asarray(bf16_params()["layers"]["kernel"], np.float32))


def test_updates_below_a_bf16_ulp_accumulate_only_with_master_weights():
    """Just below 1 the bf16 spacing is 2^-8 ~ 3.9e-3; Adam steps of lr = 1e-3 (constant gradient)
    round back to 1 in bf16 every time, while the master accumulates them to 1 - 1e-2."""
    params = {"w": jnp.ones((64,), jnp.bfloat16)}
    grads = {"w": jnp.ones((64,), jnp.bfloat16)}
    cfg = dict(lr=1e-3, warmup_ratio=0.0, schedule="constant", clip_norm=0.0)
    out = {}
    for master in (False, True):
        tx, _ = make_optimizer(OptimSection(master_weights=master, **cfg), 100)
        p, s = params, tx.init(params)
        upd = jax.jit(tx.update)
        for _ in range(10):
            u, s = upd(grads, s, p)
            p = optax.apply_updates(p, u)
        out[master] = np.asarray(p["w"], np.float32)
    np.testing.assert_array_equal(out[False], 1.0)          # every step was lost
    expect = float(jnp.asarray(1.0 - 10 * 1e-3, jnp.bfloat16))  # 0.98828125
    np.testing.assert_array_equal(out[True], expect)


def test_step_loss_and_gradient_do_not_depend_on_master_weights():
    target = jax.tree.map(lambda p: (p.astype(jnp.float32) + 0.5), bf16_params(3))

    def loss_fn(params, anchor, batch, key, row_offset, axis_name):
        loss = sum(jnp.sum((p.astype(jnp.float32) - t) ** 2) for p, t in
                   zip(jax.tree.leaves(params), jax.tree.leaves(target)))
        return loss, {}

    batch = {"attention_mask": jnp.ones((2, 4), jnp.int32)}
    metrics = {}
    for master in (False, True):
        tx, _ = make_optimizer(OptimSection(master_weights=master, lr=1e-2, warmup_ratio=0.0), 10)
        state = train_state.init_state(bf16_params(), tx, 0)
        new_state, m = jax.jit(train_step.make_step(loss_fn, tx))(state, None, batch)
        metrics[master] = m
        if master:
            master_copy = new_state["opt_state"].master
            for p, w in zip(jax.tree.leaves(new_state["params"]), jax.tree.leaves(master_copy)):
                np.testing.assert_array_equal(np.asarray(p), np.asarray(w.astype(jnp.bfloat16)))
    for k in ("loss", "grad_norm", "finite"):
        np.testing.assert_array_equal(np.asarray(metrics[True][k]), np.asarray(metrics[False][k]))


@pytest.mark.parametrize("master", [False, True])
def test_optimizer_state_is_sharded_like_the_params(master):
    """``jax.jit(init_state)`` alone replicates the zeros-like moments; init_state_sharded gives every
    param-shaped leaf of the optimiser state its parameter's sharding (8 fake devices)."""
    mesh = parallel.make_mesh({"data": 1, "fsdp": -1, "tensor": 1}, jax.devices()[:8])
    shard = {"layers": {"kernel": NamedSharding(mesh, P("fsdp"))}, "norm": {"scale": NamedSharding(mesh, P())}}
    params = jax.device_put(bf16_params(), shard)
    tx, _ = make_optimizer(OptimSection(master_weights=master, grad_accum=2), 10)
    state = train_state.init_state_sharded(params, tx, 0, parallel.replicated(mesh))
    kernels = [x for x in jax.tree.leaves(state["opt_state"]) if x.shape == (16, 8)]
    assert len(kernels) == (4 if master else 3)  # mu, nu, accumulated grads (+ master)
    assert all(x.sharding.spec == P("fsdp") for x in kernels)
    assert all(x.sharding.spec == P() for x in jax.tree.leaves(state["opt_state"]) if x.ndim == 0)
    plain = train_state.init_state(bf16_params(), tx, 0)
    for a, b in zip(jax.tree.leaves(state), jax.tree.leaves(plain)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
