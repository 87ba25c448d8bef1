"""Acceptance 4: every bad input is refused with a message naming file and tensor, and no --dst."""

import json
import os
import shutil

import ml_dtypes
import numpy as np
import pytest
from safetensors.torch import save_file

from checkpoints_convert import ConversionError, export_checkpoint, export_params, import_checkpoint
from checkpoints_convert.__main__ import main
from mdu_jax.checkpoints import orbax_params as ckpt
from mdu_jax.models.config import ConfigError
from tests.convert.convert_helpers import leftovers
from tests.fixtures import write_hf_checkpoint


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """A sharded tiny LLaDA HF folder, a single-file one, and the converted checkpoint of the first."""
    root = tmp_path_factory.mktemp("base")
    _, sd = write_hf_checkpoint(root / "hf3", "llada", dtype="bfloat16", shards=3, seed=21, tokenizer=False)
    write_hf_checkpoint(root / "hf1", "llada", dtype="float32", seed=21, tokenizer=False)
    import_checkpoint(root / "hf3", root / "ckpt", progress=False)
    return root, sd


def copy(base, name, tmp_path):
    shutil.copytree(base[0] / name, tmp_path / name)
    return tmp_path / name


def run_cli(argv, capsys):
    code = main([str(a) for a in argv])
    return code, capsys.readouterr().err


def refused(tmp_path, dst="dst"):
    """The destination was not created and nothing temporary was left beside it."""
    return not os.path.lexists(tmp_path / dst) and leftovers(tmp_path) == []


def edit_json(path, **changes):
    with open(path) as f:
        data = json.load(f)
    data.update(changes)
    with open(path, "w") as f:
        json.dump(data, f)


def rewrite_single(folder, sd):
    os.remove(folder / "model.safetensors")
    save_file(sd, str(folder / "model.safetensors"), metadata={"format": "pt"})


# ------------------------------------------------------------------ import


def test_import_unknown_model_type(base, tmp_path, capsys):
    src = copy(base, "hf1", tmp_path)
    edit_json(src / "config.json", model_type="gpt2")
    code, err = run_cli(["import", "--src", src, "--dst", tmp_path / "dst", "--no-progress"], capsys)
    assert code == 1
    assert f"{src / 'config.json'}: model_type: unknown 'gpt2'" in err
    assert refused(tmp_path)


def test_import_missing_tensor(base, tmp_path, capsys):
    src = copy(base, "hf1", tmp_path)
    from safetensors.torch import load_file

    sd = load_file(src / "model.safetensors")
    del sd["model.transformer.blocks.1.up_proj.weight"]
    rewrite_single(src, sd)
    code, err = run_cli(["import", "--src", src, "--dst", tmp_path / "dst"], capsys)
    assert code == 1 and "missing tensor 'model.transformer.blocks.1.up_proj.weight'" in err and str(src) in err
    assert refused(tmp_path)


def test_import_unexpected_tensor(base, tmp_path):
    src = copy(base, "hf1", tmp_path)
    from safetensors.torch import load_file
    import torch

    sd = load_file(src / "model.safetensors")
    sd["model.transformer.blocks.0.rotary.inv_freq"] = torch.ones(4)
    rewrite_single(src, sd)
    with pytest.raises(ckpt.CheckpointError, match=r"model\.safetensors: unexpected tensor "
                                                   r"'model\.transformer\.blocks\.0\.rotary\.inv_freq'"):
        import_checkpoint(src, tmp_path / "dst", progress=False)
    assert refused(tmp_path)


def test_import_shape_mismatch(base, tmp_path):
    src = copy(base, "hf1", tmp_path)
    from safetensors.torch import load_file

    sd = load_file(src / "model.safetensors")
    sd["model.transformer.blocks.0.k_proj.weight"] = sd["model.transformer.blocks.0.k_proj.weight"][:16].clone()
    rewrite_single(src, sd)
    with pytest.raises(ckpt.CheckpointError, match=r"model\.safetensors: tensor 'model\.transformer\.blocks\.0\."
                                                   r"k_proj\.weight' has shape \[16, 32\], expected \[32, 32\]"):
        import_checkpoint(src, tmp_path / "dst", progress=False)
    assert refused(tmp_path)


