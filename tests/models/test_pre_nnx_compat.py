"""The NNX models keep the previous version's parameter tree: the pure-dict view of their Params has
the names, stacking, shapes and dtypes of the functional version (commit 541a937), and the run
checkpoints, anchors and converted folders that version wrote restore and compute what it computed.

The fixture in ``data/pre_nnx/`` was written by ``data/write_pre_nnx_fixture.py`` at that commit.
"""

import json
import pathlib
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import mdu_jax as mj
from mdu_jax.checkpoints import load_pretrained
from mdu_jax.models import lora
from mdu_jax.models.params import flatten_paths
from mdu_jax.models.transformer import Transformer
from mdu_jax.training.checkpointing import RunCheckpointer, restore_anchor
from mdu_jax.training.config import OptimSection
from mdu_jax.training.optimizer import make_optimizer
from mdu_jax.training.state import init_state
from tests.models.data.write_pre_nnx_fixture import SPEC, checksums, micro_config, tiny_config

DATA = pathlib.Path(__file__).parent / "data" / "pre_nnx"
CASES = {"llada": tiny_config("llada"), "dream": tiny_config("dream"),
         "llada_tied_bf16": tiny_config("llada", tie_word_embeddings=True, param_dtype="bfloat16")}


@pytest.fixture(scope="module")
def old():
    with np.load(DATA / "values.npz") as f:
        return dict(f)


def layout(tree) -> dict[str, list]:
    return {"/".join(p): [list(x.shape), str(x.dtype)] for p, x in flatten_paths(tree).items()}


@pytest.mark.parametrize("case", sorted(CASES))
def test_pure_dict_of_the_nnx_params_is_the_previous_tree(case):
    expected = json.loads((DATA / "structure.json").read_text())[case]
    cfg = CASES[case]
    model = nnx.eval_shape(lambda: Transformer(cfg, rngs=nnx.Rngs(0)))
    assert layout(nnx.to_pure_dict(nnx.state(model, nnx.Param))) == expected
    assert layout(jax.eval_shape(lambda k: mj.init_params(cfg, k), jax.random.key(0))) == expected
    assert layout(mj.abstract_params(cfg)) == expected


def copied(tmp_path, name: str) -> pathlib.Path:
    """A writable copy of a fixture folder (restoring must never touch the committed files)."""
    return pathlib.Path(shutil.copytree(DATA / name, tmp_path / name))


def abstract_state(params_abstract, seed: int = 7):
    """The train state `training.run` would restore into, as ShapeDtypeStructs on the first device."""
    tx, _ = make_optimizer(OptimSection(lr=1e-2, warmup_ratio=0.0, schedule="constant"), 10)
    device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    state = jax.eval_shape(lambda p: init_state(p, tx, seed), params_abstract)
    return jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=device), state)


def assert_checksums(tree, prefix: str, old: dict):
    got = checksums(tree, prefix)
    assert got, prefix
    for key, value in got.items():
        np.testing.assert_array_equal(value, old[key], err_msg=key)
    assert set(got) == {k for k in old if k.startswith(prefix)}


def micro_inputs(old):
    return jnp.asarray(old["batch/input_ids"]), jnp.asarray(old["batch/attention_mask"])


@pytest.mark.parametrize("family", ["llada", "dream"])
def test_run_checkpoint_and_anchor_of_the_previous_version_restore(tmp_path, old, family):
    """The restored params compute the previous version's logits. The float32 programs are the same
    (identical bits on the machine that wrote the fixture); 1e-5 leaves room for another CPU's
    vectorisation, while a change of the network moves these logits by far more (measured: RoPE theta
    doubled 5e-4, a k bias or a norm scale reset 4e-2, the padding mask dropped 6e-2)."""
    cfg = micro_config(family)
    run = copied(tmp_path, f"run_{family}")
    ckpt = RunCheckpointer(str(run), keep=1, async_save=False)
    try:
        assert ckpt.latest_step() == 1
        state, meta = ckpt.restore(1, abstract_state(mj.abstract_params(cfg)))
    finally:
        ckpt.close()
    assert meta["method"] == "mdu"
    assert_checksums(state, f"{family}/state/", old)
    device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    anchor = restore_anchor(str(run), jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=device),
                                                   mj.abstract_params(cfg)))
    assert_checksums(anchor, f"{family}/params/", old)
    ids, mask = micro_inputs(old)
    np.testing.assert_allclose(np.asarray(jax.jit(lambda p: mj.forward(cfg, p, ids, mask))(anchor)),
                               old[f"{family}/logits"], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.asarray(jax.jit(lambda p: mj.hidden_states(cfg, p, ids, mask))(anchor)),
                               old[f"{family}/hidden"], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("family", ["llada", "dream"])
def test_converted_checkpoint_of_the_previous_version_loads(tmp_path, old, family):
    cfg, params, _ = load_pretrained(copied(tmp_path, f"converted_{family}"), tokenizer=False)
    assert cfg.replace(bos_token_id=None) == micro_config(family)  # Dream's config.json names eos as bos
    assert_checksums(params, f"{family}/params/", old)
    ids, mask = micro_inputs(old)
    np.testing.assert_allclose(np.asarray(jax.jit(lambda p: mj.forward(cfg, p, ids, mask))(params)),
                               old[f"{family}/logits"], rtol=1e-5, atol=1e-5)


def test_lora_run_checkpoint_of_the_previous_version_restores(tmp_path, old):
    """Adapters keep their tree ({target: {a, b}}); the LoRA forward matches the previous one (1e-5,
    as above)."""
    cfg, spec = micro_config("dream"), lora.LoraSpec(**SPEC)
    ckpt = RunCheckpointer(str(copied(tmp_path, "run_lora")), keep=1, async_save=False)
    try:
        state, _ = ckpt.restore(1, abstract_state(lora.abstract_adapters(cfg, spec)))
    finally:
        ckpt.close()
    assert_checksums(state, "lora/state/", old)
    device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    base = restore_anchor(str(copied(tmp_path, "run_dream")),
                          jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=device),
                                       mj.abstract_params(cfg)))
    ids, mask = micro_inputs(old)
    hidden = jax.jit(lambda b, a: lora.hidden_states(cfg, b, a, spec, ids, mask))(base, state["params"])
    np.testing.assert_allclose(np.asarray(hidden), old["lora/hidden"], rtol=1e-5, atol=1e-5)
