"""configs/paper/: one preset per run of the MDU paper (issue 19). Every preset loads and validates,
holds the reference's hyperparameters (reference-mdlm 6.2 and run_main.sh), states a reason for
every change it makes, and trains on a tiny checkpoint."""

import glob
import os

import numpy as np
import pytest
import yaml

from mdu_jax.training import load_config, run
from tests.fixtures import write_hf_checkpoint

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PAPER = os.path.join(REPO, "configs", "paper")
BASES = ("reference_llada8b.yaml", "reference_dream7b.yaml", "rwku_dream7b_base.yaml")
RUNS = sorted(os.path.basename(p) for p in glob.glob(os.path.join(PAPER, "*.yaml")) if os.path.basename(p) not in BASES)


def test_one_preset_per_paper_run():
    want = {f"tofu_{m}_{s}_{k}.yaml" for m in ("llada8b", "dream7b") for s in ("forget01", "forget05", "forget10")
            for k in ("mdu", "ga", "npo")} | {f"rwku_dream7b_{k}.yaml" for k in ("mdu", "ga", "npo")}
    assert set(RUNS) == want
    dirs = [load_config(os.path.join(PAPER, name)).output_dir for name in RUNS]
    assert len(set(dirs)) == len(dirs)


@pytest.mark.parametrize("name", RUNS)
def test_preset_has_the_reference_settings(name):
    cfg = load_config(os.path.join(PAPER, name))
    d, o, opt = cfg.data, cfg.objective, cfg.optim
    dream, rwku = "dream7b" in name, name.startswith("rwku")
    assert d.attend_padding and d.padding == "longest" and d.max_length == 1024 and d.truncation == "right"
    assert d.length_grouping == "hf"
    assert d.mixing == "union" and d.pad_labels == "ignore"
    assert (cfg.batch_size, opt.grad_accum, opt.lr, opt.clip_norm, opt.warmup_ratio) == (4, 4, 1e-5, 1.0, 0.1)
    assert opt.schedule == "cosine" and opt.weight_decay == 0 and not opt.master_weights and cfg.seed == 42
    assert cfg.model.param_dtype == "bfloat16" and cfg.model.anchor_dtype == "bfloat16"
    assert opt.accumulation == ("sum" if dream else "mean")
    assert o.nan_to_num == (not dream) and o.eta == 0.0 and o.divergence == "forward"
    assert o.retain_loss_weight == ("cart" if dream else "scheduler")
    assert cfg.epochs == (3 if rwku else 5 if dream else 9)
    assert o.retain_weight == (0.0 if rwku else 1.0)
    method = name.rsplit("_", 1)[1][:-5]
    assert o.method == {"mdu": "mdu", "ga": "ga" if rwku else "graddiff", "npo": "npo"}[method]
    if method == "npo":
        assert o.npo_beta == 0.2 and o.npo_batch_level
    if rwku:
        assert d.benchmark == "files" and d.forget_files[0].endswith("1_Stephen_King/forget.jsonl")
        assert d.retain_files[0].endswith("1_Stephen_King/retain_placeholder.jsonl")
    else:
        assert d.benchmark == "tofu" and d.forget_split == name.split("_")[2] and d.retain_split == "retain_perturbed"


@pytest.mark.parametrize("name", BASES)
def test_every_change_in_a_base_preset_says_why(name):
    """Each key a base preset sets carries a comment: on its line, or a comment block just above the
    run of keys it belongs to (one reason may cover keys that change together)."""
    lines = open(os.path.join(PAPER, name)).read().splitlines()

    def is_key(line):
        text = line.split("#")[0].rstrip()
        return bool(text) and not text.endswith(":")

    for i, line in enumerate(lines):
        text = line.split("#")[0].rstrip()
        if not is_key(line) or text.startswith(("base:", "output_dir:")) or "#" in line:
            continue
        j = i - 1
        while j >= 0 and is_key(lines[j]) and "#" not in lines[j]:
            j -= 1
        assert j >= 0 and lines[j].strip().startswith("#"), f"{name} line {i + 1} has no reason: {line!r}"


# Dream's preset trains in tests/experiments/test_rwku_corpus.py (the RWKU run on its own corpus).
@pytest.mark.slow
@pytest.mark.parametrize("family,name", [("llada", "tofu_llada8b_forget10_npo.yaml")])
def test_preset_trains_a_tiny_checkpoint_on_tofu(family, name, tmp_path, shared_data):
    write_hf_checkpoint(tmp_path / "m", family)
    cfg = load_config(os.path.join(PAPER, name), [
        f"model.path={tmp_path / 'm'}", f"data.data_dir={shared_data / 'tofu'}", "data.max_examples=6",
        "optim.grad_accum=2", "max_steps=1", "parallel.num_devices=1", "tensorboard=false",
        "checkpoint.async_save=false", f"output_dir={tmp_path / 'run'}"])
    result = run(cfg, progress=False)
    assert result.summary_data["optimizer_steps"] == 1 and result.summary_data["micro_steps"] == 2
    assert all(np.isfinite(m["loss"]) for m in result.metrics if "loss" in m)
    saved = yaml.safe_load(open(tmp_path / "run" / "config.yaml"))
    assert saved["data"]["padding"] == "longest" and saved["optim"]["accumulation"] == cfg.optim.accumulation
