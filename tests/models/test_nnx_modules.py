"""The Flax NNX modules: stacked creation, sharding metadata, the functional API as a view of the
module, and the LoRA wrapper's trainable filter."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import mdu_jax as mj
from mdu_jax import parallel
from mdu_jax.models import lora
from mdu_jax.models.params import flatten_paths
from mdu_jax.models.specs import param_specs
from mdu_jax.models.transformer import Transformer, model_from_params
from tests.training.loss_helpers import tiny_batch, tiny_config


def axes_of(state) -> dict:
    return flatten_paths(nnx.to_pure_dict(state, lambda v: v.out_sharding))


@pytest.mark.parametrize("family", ["llada", "dream"])
def test_every_param_carries_the_logical_axes_of_the_table(family):
    cfg = tiny_config(family)
    model = nnx.eval_shape(lambda: Transformer(cfg, rngs=nnx.Rngs(0)))
    table = {p: s.axes for p, s in flatten_paths(param_specs(cfg)).items()}
    assert axes_of(nnx.state(model, nnx.Param)) == table
    assert flatten_paths(mj.logical_axes(cfg)) == table
    spec = lora.LoraSpec(rank=3, targets=("q", "o", "down"))
    wrapped = nnx.eval_shape(lambda: lora.LoraTransformer(Transformer(cfg, rngs=nnx.Rngs(0)), spec, rngs=nnx.Rngs(1)))
    adapters = axes_of(nnx.state(wrapped, lora.TRAINABLE))
    assert adapters == {("adapters", "q", "a"): ("layers", "embed", "lora_rank"),
                        ("adapters", "q", "b"): ("layers", "lora_rank", "heads", "head_dim"),
                        ("adapters", "o", "a"): ("layers", "heads", "head_dim", "lora_rank"),
                        ("adapters", "o", "b"): ("layers", "lora_rank", "embed"),
                        ("adapters", "down", "a"): ("layers", "mlp", "lora_rank"),
                        ("adapters", "down", "b"): ("layers", "lora_rank", "embed")}


def test_metadata_resolves_through_the_rule_table_onto_a_mesh():
    cfg = tiny_config("dream")  # 4 heads, 2 kv heads, D=32: tensor=2 and fsdp=2 divide them
    mesh = parallel.make_mesh({"data": 1, "fsdp": 2, "tensor": 2}, jax.devices()[:4])
    shardings = flatten_paths(parallel.param_shardings(mj.logical_axes(cfg), mj.abstract_params(cfg), mesh))
    P = jax.sharding.PartitionSpec
    assert shardings[("layers", "q", "kernel")].spec == P(None, "fsdp", "tensor", None)
    assert shardings[("layers", "o", "kernel")].spec == P(None, "tensor", None, "fsdp")
    assert shardings[("embed", "embedding")].spec == P("tensor", "fsdp")
    assert shardings[("layers", "attn_norm", "scale")].spec == P(None, None)


def test_layers_are_initialised_from_split_keys():
    """Each stacked layer draws its own N(0, 0.02) weights; norms are ones and biases zeros. The
    std estimate from 2 x 32 x 32 draws per layer is within 10% of 0.02 (its sampling error is ~1.6%)."""
    cfg = tiny_config("dream")
    params = jax.jit(lambda k: mj.init_params(cfg, k))(jax.random.key(0))
    q = np.asarray(params["layers"]["q"]["kernel"])
    assert not np.allclose(q[0], q[1])
    for layer in q:
        assert abs(layer.std() / 0.02 - 1) < 0.1
    np.testing.assert_array_equal(np.asarray(params["layers"]["attn_norm"]["scale"]), 1.0)
    np.testing.assert_array_equal(np.asarray(params["layers"]["q"]["bias"]), 0.0)
    again = jax.jit(lambda k: mj.init_params(cfg, k))(jax.random.key(0))
    for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(again)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


@pytest.mark.parametrize("family", ["llada", "dream"])
def test_the_functional_api_is_the_module_holding_the_params(family):
    cfg = tiny_config(family)
    model = Transformer(cfg, rngs=nnx.Rngs(3))
    params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
    batch = tiny_batch()
    ids, mask = jnp.asarray(batch["input_ids"]), jnp.asarray(batch["attention_mask"])
    graphdef, state = nnx.split(model)
    by_module = jax.jit(lambda s: nnx.merge(graphdef, s)(ids, mask))(state)
    by_function = jax.jit(lambda p: mj.forward(cfg, p, ids, mask))(params)
    np.testing.assert_array_equal(np.asarray(by_module), np.asarray(by_function))
    np.testing.assert_array_equal(np.asarray(model_from_params(cfg, params).lm_head_kernel()),
                                  np.asarray(params["lm_head"]["kernel"]))


def test_a_wrong_params_tree_is_named():
    cfg = tiny_config("llada")
    params = mj.abstract_params(cfg)
    del params["layers"]["q"]
    with pytest.raises(ValueError, match=r"missing \[\"\['layers'\]\['q'\]\['kernel'\]\"\]"):
        jax.eval_shape(lambda p: mj.forward(cfg, p, jnp.ones((1, 4), jnp.int32)), params)


def test_lora_wrapper_trains_only_the_adapters_by_filter():
    """One optimizer step on the NNX wrapper with ``wrt=TRAINABLE`` changes the adapters only, and
    the wrapper's forward is the functional LoRA forward on the same weights."""
    cfg = tiny_config("llada")
    spec = lora.LoraSpec(rank=2, alpha=4.0, targets=("q", "up"))
    model = lora.LoraTransformer(Transformer(cfg, rngs=nnx.Rngs(0)), spec, rngs=nnx.Rngs(1))
    trainable, frozen = nnx.split(model, lora.TRAINABLE, lora.FROZEN)[1:]
    assert set(nnx.to_pure_dict(trainable)) == {"adapters"} and set(nnx.to_pure_dict(frozen)) == {"base"}
    assert jax.tree.map(np.shape, nnx.to_pure_dict(trainable)["adapters"]) == jax.tree.map(
        tuple, lora.adapter_shapes(cfg, spec), is_leaf=lambda x: isinstance(x, tuple))
    batch = tiny_batch()
    ids, mask = jnp.asarray(batch["input_ids"]), jnp.asarray(batch["attention_mask"])
    optimizer = nnx.Optimizer(model, optax.sgd(0.1), wrt=lora.TRAINABLE)
    graphdef, state = nnx.split((model, optimizer))

    @jax.jit
    def step(state):
        model, optimizer = nnx.merge(graphdef, state)
        grads = nnx.grad(lambda m: jnp.mean(m(ids, mask) ** 2), argnums=nnx.DiffState(0, lora.TRAINABLE))(model)
        optimizer.update(model, grads)
        return nnx.state((model, optimizer))

    before = nnx.to_pure_dict(nnx.state(model, nnx.Param))
    nnx.update((model, optimizer), step(state))
    after = nnx.to_pure_dict(nnx.state(model, nnx.Param))
    for path, x in flatten_paths(after).items():
        changed = not np.array_equal(np.asarray(x), np.asarray(flatten_paths(before)[path]))
        assert changed == (path[0] == "adapters" and path[-1] == "b"), path  # B was zero: only its grad is non-zero
    functional = jax.jit(lambda b, a: lora.hidden_states(cfg, b, a, spec, ids, mask))(after["base"], after["adapters"])
    graphdef, state = nnx.split(model)
    by_module = jax.jit(lambda s: nnx.merge(graphdef, s).hidden_states(ids, mask))(state)
    np.testing.assert_array_equal(np.asarray(by_module), np.asarray(functional))
