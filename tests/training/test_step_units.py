"""One step unit, optimiser steps, wherever a user sees a step; resumes that continue where a run
stopped, from damaged and from old-layout folders (issue 16 items 2 and 7).

A run with ``optim.grad_accum=2`` and ``max_steps=3`` (checkpoints every step) is cut back to
what a kill after step 3 was logged leaves, then resumed in copies of its folder: as it is, with its newest
checkpoint damaged, and rewritten in the layout of the earlier micro-step version. Every resume
must end with exactly the weights of the plain resume and a metrics.jsonl holding steps 1, 2, 3
once each.
"""

import contextlib
import io
import logging
import os
import shutil

import numpy as np
import pytest

import mdu_jax.training as training
from mdu_jax.training.config import load_config
from tests.training.folder_helpers import (LogLines, checkpoint_folders, damage, final_weights, legacify,
                                           metrics_rows, one_device_config)

ACCUM, STEPS = 2, 3


@pytest.fixture(scope="module")
def stopped(tmp_path_factory):
    """A run folder as a kill after step 3 was logged, before its checkpoint, leaves it: checkpoints
    of steps 1 and 2, metrics.jsonl rows of steps 1-3. Returns (root, config dict)."""
    root = tmp_path_factory.mktemp("steps")
    base = one_device_config(root, max_steps=STEPS, optim={"grad_accum": ACCUM},
                             checkpoint={"every_steps": 1, "keep": 5, "async_save": False})
    training.run(load_config(base=base), progress=False)
    run_dir = base["output_dir"]
    shutil.rmtree(os.path.join(run_dir, "checkpoints", str(max(checkpoint_folders(run_dir)))))
    shutil.rmtree(os.path.join(run_dir, "final"))
    if os.path.exists(os.path.join(run_dir, "run_summary.json")):
        os.remove(os.path.join(run_dir, "run_summary.json"))
    return root, base


def _resume(stopped, name, prepare=None, progress=False):
    """Copies the stopped folder to `name`, applies `prepare(run_dir)`, resumes it; returns
    (run_dir, RunResult, log lines, stderr text)."""
    root, base = stopped
    run_dir = os.path.join(root, name)
    shutil.copytree(base["output_dir"], run_dir)
    if prepare is not None:
        prepare(run_dir)
    err = io.StringIO()
    # What a user of the command line sees: every logger's records (asyncio's included) on stderr.
    handler = logging.StreamHandler(err)
    logging.getLogger().addHandler(handler)
    try:
        with LogLines() as logs, contextlib.redirect_stderr(err):
            result = training.run(load_config(base=dict(base, output_dir=run_dir)), progress=progress)
    finally:
        logging.getLogger().removeHandler(handler)
    return run_dir, result, logs.lines, err.getvalue()


@pytest.fixture(scope="module")
def resumed(stopped):
    return _resume(stopped, "resumed", progress=True)


def test_checkpoints_and_metrics_count_optimiser_steps(stopped):
    _, base = stopped
    run_dir = base["output_dir"]
    assert checkpoint_folders(run_dir) == [1, 2]  # not the micro-steps 2, 4
    rows = metrics_rows(run_dir)
    assert [r["step"] for r in rows] == [1, 2, 3]
    assert [r["micro_step"] for r in rows] == [ACCUM, 2 * ACCUM, 3 * ACCUM]  # the labelled extra field
    meta = training.checkpointing.read_meta(run_dir, 2)
    assert (meta["step_unit"], meta["optimizer_step"], meta["micro_step"]) == ("optimizer", 2, 2 * ACCUM)


def test_resume_continues_from_the_checkpoint_step(resumed):
    run_dir, result, logs, err = resumed
    assert any(f"from {run_dir}/checkpoints/2 (optimiser step 2 of {STEPS})" in line for line in logs), logs
    assert [r["step"] for r in result.metrics] == [3]  # this invocation trained step 3 only
    assert [r["step"] for r in metrics_rows(run_dir)] == [1, 2, 3]  # step 3 logged twice, kept once
    assert checkpoint_folders(run_dir) == [1, 2, 3]
    assert "resumed from step 2 and trained 1 step" in result.summary


def test_progress_bar_counts_optimiser_steps(resumed):
    *_, err = resumed
    assert f"{STEPS}/{STEPS}" in err and f"/{STEPS * ACCUM}" not in err, err[-400:]


def test_damaged_newest_checkpoint_is_named_once_and_the_run_resumes_from_the_intact_one(stopped, resumed):
    run_dir, result, logs, err = _resume(stopped, "damaged", prepare=lambda d: damage(d, max(checkpoint_folders(d))))
    named = [line for line in err.splitlines() if "checkpoints/2" in line]
    assert len(named) == 1 and "cannot be read" in named[0], err
    assert "Traceback" not in err and "never retrieved" not in err, err
    assert any(f"from {run_dir}/checkpoints/1 (optimiser step 1 of {STEPS}), the newest intact" in line
               for line in logs), logs
    assert os.path.isdir(os.path.join(run_dir, "damaged_checkpoints", "2"))
    # Steps 2 and 3 were logged before the run stopped and again after the resume: once on disk.
    assert [r["step"] for r in metrics_rows(run_dir)] == [1, 2, 3]
    want = final_weights(resumed[0])
    for name, value in final_weights(run_dir).items():
        np.testing.assert_array_equal(value, want[name], err_msg=name)


def test_no_intact_checkpoint_stops_with_one_message_and_the_way_out(stopped):
    root, base = stopped
    run_dir = os.path.join(root, "all_damaged")
    shutil.copytree(base["output_dir"], run_dir)
    for step in checkpoint_folders(run_dir):
        damage(run_dir, step)
    with pytest.raises(training.CheckpointDamagedError) as e:
        training.run(load_config(base=dict(base, output_dir=run_dir)), progress=False)
    text = str(e.value)
    assert "checkpoints/1" in text and "checkpoints/2" in text and "--overwrite" in text
    assert "\n" not in text


def test_a_folder_of_the_micro_step_layout_resumes_exactly(stopped, resumed):
    run_dir, result, logs, _ = _resume(stopped, "legacy", prepare=legacify)
    assert any("2 -> 1" in line and "4 -> 2" in line for line in logs), logs
    assert checkpoint_folders(run_dir) == [1, 2, 3]
    assert [r["step"] for r in metrics_rows(run_dir)] == [1, 2, 3]
    assert os.path.isfile(os.path.join(run_dir, "metrics.micro_steps.jsonl"))
    want = final_weights(resumed[0])
    for name, value in final_weights(run_dir).items():
        np.testing.assert_array_equal(value, want[name], err_msg=name)


def test_an_old_checkpoint_saved_mid_step_is_refused_clearly(stopped):
    root, base = stopped
    run_dir = os.path.join(root, "legacy_mid_step")
    shutil.copytree(base["output_dir"], run_dir)
    legacify(run_dir)
    ckpts = os.path.join(run_dir, "checkpoints")
    meta_path = os.path.join(ckpts, "4", "meta", "metadata")
    with open(meta_path) as f:
        text = f.read()
    with open(meta_path, "w") as f:
        f.write(text.replace('"micro_step": 4', '"micro_step": 3'))
    os.rename(os.path.join(ckpts, "4"), os.path.join(ckpts, "3"))
    with pytest.raises(training.LegacyCheckpointError, match=r"checkpoints/3 was saved .* in the middle of an "
                                                             r"optimiser step \(micro-step 3, optim.grad_accum=2\)"):
        training.run(load_config(base=dict(base, output_dir=run_dir)), progress=False)
