"""Structural properties of forward(): bidirectional, padding-invariant, option-invariant.

forward runs under ``jax.jit`` (one program per config and shape, as callers run it): run op by
op it compiled one small program per operation, most of these tests' time on this CPU.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mdu_jax as mj
from mdu_jax.models.params import INIT_STDDEV, ParamSpec, param_specs
from tests.fixtures import hf_config


def tiny(family, **changes):
    return mj.ModelConfig.from_hf(hf_config(family), **changes)


def numpy_init(cfg, seed):
    """Params distributed as ``init_params`` draws them (N(0, INIT_STDDEV) matrices, unit norms,
    zero biases), drawn with NumPy: a jax.random program takes seconds to compile here."""
    rng = np.random.default_rng(seed)

    def make(spec):
        if spec.init in ("ones", "zeros"):  # NumPy too: jnp.ones compiles a program per shape
            return jnp.asarray((np.ones if spec.init == "ones" else np.zeros)(spec.shape, np.float32))
        return jnp.asarray(INIT_STDDEV * rng.standard_normal(spec.shape), jnp.float32)

    return jax.tree.map(make, param_specs(cfg), is_leaf=lambda x: isinstance(x, ParamSpec))


@functools.lru_cache(maxsize=None)
def jit_forward(cfg):
    return jax.jit(functools.partial(mj.forward, cfg))


@pytest.fixture(scope="module")
def models():
    return {family: (tiny(family), numpy_init(tiny(family), 1)) for family in ("llada", "dream")}


@pytest.mark.parametrize("family", ["llada", "dream"])
def test_changing_the_last_token_changes_position_zero(models, family):
    cfg, params = models[family]
    ids = jnp.array([[5, 9, 12, 20, 33, 41]], jnp.int32)
    a = jit_forward(cfg)(params, ids)
    b = jit_forward(cfg)(params, ids.at[0, -1].set(60))
    # LLaDA's position 0 is its own prediction; Dream's position 1 is the first real prediction
    # (computed at raw position 0, which only sees the last token through bidirectional attention).
    pos = 0 if family == "llada" else 1
    assert np.abs(np.asarray(a[0, pos] - b[0, pos])).max() > 1e-4


@pytest.mark.parametrize("family", ["llada", "dream"])
def test_padded_keys_do_not_influence_valid_positions(models, family):
    cfg, params = models[family]
    rng = np.random.default_rng(0)
    ids = rng.integers(2, 90, size=(2, 10)).astype(np.int32)
    mask = np.ones((2, 10), np.int32)
    mask[0, 6:] = 0
    other = ids.copy()
    other[0, 6:] = rng.integers(2, 90, size=4)  # garbage in the padded slots
    a = np.asarray(jit_forward(cfg)(params, jnp.asarray(ids), jnp.asarray(mask)))
    b = np.asarray(jit_forward(cfg)(params, jnp.asarray(other), jnp.asarray(mask)))
    np.testing.assert_allclose(a[0, :6], b[0, :6], rtol=0, atol=1e-5)
    np.testing.assert_allclose(a[1], b[1], rtol=0, atol=0)
    # The padded row equals the same sequence truncated to its valid length.
    short = np.asarray(jit_forward(cfg)(params, jnp.asarray(ids[:1, :6])))
    np.testing.assert_allclose(a[0, :6], short[0], rtol=0, atol=1e-5)
    assert np.isfinite(a).all()  # Dream's fully masked pad rows must not leak NaN


@pytest.mark.parametrize("family", ["llada", "dream"])
def test_all_ones_mask_equals_no_mask(models, family):
    cfg, params = models[family]
    ids = jnp.arange(2, 16, dtype=jnp.int32).reshape(2, 7)
    a = jit_forward(cfg)(params, ids)
    b = jit_forward(cfg)(params, ids, jnp.ones_like(ids))
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-6)


def test_dream_logits_are_right_shifted(models):
    cfg, params = models["dream"]
    ids = jnp.arange(3, 12, dtype=jnp.int32)[None]
    hidden = jax.jit(functools.partial(mj.hidden_states, cfg))(params, ids)
    # Position 0 duplicates position 1's source (raw position 0); positions i >= 1 come from i - 1.
    np.testing.assert_array_equal(np.asarray(hidden[0, 0]), np.asarray(hidden[0, 1]))


@functools.lru_cache(maxsize=None)
def option_value_and_grad(cfg):
    """jit(value_and_grad) of the mean log-probability of token 7 under `cfg`, for fixed ids."""
    ids = jnp.array([[4, 8, 15, 16, 23, 42]], jnp.int32)
    return jax.jit(jax.value_and_grad(
        lambda p: jnp.mean(jax.nn.log_softmax(mj.forward(cfg, p, ids).astype(jnp.float32))[..., 7])))


@pytest.mark.parametrize("option", [dict(scan_layers=False), dict(remat_policy="full"),
                                    dict(remat_policy="dots"), dict(remat_policy="save_attn_mlp_out")])
def test_execution_options_do_not_change_values_or_gradients(models, option):
    cfg, params = models["llada"]
    va, ga = option_value_and_grad(cfg)(params)  # compiled once for the four options
    vb, gb = option_value_and_grad(cfg.replace(**option))(params)
    np.testing.assert_allclose(va, vb, rtol=1e-6)
    for x, y in zip(jax.tree.leaves(ga), jax.tree.leaves(gb)):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-5, atol=1e-7)


def test_dtypes_are_configurable(models):
    """Dtypes are fixed when jax traces a function, so jax.eval_shape checks them without
    compiling or running the programs (op by op they compiled dozens of small programs)."""
    cfg, params = models["llada"]
    bf = cfg.replace(param_dtype="bf16", dtype="bf16")
    p16 = jax.eval_shape(lambda k: mj.init_params(bf, k), jax.random.key(1))
    assert all(x.dtype == jnp.bfloat16 for x in jax.tree.leaves(p16))
    ids = jax.ShapeDtypeStruct((1, 4), jnp.int32)
    out = jax.eval_shape(lambda p, i: mj.forward(bf, p, i), p16, ids)
    assert out.dtype == jnp.bfloat16
    # fp32 master params with bf16 compute.
    mixed = cfg.replace(dtype="bfloat16")
    assert jax.eval_shape(lambda p, i: mj.forward(mixed, p, i), params, ids).dtype == jnp.bfloat16


def test_logical_axes_cover_every_parameter(models):
    cfg, params = models["dream"]
    axes = mj.logical_axes(cfg)
    for (path, leaf), (_, names) in zip(jax.tree_util.tree_leaves_with_path(params),
                                        jax.tree_util.tree_leaves_with_path(axes, is_leaf=lambda x: isinstance(x, tuple))):
        assert len(names) == leaf.ndim, (path, names, leaf.shape)
    assert axes["layers"]["k"]["kernel"] == ("layers", "embed", "kv_heads", "head_dim")
    assert axes["lm_head"]["kernel"] == ("embed", "vocab")


def test_bad_input_shapes_are_named(models):
    cfg, params = models["llada"]
    with pytest.raises(ValueError, match=r"input_ids: expected shape \[B, T\]"):
        mj.forward(cfg, params, jnp.ones((4,), jnp.int32))
    with pytest.raises(ValueError, match=r"attention_mask: expected shape \(2, 3\)"):
        mj.forward(cfg, params, jnp.ones((2, 3), jnp.int32), jnp.ones((2, 4), jnp.int32))
