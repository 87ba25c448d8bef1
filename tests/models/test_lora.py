"""LoRA adapters: a fresh adapter is the base model, adapter gradients follow the chain rule from
the dense weight gradient, the fused anchor pass equals separate passes, and a LoRA run trains only
the targeted projections."""

import copy
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mdu_jax.models import lora
from mdu_jax.models.params import INIT_STDDEV, ParamSpec, param_specs
from mdu_jax.training.config import load_config
from mdu_jax.models import transformer
from mdu_jax.typed_config import ConfigKeyError
from tests.training.loss_helpers import assert_trees_close, loss_and_grads, tiny_batch, tiny_config

SPEC = lora.LoraSpec(rank=4, alpha=8.0)


# The tests share one tiny model per family and one compiled program per function and config:
# on this CPU nearly all of their time is XLA compiling these tiny programs.


@functools.lru_cache(maxsize=None)
def lora_hidden(cfg, spec):
    return jax.jit(lambda base, ad, ids, mask: lora.hidden_states(cfg, base, ad, spec, ids, mask))


@functools.lru_cache(maxsize=None)
def core_hidden(cfg):
    return jax.jit(lambda params, ids, mask: transformer.hidden_states(cfg, params, ids, mask))


@functools.lru_cache(maxsize=None)
def merged_weights(cfg, spec):
    """jit(lora.merge) for one config and spec (op by op, it compiled a program per kernel shape)."""
    return jax.jit(lambda base, ad: lora.merge(cfg, base, ad, spec))


@functools.lru_cache(maxsize=None)
def base_model(family, scale=5.0):
    """(cfg, params) of the tiny model of `family` (callers must not modify the params): params
    distributed as ``tests.training.loss_helpers.tiny_params`` draws them (``init_params`` with
    kernels and embedding times `scale`: logits and gradients far from uniform), drawn with NumPy,
    as a jax.random program takes seconds to compile here."""
    cfg = tiny_config(family)
    rng = np.random.default_rng(0)

    def make(spec):
        if spec.init in ("ones", "zeros"):  # NumPy too: jnp.ones compiles a program per shape
            return jnp.asarray((np.ones if spec.init == "ones" else np.zeros)(spec.shape, np.float32))
        return jnp.asarray(scale * INIT_STDDEV * rng.standard_normal(spec.shape), jnp.float32)

    return cfg, jax.tree.map(make, param_specs(cfg), is_leaf=lambda x: isinstance(x, ParamSpec))


def fresh_adapters(cfg, spec, seed=1):
    return jax.jit(lambda k: lora.init_adapters(cfg, spec, k))(jax.random.key(seed))


@functools.lru_cache(maxsize=None)
def random_adapters(cfg, spec, seed=1, b_scale=0.3):
    """Adapters with a non-zero B, so the low-rank path contributes: A drawn as ``init_adapters``
    draws it (U(-1/sqrt(fan_in), 1/sqrt(fan_in))), B ~ N(0, b_scale^2); with NumPy, as a
    jax.random program would take seconds to compile here."""
    shapes = jax.eval_shape(lambda k: lora.init_adapters(cfg, spec, k), jax.random.key(seed))
    rng = np.random.default_rng(seed)
    out = {}
    for t in spec.targets:
        a, b = shapes[t]["a"].shape, shapes[t]["b"].shape
        bound = 1 / np.sqrt(np.prod(a[1:-1]))
        out[t] = {"a": jnp.asarray(rng.uniform(-bound, bound, a), jnp.float32),
                  "b": jnp.asarray(b_scale * rng.standard_normal(b), jnp.float32)}
    return out


