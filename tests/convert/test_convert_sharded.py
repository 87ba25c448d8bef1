"""Acceptance 5: a converted checkpoint restores straight into FSDP shardings on 8 CPU devices."""

import jax
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

import mdu_jax as mj
from checkpoints_convert import import_checkpoint
from mdu_jax.models.params import flatten_paths
from tests.fixtures import write_hf_checkpoint


def fsdp_mesh():
    assert jax.device_count() == 8, "tests/conftest.py provides 8 fake CPU devices"
    return Mesh(np.array(jax.devices()).reshape(8), ("fsdp",))


def fsdp_spec(shape, n=8):
    """Shards the largest axis divisible by n; replicates when none is."""
    axes = [a for a in range(len(shape)) if shape[a] % n == 0]
    if not axes:
        return P()
    axis = max(axes, key=lambda a: shape[a])
    return P(*[("fsdp" if a == axis else None) for a in range(len(shape))])


@pytest.mark.parametrize("family,stored,wanted", [("llada", "bfloat16", "bfloat16"), ("dream", "float32", "float32"),
                                                  ("dream", "bfloat16", "float32")])
def test_restore_into_fsdp_shardings(tmp_path, family, stored, wanted):
    write_hf_checkpoint(tmp_path / "hf", family, dtype=stored, shards=3, seed=31, tokenizer=False)
    import_checkpoint(tmp_path / "hf", tmp_path / "ckpt", progress=False)
    mesh = fsdp_mesh()
    cfg = mj.ModelConfig.from_hf(tmp_path / "hf")
    shardings = jax.tree.map(lambda a: NamedSharding(mesh, fsdp_spec(a.shape)), mj.abstract_params(cfg))

    cfg_s, sharded, _ = mj.load_pretrained(tmp_path / "ckpt", shardings=shardings, param_dtype=wanted)
    # Reference: the HF folder loaded onto one device, in the stored dtype.
    _, whole, _ = mj.load_pretrained(tmp_path / "hf", param_dtype=stored)
    assert cfg_s.param_dtype == wanted
    flat_s, flat_w, flat_sh = flatten_paths(sharded), flatten_paths(whole), flatten_paths(shardings)
    assert sorted(flat_s) == sorted(flat_w)
    n_sharded = 0
    for path, array in flat_s.items():
        want = flat_sh[path]
        assert array.sharding == want, path
        assert array.dtype == np.dtype(wanted), path
        spec = want.spec
        for shard in array.addressable_shards:  # each device holds exactly its slice
            expected = tuple(d // 8 if (i < len(spec) and spec[i] == "fsdp") else d
                             for i, d in enumerate(array.shape))
            assert shard.data.shape == expected, path
        n_sharded += any(s == "fsdp" for s in spec)
        np.testing.assert_array_equal(np.asarray(array), np.asarray(flat_w[path]).astype(wanted), err_msg=str(path))
    assert n_sharded == len(flat_s)  # every param of the tiny config is split 8 ways


def test_shardings_given_as_a_function_of_the_path(tmp_path):
    write_hf_checkpoint(tmp_path / "hf", "llada", dtype="float32", seed=32, tokenizer=False)
    import_checkpoint(tmp_path / "hf", tmp_path / "ckpt", progress=False)
    mesh = fsdp_mesh()
    cfg = mj.ModelConfig.from_hf(tmp_path / "hf")
    shapes = flatten_paths(mj.abstract_params(cfg))
    _, params, _ = mj.load_pretrained(tmp_path / "ckpt",
                                      shardings=lambda path: NamedSharding(mesh, fsdp_spec(shapes[path].shape)))
    emb = params["embed"]["embedding"]
    assert emb.sharding.spec == P("fsdp", None) and emb.addressable_shards[0].data.shape == (12, 32)


def test_sharded_params_export_to_the_original_tensors(tmp_path):
    import torch

    from checkpoints_convert import export_params
    from tests.convert.convert_helpers import load_hf_tensors

    _, sd = write_hf_checkpoint(tmp_path / "hf", "dream", dtype="bfloat16", seed=33, tokenizer=False)
    import_checkpoint(tmp_path / "hf", tmp_path / "ckpt", progress=False)
    mesh = fsdp_mesh()
    cfg = mj.ModelConfig.from_hf(tmp_path / "hf")
    shardings = jax.tree.map(lambda a: NamedSharding(mesh, fsdp_spec(a.shape)), mj.abstract_params(cfg))
    cfg, params, _ = mj.load_pretrained(tmp_path / "ckpt", shardings=shardings)
    export_params(cfg, params, tmp_path / "out", like=tmp_path / "hf", progress=False)
    out = load_hf_tensors(tmp_path / "out")
    assert sorted(out) == sorted(sd) and all(torch.equal(out[n], sd[n]) for n in sd)
