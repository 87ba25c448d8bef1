"""An output folder belongs to one run, and the command line says what happened (issue 16 items 1, 5).

One tiny run is trained through ``python -m mdu_jax.train``'s ``main``; the tests then run the
command again on copies of its folder: with the same config (reported, not retrained), with a
config that changes the weights (refused, naming the keys, nothing on disk touched), and with
the flags that start over or continue anyway.
"""

import contextlib
import io
import os
import shutil

import pytest
import yaml

import mdu_jax.training as training
from mdu_jax.train import main
from mdu_jax.training.config import load_config
from mdu_jax.typed_config import to_dict
from tests.training.folder_helpers import checkpoint_folders, final_weights, metrics_rows, one_device_config


def _cli(argv) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    return code, out.getvalue(), err.getvalue()


def _snapshot(run_dir) -> dict[str, bytes]:
    """Every file under `run_dir` with its bytes."""
    out = {}
    for d, _, files in os.walk(run_dir):
        for f in files:
            with open(os.path.join(d, f), "rb") as fh:
                out[os.path.relpath(os.path.join(d, f), run_dir)] = fh.read()
    return out


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """(config path, run folder, stdout) of a finished 2-step run trained through the CLI."""
    root = tmp_path_factory.mktemp("folder")
    base = one_device_config(root, max_steps=2, checkpoint={"every_steps": 1, "keep": 3, "async_save": False})
    path = root / "run.yaml"
    path.write_text(yaml.safe_dump(base))
    code, out, err = _cli(["--config", str(path), "--no-progress"])
    assert code == 0, err
    return path, base["output_dir"], out


def _copy(finished, name) -> tuple[str, str]:
    """A copy of the finished folder, and a config file pointing at it."""
    path, run_dir, _ = finished
    copy = os.path.join(os.path.dirname(run_dir), name)
    shutil.copytree(run_dir, copy)
    cfg = yaml.safe_load(path.read_text())
    cfg["output_dir"] = copy
    new_path = path.parent / f"{name}.yaml"
    new_path.write_text(yaml.safe_dump(cfg))
    return str(new_path), copy


def test_a_run_without_progress_bar_prints_its_summary(finished):
    _, run_dir, out = finished
    assert "mdu run finished: 2 optimiser steps of 8 rows on 8 forget + 8 retain rows" in out, out
    assert " tokens, in " in out
    for name in ("final", "checkpoints", "metrics.jsonl", "config.yaml", "run_summary.json"):
        assert os.path.join(run_dir, name) in out, name
    assert os.path.isfile(os.path.join(run_dir, "run_summary.json"))


def test_overrides_may_follow_flags(tmp_path, finished):
    path, _, _ = finished
    code, out, err = _cli(["--no-progress", f"output_dir={tmp_path / 'elsewhere'}", "--config", str(path),
                           "objective.tau=0.75", "--print-config"])
    assert code == 0, err
    printed = yaml.safe_load(out)
    assert printed["output_dir"] == str(tmp_path / "elsewhere") and printed["objective"]["tau"] == 0.75


def test_the_same_config_again_reports_the_finished_run_and_trains_nothing(finished):
    path, run_dir = _copy(finished, "again")
    before = _snapshot(run_dir)
    # Logging, checkpoint cadence and the progress bar do not change the weights.
    code, out, err = _cli(["--config", path, "log_every=2", "checkpoint.keep=1"])
    assert code == 0, err
    assert f"{run_dir} already holds the finished run of this config (2 optimiser steps)" in out, out
    assert os.path.join(run_dir, "final") in out
    assert _snapshot(run_dir) == before


def test_a_config_that_changes_the_weights_is_refused_naming_the_keys(finished):
    path, run_dir = _copy(finished, "refused")
    before = _snapshot(run_dir)
    code, out, err = _cli(["--config", path, "objective.tau=0.25", "optim.lr=8e-6", "--no-progress"])
    assert code == 2
    assert "objective.tau: 0.5 in the folder, 0.25 now" in err and "optim.lr: 0.001 in the folder, 8e-06 now" in err
    assert "--overwrite" in err and "--resume-anyway" in err
    assert _snapshot(run_dir) == before  # config.yaml still describes the weights beside it