@pytest.mark.parametrize("family", ["llada", "dream"])
def test_fresh_adapters_leave_the_model_unchanged(family):
    cfg, base = base_model(family)
    ad = fresh_adapters(cfg, SPEC)
    assert all(not np.any(np.asarray(v["b"])) for v in ad.values()) and all(np.any(np.asarray(v["a"])) for v in ad.values())
    batch = tiny_batch()
    ids, mask = jnp.asarray(batch["input_ids"]), jnp.asarray(batch["attention_mask"])
    # x W + s (x A) 0 adds exact zeros to the model core's own operations: bitwise equal.
    np.testing.assert_array_equal(np.asarray(lora_hidden(cfg, SPEC)(base, ad, ids, mask)),
                                  np.asarray(core_hidden(cfg)(base, ids, mask)))
    merged = merged_weights(cfg, SPEC)(base, ad)
    for a, b in zip(jax.tree.leaves(merged), jax.tree.leaves(base)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_low_rank_forward_equals_merged_weights():
    """x W + s (x A) B (never forming W') equals the model core run on W' = W + s A B; float32,
    different summation order: rtol 1e-5."""
    cfg, base = base_model("dream")
    ad = random_adapters(cfg, SPEC)
    batch = tiny_batch()
    ids, mask = jnp.asarray(batch["input_ids"]), jnp.asarray(batch["attention_mask"])
    h = lora_hidden(cfg, SPEC)(base, ad, ids, mask)
    core = core_hidden(cfg)
    h_merged = core(merged_weights(cfg, SPEC)(base, ad), ids, mask)
    h_base = core(base, ids, mask)
    assert np.abs(np.asarray(h_merged) - np.asarray(h_base)).max() > 0.1  # the adapters do change the model
    np.testing.assert_allclose(np.asarray(h), np.asarray(h_merged), rtol=1e-5, atol=1e-5)


@pytest.fixture(scope="module")
def lora_case():
    cfg, base = base_model("dream")
    spec = lora.LoraSpec(rank=4, alpha=8.0, targets=("q", "k", "o", "up", "down"))
    ad = random_adapters(cfg, spec)
    batch = tiny_batch()
    separate = loss_and_grads(cfg, ad, base, batch, lora=spec)
    return cfg, spec, base, ad, batch, separate


def test_adapter_gradients_follow_from_the_dense_gradient(lora_case):
    """Independent computation: the plain (full-parameter) train loss at W' = W + s A B with the
    base as anchor gives dL/dW'; the chain rule gives dL/dA = s dL/dW' B^T and dL/dB = s A^T dL/dW'.
    Both paths are float32 with different summation orders: rtol 1e-4, atol 1e-4 x max|grad|."""
    cfg, spec, base, ad, batch, (loss, aux, grads) = lora_case
    merged = merged_weights(cfg, spec)(base, ad)
    dense_loss, dense_aux, dense = loss_and_grads(cfg, merged, base, batch)
    np.testing.assert_allclose(float(loss), float(dense_loss), rtol=1e-5)
    assert_trees_close(aux, dense_aux, 1e-5, 1e-6, "aux")
    for name in spec.targets:  # the chain rule in NumPy float64 (no small programs to compile)
        a, b = np.asarray(ad[name]["a"], np.float64), np.asarray(ad[name]["b"], np.float64)
        gw = np.asarray(dense["layers"][name]["kernel"], np.float64)
        n_in = a.ndim - 2
        ins, outs = "abcd"[:n_in], "efgh"[: b.ndim - 2]
        expect_a = spec.scale * np.einsum(f"l{ins}{outs},lr{outs}->l{ins}r", gw, b)
        expect_b = spec.scale * np.einsum(f"l{ins}r,l{ins}{outs}->lr{outs}", a, gw)
        for got, want, which in ((grads[name]["a"], expect_a, "a"), (grads[name]["b"], expect_b, "b")):
            scale = float(np.max(np.abs(want)))
            assert scale > 0, f"{name}/{which}: zero gradient"
            np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-4, atol=1e-4 * scale,
                                       err_msg=f"{name}/{which}")
    assert set(grads) == set(spec.targets)  # the base gets no gradient: it is the anchor argument


def test_fused_anchor_pass_matches_separate_passes(lora_case):
    """One layer stack for both MDU passes computes the same float32 operations as two: rtol 1e-5
    (XLA may fuse the two programs differently)."""
    cfg, spec, base, ad, batch, (loss, aux, grads) = lora_case
    f_loss, f_aux, f_grads = loss_and_grads(cfg, ad, base, batch, lora=spec, fuse_anchor_pass=True)
    assert abs(float(f_loss) - float(loss)) <= 1e-5 * abs(float(loss))
    assert_trees_close(f_aux, aux, 1e-5, 1e-6, "aux")
    assert_trees_close(f_grads, grads, 1e-5, 1e-6, "adapter grads")


