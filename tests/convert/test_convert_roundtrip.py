"""Acceptance 1: HF -> mdu_jax -> HF is bit-exact, and the result loads in transformers."""

import json
import os

import jax
import numpy as np
import pytest
import torch

import mdu_jax as mj
from checkpoints_convert import export_checkpoint, import_checkpoint
from tests.convert.convert_helpers import add_remote_code, leftovers, load_hf_tensors
from tests.fixtures import save_state_dict, write_hf_checkpoint
from tests.models.reference_torch import reference_logits, reference_model

FP32_TOL = 1e-4  # mdu_jax vs transformers in fp32, as in tests/models/test_parity.py


@pytest.mark.parametrize("family", ["llada", "dream"])
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_import_export_is_bit_exact_and_loads_in_transformers(tmp_path, family, dtype):
    cfg_dict, sd = write_hf_checkpoint(tmp_path / "hf", family, dtype=dtype, shards=3, seed=7)
    assert len([n for n in os.listdir(tmp_path / "hf") if n.endswith(".safetensors")]) == 3
    import_checkpoint(tmp_path / "hf", tmp_path / "ckpt", progress=False)
    # 4 KB shards give many files and exercise the index.
    export_checkpoint(tmp_path / "ckpt", tmp_path / "out", max_shard_size="4KB", progress=False)

    out = load_hf_tensors(tmp_path / "out")
    assert sorted(out) == sorted(sd)
    for name, original in sd.items():
        assert out[name].dtype == original.dtype, name
        assert out[name].shape == original.shape, name
        # bit-exact, not just equal as numbers (-0.0 == 0.0, NaN != NaN)
        assert out[name].view(torch.int16 if dtype == "bfloat16" else torch.int32).equal(
            original.view(torch.int16 if dtype == "bfloat16" else torch.int32)), name

    with open(tmp_path / "out" / "model.safetensors.index.json") as f:
        index = json.load(f)
    files = set(index["weight_map"].values())
    assert len(files) > 1 and all(os.path.isfile(tmp_path / "out" / n) for n in files)
    assert sorted(index["weight_map"]) == sorted(sd)
    assert index["metadata"]["total_size"] == sum(t.numel() * t.element_size() for t in sd.values())
    for shard in files:  # at most 4 KB of data per file, unless one tensor alone is larger
        sizes = [sd[n].numel() * sd[n].element_size() for n, f in index["weight_map"].items() if f == shard]
        assert sum(sizes) <= 4000 or len(sizes) == 1, (shard, sizes)
    with open(tmp_path / "hf" / "config.json") as a, open(tmp_path / "out" / "config.json") as b:
        assert json.load(a) == json.load(b)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        assert (tmp_path / "hf" / name).read_bytes() == (tmp_path / "out" / name).read_bytes()
    assert leftovers(tmp_path) == []

    ids = np.random.default_rng(0).integers(2, 90, size=(2, 9))
    before = reference_logits(reference_model(cfg_dict, sd), ids)
    with open(tmp_path / "out" / "config.json") as f:
        after = reference_logits(reference_model(json.load(f), out), ids)
    np.testing.assert_array_equal(after, before)


def test_dream_export_loads_through_transformers_own_sharded_loader(tmp_path):
    from transformers import Qwen2ForCausalLM

    cfg_dict, sd = write_hf_checkpoint(tmp_path / "hf", "dream", dtype="float32", shards=3, seed=1)
    import_checkpoint(tmp_path / "hf", tmp_path / "ckpt", progress=False)
    export_checkpoint(tmp_path / "ckpt", tmp_path / "out", max_shard_size="5KB", progress=False)
    ref = reference_model(cfg_dict, sd)
    # Dream's tensor names are Qwen2's: from_pretrained reads our index.json and shards itself.
    loaded = Qwen2ForCausalLM.from_pretrained(tmp_path / "out", config=ref.config).eval()
    ids = np.random.default_rng(1).integers(2, 90, size=(2, 8))
    np.testing.assert_array_equal(reference_logits(loaded, ids), reference_logits(ref, ids))

    cfg, params, _ = mj.load_pretrained(tmp_path / "ckpt")
    ours = np.asarray(mj.forward(cfg, params, ids))
    shifted = np.concatenate([reference_logits(ref, ids)[:, :1], reference_logits(ref, ids)[:, :-1]], axis=1)
    assert np.abs(ours - shifted).max() <= FP32_TOL