def test_import_dtype_mismatch(base, tmp_path):
    src = copy(base, "hf1", tmp_path)
    from safetensors.torch import load_file
    import torch

    sd = load_file(src / "model.safetensors")
    sd["model.transformer.ln_f.weight"] = torch.ones(32, dtype=torch.int32)
    rewrite_single(src, sd)
    with pytest.raises(ckpt.CheckpointError, match=r"model\.safetensors: tensor 'model\.transformer\.ln_f\.weight' "
                                                   r"has dtype I32, expected a floating-point dtype"):
        import_checkpoint(src, tmp_path / "dst", progress=False)
    assert refused(tmp_path)


def test_import_index_naming_a_missing_shard(base, tmp_path, capsys):
    src = copy(base, "hf3", tmp_path)
    os.remove(src / "model-00002-of-00003.safetensors")
    code, err = run_cli(["import", "--src", src, "--dst", tmp_path / "dst"], capsys)
    assert code == 1
    assert "model.safetensors.index.json: names shard 'model-00002-of-00003.safetensors', which does not exist" in err
    assert "model.transformer." in err  # ... and one tensor it should hold
    assert refused(tmp_path)


def test_import_missing_source_folder(tmp_path):
    with pytest.raises(ConversionError, match=r"nowhere: no such folder"):
        import_checkpoint(tmp_path / "nowhere", tmp_path / "dst", progress=False)
    assert refused(tmp_path)


def test_existing_destination_needs_overwrite(base, tmp_path, capsys):
    (tmp_path / "dst").mkdir()
    (tmp_path / "dst" / "keep.txt").write_text("mine")
    code, err = run_cli(["import", "--src", base[0] / "hf1", "--dst", tmp_path / "dst"], capsys)
    assert code == 1 and "dst: already exists; pass --overwrite" in err
    assert (tmp_path / "dst" / "keep.txt").read_text() == "mine"
    code, _ = run_cli(["import", "--src", base[0] / "hf1", "--dst", tmp_path / "dst", "--overwrite",
                       "--no-progress"], capsys)
    assert code == 0 and ckpt.is_converted_checkpoint(tmp_path / "dst")
    assert not (tmp_path / "dst" / "keep.txt").exists() and leftovers(tmp_path) == []