def test_paired_stack_anchor_output_is_the_base_model_without_gradient():
    cfg, base = base_model("llada")
    ad = random_adapters(cfg, SPEC)
    batch = tiny_batch()
    ids, mask = jnp.asarray(batch["input_ids"]), jnp.asarray(batch["attention_mask"])
    other = jnp.asarray(np.where(batch["maskable"], cfg.mask_token_id, batch["input_ids"]))
    paired = jax.jit(lambda a: lora.paired_hidden_states(cfg, base, a, SPEC, ids, other, mask))
    h_cond, h_anchor = paired(ad)
    # Same operations as the single-pass stacks, so equal to float32 rounding of fusion choices.
    np.testing.assert_allclose(np.asarray(h_anchor), np.asarray(core_hidden(cfg)(base, other, mask)),
                               rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(np.asarray(h_cond), np.asarray(lora_hidden(cfg, SPEC)(base, ad, ids, mask)),
                               rtol=1e-6, atol=1e-6)
    g = jax.jit(jax.grad(lambda a: jnp.sum(paired(a)[1])))(ad)
    assert all(not np.any(np.asarray(x)) for x in jax.tree.leaves(g))


def test_spec_and_config_errors_name_the_field(tmp_path):
    with pytest.raises(ValueError, match="lora rank"):
        lora.LoraSpec(rank=0)
    with pytest.raises(ValueError, match="lora targets"):
        lora.LoraSpec(rank=2, targets=("q", "lm_head"))
    base = {"model": {"path": str(tmp_path)}, "objective": {"method": "mdu"}}
    with pytest.raises(ConfigKeyError, match="model.fuse_anchor_pass"):
        load_config(base=copy.deepcopy(base) | {"model": {"path": str(tmp_path), "fuse_anchor_pass": True}})
    with pytest.raises(ConfigKeyError, match="model.lora_targets"):
        load_config(base={"model": {"path": str(tmp_path), "lora_rank": 4, "lora_targets": ["qq"]}})
    with pytest.raises(ConfigKeyError, match="only the 'mdu' method"):
        load_config(base={"model": {"path": str(tmp_path), "lora_rank": 4, "fuse_anchor_pass": True},
                          "objective": {"method": "npo"}})


@pytest.mark.slow
def test_lora_run_trains_only_the_targeted_projections(tmp_path):
    from mdu_jax.checkpoints import load_pretrained
    from mdu_jax.training import run
    from tests.training.helpers import setup_run

    data = setup_run(tmp_path, "llada")
    data["model"].update(lora_rank=4, lora_alpha=8.0, lora_targets=["q", "v", "down"], fuse_anchor_pass=True)
    data.update(max_steps=2, output_dir=str(tmp_path / "run"))
    data["optim"]["lr"] = 1e-2
    res = run(load_config(base=data), progress=False)
    assert len(res.metrics) == 2 and all(np.isfinite(m["loss"]) for m in res.metrics)
    _, base, _ = load_pretrained(data["model"]["path"], tokenizer=False)
    final = jax.device_get(res.params)
    for path, x in jax.tree_util.tree_leaves_with_path(final):
        keys = tuple(k.key for k in path)
        ref = base
        for k in keys:
            ref = ref[k]
        if keys[0] == "layers" and keys[1] in ("q", "v", "down") and keys[2] == "kernel":
            assert not np.allclose(np.asarray(x), np.asarray(ref)), f"{keys} did not train"
        else:
            np.testing.assert_array_equal(np.asarray(x), np.asarray(ref), err_msg=str(keys))
    # The exported final folder holds the merged model.
    _, exported, _ = load_pretrained(res.final_dir, tokenizer=False)
    for a, b in zip(jax.tree.leaves(exported), jax.tree.leaves(final)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