def test_converted_checkpoint_gives_the_same_logits_as_the_hf_folder(tmp_path):
    write_hf_checkpoint(tmp_path / "hf", "llada", dtype="float32", shards=3, seed=2, tokenizer=False)
    import_checkpoint(tmp_path / "hf", tmp_path / "ckpt", progress=False)
    cfg_a, params_a, _ = mj.load_pretrained(tmp_path / "hf")
    cfg_b, params_b, _ = mj.load_pretrained(tmp_path / "ckpt")
    assert cfg_a == cfg_b
    logits = jax.jit(lambda p: mj.forward(cfg_a, p, np.arange(2, 12)[None]))
    np.testing.assert_array_equal(np.asarray(logits(params_b)), np.asarray(logits(params_a)))


def test_like_carries_remote_code_and_trust_remote_code_loading_works(tmp_path, monkeypatch):
    import transformers
    import transformers.dynamic_module_utils as dmu

    _, sd = write_hf_checkpoint(tmp_path / "hf", "llada", dtype="bfloat16", shards=3, seed=4)
    add_remote_code(tmp_path / "hf")
    import_checkpoint(tmp_path / "hf", tmp_path / "ckpt", progress=False)
    # Import keeps every non-weight file too, so export works without --like as well.
    for name in ("modeling_llada.py", "configuration_llada.py", "README.md", "generation_config.json"):
        assert (tmp_path / "ckpt" / name).read_bytes() == (tmp_path / "hf" / name).read_bytes()
        os.remove(tmp_path / "ckpt" / name)
    export_checkpoint(tmp_path / "ckpt", tmp_path / "out", like=tmp_path / "hf", max_shard_size="6KB",
                      progress=False)
    for name in ("modeling_llada.py", "configuration_llada.py", "README.md", "generation_config.json",
                 "config.json", "tokenizer.json"):
        assert (tmp_path / "out" / name).read_bytes() == (tmp_path / "hf" / name).read_bytes(), name

    monkeypatch.setattr(dmu, "HF_MODULES_CACHE", str(tmp_path / "modules"))
    model = transformers.AutoModel.from_pretrained(tmp_path / "out", trust_remote_code=True, dtype=torch.bfloat16)
    state = model.state_dict()
    assert type(model).__name__ == "LLaDAModelLM" and sorted(state) == sorted(sd)
    assert all(torch.equal(state[n], sd[n]) for n in sd)


def test_export_dtype_option_casts_every_tensor_and_updates_the_config(tmp_path):
    _, sd = write_hf_checkpoint(tmp_path / "hf", "dream", dtype="float32", seed=5, tokenizer=False)
    import_checkpoint(tmp_path / "hf", tmp_path / "ckpt", dtype="bf16", progress=False)
    cfg, params, _ = mj.load_pretrained(tmp_path / "ckpt")
    assert cfg.param_dtype == "bfloat16" and params["embed"]["embedding"].dtype == np.dtype("bfloat16")
    export_checkpoint(tmp_path / "ckpt", tmp_path / "bf16", dtype="bf16", progress=False)
    out = load_hf_tensors(tmp_path / "bf16")
    assert all(out[n].dtype == torch.bfloat16 and torch.equal(out[n], sd[n].to(torch.bfloat16)) for n in sd)
    with open(tmp_path / "bf16" / "config.json") as f:
        assert json.load(f)["torch_dtype"] == "bfloat16"
    # Without --dtype the recorded source dtype (fp32) comes back: bf16-rounded values, fp32 storage.
    export_checkpoint(tmp_path / "ckpt", tmp_path / "fp32", progress=False)
    out = load_hf_tensors(tmp_path / "fp32")
    assert all(out[n].dtype == torch.float32 and torch.equal(out[n], sd[n].to(torch.bfloat16).float()) for n in sd)


def test_all_zero_tensors_survive_import(tmp_path):
    """Zero tensors (fresh Dream biases) equal the zarr fill value and must still be stored."""
    cfg_dict, sd = write_hf_checkpoint(tmp_path / "hf", "dream", tokenizer=False)
    for name in sd:
        if name.endswith(".bias"):
            sd[name] = torch.zeros_like(sd[name])
    os.remove(tmp_path / "hf" / "model.safetensors")
    save_state_dict(str(tmp_path / "hf"), sd)
    import_checkpoint(tmp_path / "hf", tmp_path / "ckpt", progress=False)
    _, params, _ = mj.load_pretrained(tmp_path / "ckpt")
    assert not np.asarray(params["layers"]["k"]["bias"]).any()
    assert np.asarray(params["layers"]["q"]["kernel"]).any()