@pytest.mark.parametrize("error", [KeyboardInterrupt, OSError])
def test_interrupted_import_leaves_no_destination(base, tmp_path, monkeypatch, error):
    calls = []
    real_write = ckpt.ParamsWriter.write

    def failing_write(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 5:
            raise error("disk gone")
        return real_write(self, *args, **kwargs)

    monkeypatch.setattr(ckpt.ParamsWriter, "write", failing_write)
    with pytest.raises(error):
        import_checkpoint(base[0] / "hf3", tmp_path / "dst", progress=False)
    assert refused(tmp_path)
    # With --overwrite, an interrupted run leaves the previous checkpoint untouched.
    shutil.copytree(base[0] / "ckpt", tmp_path / "dst")
    before = sorted(os.listdir(tmp_path / "dst"))
    calls.clear()
    with pytest.raises(error):
        import_checkpoint(base[0] / "hf3", tmp_path / "dst", overwrite=True, progress=False)
    assert sorted(os.listdir(tmp_path / "dst")) == before and leftovers(tmp_path) == []


def test_destination_inside_the_source_is_refused(base, tmp_path):
    src = copy(base, "hf1", tmp_path)
    with pytest.raises(ConversionError, match="overlaps the source folder"):
        import_checkpoint(src, src / "converted", progress=False)
    assert not (src / "converted").exists()


# ------------------------------------------------------------------ export


def test_export_of_an_hf_folder_is_refused(base, tmp_path, capsys):
    code, err = run_cli(["export", "--src", base[0] / "hf1", "--dst", tmp_path / "dst"], capsys)
    assert code == 1 and "not an mdu_jax checkpoint (no mdu_jax.json)" in err
    assert refused(tmp_path)


def test_export_unknown_model_type(base, tmp_path):
    src = copy(base, "ckpt", tmp_path)
    edit_json(src / "config.json", model_type="mistral")
    with pytest.raises(ConfigError, match=rf"{src / 'config.json'}: model_type: unknown 'mistral'"):
        export_checkpoint(src, tmp_path / "dst", progress=False)
    assert refused(tmp_path)


def drop_param(folder, name):
    meta_path = folder / "params" / "_METADATA"
    meta = json.loads(meta_path.read_text())
    meta["tree_metadata"] = {k: v for k, v in meta["tree_metadata"].items()
                             if ".".join(e["key"] for e in v["key_metadata"]) != name}
    meta_path.write_text(json.dumps(meta))
    shutil.rmtree(folder / "params" / name)


def test_export_missing_parameter(base, tmp_path, capsys):
    src = copy(base, "ckpt", tmp_path)
    drop_param(src, "layers.up.kernel")
    code, err = run_cli(["export", "--src", src, "--dst", tmp_path / "dst"], capsys)
    assert code == 1 and f"{src / 'params'}: missing parameter 'layers/up/kernel'" in err
    assert refused(tmp_path)


def test_export_unreadable_parameter_array(base, tmp_path):
    src = copy(base, "ckpt", tmp_path)
    shutil.rmtree(src / "params" / "layers.v.kernel")
    with pytest.raises(ckpt.CheckpointError, match=r"layers\.v\.kernel: unreadable array of parameter 'layers/v/kernel'"):
        export_checkpoint(src, tmp_path / "dst", progress=False)
    assert refused(tmp_path)


def test_export_unexpected_parameter(base, tmp_path):
    src = copy(base, "ckpt", tmp_path)
    edit_json(src / "config.json", weight_tying=True)  # a tied model has no separate LM head
    with pytest.raises(ckpt.CheckpointError, match=r"params/lm_head\.kernel: unexpected parameter 'lm_head/kernel'"):
        export_checkpoint(src, tmp_path / "dst", progress=False)
    assert refused(tmp_path)


def test_export_shape_mismatch(base, tmp_path):
    src = copy(base, "ckpt", tmp_path)
    edit_json(src / "config.json", mlp_hidden_size=40)
    with pytest.raises(ckpt.CheckpointError, match=r"params/layers\.gate\.kernel: parameter 'layers/gate/kernel' "
                                                   r"has shape \[2, 32, 48\], expected \[2, 32, 40\]"):
        export_checkpoint(src, tmp_path / "dst", progress=False)
    assert refused(tmp_path)


def test_export_dtype_mismatch(base, tmp_path):
    src = copy(base, "ckpt", tmp_path)
    edit_json(src / "mdu_jax.json", param_dtype="float32")  # the arrays are bfloat16
    with pytest.raises(ckpt.CheckpointError, match=r"params/embed\.embedding: parameter 'embed/embedding' has "
                                                   r"dtype bfloat16, expected float32"):
        export_checkpoint(src, tmp_path / "dst", progress=False)
    assert refused(tmp_path)


def test_export_like_with_an_index_naming_a_missing_shard(base, tmp_path, capsys):
    like = copy(base, "hf3", tmp_path)
    os.remove(like / "model-00003-of-00003.safetensors")
    code, err = run_cli(["export", "--src", base[0] / "ckpt", "--dst", tmp_path / "dst", "--like", like], capsys)
    assert code == 1
    assert "model.safetensors.index.json: names shard 'model-00003-of-00003.safetensors', which does not exist" in err
    assert refused(tmp_path)


def test_export_like_of_another_architecture(base, tmp_path):
    like = tmp_path / "other"
    write_hf_checkpoint(like, "llada", tokenizer=False, n_layers=3)
    with pytest.raises(ConversionError, match=r"other/config\.json: describes a different model: num_layers is 3, "
                                              r"the exported params have 2"):
        export_checkpoint(base[0] / "ckpt", tmp_path / "dst", like=like, progress=False)
    assert refused(tmp_path)


def test_export_like_with_a_missing_tensor(base, tmp_path):
    like = copy(base, "hf1", tmp_path)
    from safetensors.torch import load_file

    sd = load_file(like / "model.safetensors")
    del sd["model.transformer.ln_f.weight"]
    rewrite_single(like, sd)
    with pytest.raises(ckpt.CheckpointError, match=r"missing tensor 'model\.transformer\.ln_f\.weight'"):
        export_checkpoint(base[0] / "ckpt", tmp_path / "dst", like=like, progress=False)
    assert refused(tmp_path)


def test_export_bad_max_shard_size(base, tmp_path, capsys):
    code, err = run_cli(["export", "--src", base[0] / "ckpt", "--dst", tmp_path / "dst",
                         "--max-shard-size", "5 parsecs"], capsys)
    assert code == 1 and "max_shard_size: cannot read '5 parsecs'" in err
    assert refused(tmp_path)


def test_export_params_with_a_wrong_shape(base, tmp_path):
    import mdu_jax as mj

    cfg, params, _ = mj.load_pretrained(base[0] / "ckpt", tokenizer=False)
    params["layers"]["q"]["kernel"] = np.zeros((2, 32, 4, 4), ml_dtypes.bfloat16)
    with pytest.raises(ckpt.CheckpointError, match=r"params: parameter 'layers/q/kernel' has shape \[2, 32, 4, 4\], "
                                                   r"expected \[2, 32, 4, 8\]"):
        export_params(cfg, params, tmp_path / "dst", progress=False)
    assert refused(tmp_path)


def test_interrupted_export_leaves_no_destination(base, tmp_path, monkeypatch):
    from mdu_jax.checkpoints import safetensors_io

    real_write = safetensors_io.SafetensorsWriter.write
    calls = []

    def failing_write(self, name, array):
        calls.append(name)
        if len(calls) == 7:
            raise KeyboardInterrupt
        return real_write(self, name, array)

    monkeypatch.setattr(safetensors_io.SafetensorsWriter, "write", failing_write)
    with pytest.raises(KeyboardInterrupt):
        export_checkpoint(base[0] / "ckpt", tmp_path / "dst", max_shard_size="4KB", progress=False)
    assert refused(tmp_path)


SLOW_CLI = """
import sys, time
from mdu_jax.checkpoints import orbax_params as ckpt
real_write = ckpt.ParamsWriter.write
def slow_write(self, *args, **kwargs):
    real_write(self, *args, **kwargs)
    print("wrote", flush=True)
    time.sleep(0.3)
ckpt.ParamsWriter.write = slow_write
from checkpoints_convert.__main__ import main
sys.exit(main(sys.argv[1:]))
"""


def test_sigterm_mid_import_leaves_no_destination(base, tmp_path):
    import select
    import signal
    import subprocess
    import sys

    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=root)
    proc = subprocess.Popen([sys.executable, "-c", SLOW_CLI, "import", "--src", str(base[0] / "hf3"), "--dst",
                             str(tmp_path / "dst"), "--no-progress"], cwd=root, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        # A deadline on the first line: a child that hangs before writing fails the test.
        ready, _, _ = select.select([proc.stdout], [], [], 120)
        assert ready, "the conversion wrote nothing in 120 s"
        assert proc.stdout.readline().strip() == "wrote"
        assert leftovers(tmp_path), "the conversion should be half way, in its temporary folder"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 128 + signal.SIGTERM
    finally:
        proc.kill()
        proc.communicate()
    assert refused(tmp_path)