def test_resume_anyway_continues_and_config_yaml_records_both(finished):
    path, run_dir = _copy(finished, "anyway")
    old_weights = final_weights(run_dir)
    code, out, err = _cli(["--config", path, "objective.tau=0.25", "max_steps=3", "--resume-anyway",
                           "--no-progress"])
    assert code == 0, err
    text = open(os.path.join(run_dir, "config.yaml")).read()
    assert text.startswith("# Resumed with --resume-anyway from optimiser step 2")
    assert "#   objective.tau: 0.5 -> 0.25" in text and "#   max_steps: 2 -> 3" in text
    assert yaml.safe_load(text)["objective"]["tau"] == 0.25
    assert yaml.safe_load(open(os.path.join(run_dir, "config.before-step-2.yaml")))["objective"]["tau"] == 0.5
    assert [r["step"] for r in metrics_rows(run_dir)] == [1, 2, 3]
    assert checkpoint_folders(run_dir)[-1] == 3
    assert any((final_weights(run_dir)[k] != v).any() for k, v in old_weights.items())


def test_resume_anyway_with_nothing_left_to_train_is_refused(finished):
    path, run_dir = _copy(finished, "nothing_left")
    before = _snapshot(run_dir)
    code, _, err = _cli(["--config", path, "objective.tau=0.25", "--resume-anyway", "--no-progress"])
    assert code == 2 and "nothing would run with the new values" in err, err
    assert _snapshot(run_dir) == before


def test_overwrite_starts_over(finished):
    path, run_dir = _copy(finished, "overwritten")
    code, out, err = _cli(["--config", path, "objective.tau=0.25", "max_steps=1", "--overwrite", "--no-progress"])
    assert code == 0, err
    assert "mdu run finished: 1 optimiser step of 8 rows" in out, out
    assert [r["step"] for r in metrics_rows(run_dir)] == [1]
    assert checkpoint_folders(run_dir) == [1]
    cfg = yaml.safe_load(open(os.path.join(run_dir, "config.yaml")))
    assert cfg["objective"]["tau"] == 0.25 and not open(os.path.join(run_dir, "config.yaml")).read().startswith("#")


def test_missing_model_path_names_the_key_and_leaves_no_folder(tmp_path, finished):
    path, _, _ = finished
    out_dir = tmp_path / "never"
    code, _, err = _cli(["--config", str(path), f"model.path={tmp_path / 'nope'}", f"output_dir={out_dir}"])
    assert code == 2
    assert f"model.path: {tmp_path / 'nope'}: no such folder" in err, err
    assert not out_dir.exists()


def test_run_files_without_a_config_are_not_taken_over(tmp_path, finished):
    path, _, _ = finished
    out_dir = tmp_path / "leftovers"
    out_dir.mkdir()
    (out_dir / "metrics.jsonl").write_text('{"step": 1}\n')
    (out_dir / "notes.txt").write_text("mine")
    code, _, err = _cli(["--config", str(path), f"output_dir={out_dir}", "--no-progress"])
    assert code == 2 and "metrics.jsonl" in err and "--overwrite" in err, err
    assert sorted(os.listdir(out_dir)) == ["metrics.jsonl", "notes.txt"]


def test_result_neutral_keys_are_the_documented_ones(finished):
    path, _, _ = finished
    cfg = load_config(str(path))
    recorded = to_dict(cfg)
    neutral = ["log_every=7", "tensorboard=true", "checkpoint.every_steps=9", "checkpoint.keep=4",
               "checkpoint.async_save=true", "parallel.mesh.fsdp=-1", "parallel.num_devices=0",
               "model.remat_policy=full", "objective.chunk_size=16", "optim.max_update_ratio=2",
               "export_hf=/tmp/x", "output_dir=/tmp/y"]
    assert training.run_folder.result_differences(recorded, load_config(str(path), neutral)) == []
    weighty = ["seed=8", "max_steps=3", "optim.lr=0.002", "data.buckets=[32]", "model.dtype=bfloat16",
               "optim.grad_accum=2", "objective.retain_weight=2"]
    for change in weighty:
        diff = training.run_folder.result_differences(recorded, load_config(str(path), [change]))
        assert [d[0] for d in diff] == [change.split("=")[0]], change
