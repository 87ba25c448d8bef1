"""A run SIGKILLed after a checkpoint and resumed ends bit-identical to an uninterrupted run, and
the resume is visible as one: the command says it continued from the newest checkpoint's step,
trained only the remaining steps, and metrics.jsonl holds every logged step exactly once (a run
that ignored its checkpoints and restarted from step 0 ends with the same weights, since the
batches and masks are seeded per step, so the weights alone cannot tell)."""

import json
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import yaml

from mdu_jax.checkpoints.safetensors_io import CheckpointReader
from tests.conftest import xla_flags
from tests.training.helpers import setup_run

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _command(config_path):
    return [sys.executable, "-m", "mdu_jax.train", "--config", str(config_path), "--no-progress"]


def _env():
    env = dict(os.environ)
    env["XLA_FLAGS"] = xla_flags(2)
    env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _write_config(root, name, base):
    cfg = dict(base, output_dir=str(root / name))
    path = root / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _committed_steps(run_dir):
    folder = os.path.join(run_dir, "checkpoints")
    if not os.path.isdir(folder):
        return []
    return sorted(int(d) for d in os.listdir(folder) if d.isdigit())


def _logged_steps(run_dir):
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        return [json.loads(line)["step"] for line in f if line.strip()]


# Each command may take minutes on a loaded 2-core machine (start-up, compilation, 120 steps);
# a hang must fail the test, not stall the suite.
TIMEOUT_S = 600


@pytest.mark.slow
def test_killed_and_resumed_run_is_bit_identical(tmp_path):
    base = setup_run(tmp_path)
    base.update(max_steps=120, checkpoint={"every_steps": 10, "keep": 2, "async_save": True},
                parallel={"mesh": {"data": 1, "fsdp": 2, "tensor": 1}}, log_every=10)
    straight = _write_config(tmp_path, "straight", base)
    resumed = _write_config(tmp_path, "resumed", base)
    subprocess.run(_command(straight), check=True, env=_env(), cwd=REPO, capture_output=True, timeout=TIMEOUT_S)

    proc = subprocess.Popen(_command(resumed), env=_env(), cwd=REPO, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not _committed_steps(tmp_path / "resumed") and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    killed_at = _committed_steps(tmp_path / "resumed")
    assert killed_at and max(killed_at) < 120, f"the run was not interrupted mid-way: {killed_at}"
    assert not os.path.exists(tmp_path / "resumed" / "final")
    print(f"killed after checkpoints {killed_at}")

    done = subprocess.run(_command(resumed), check=True, env=_env(), cwd=REPO, capture_output=True, text=True,
                          timeout=TIMEOUT_S)
    # The resume itself: the step it continued from, only the remaining steps trained, each
    # logged step once.
    start = max(killed_at)
    run_dir = str(tmp_path / "resumed")
    assert f"resuming {run_dir} from {run_dir}/checkpoints/{start} (optimiser step {start} of 120)" in done.stderr, \
        done.stderr[-2000:]
    trained = re.search(r"resumed from step (\d+) and trained (\d+) steps?", done.stdout)
    assert trained and (int(trained[1]), int(trained[2])) == (start, 120 - start), done.stdout
    assert _logged_steps(run_dir) == list(range(10, 121, 10))
    assert _logged_steps(run_dir) == _logged_steps(tmp_path / "straight")
    a = CheckpointReader(tmp_path / "straight" / "final")
    b = CheckpointReader(tmp_path / "resumed" / "final")
    assert sorted(a.names()) == sorted(b.names())
    for name in a.names():
        np.testing.assert_array_equal(a.get(name), b.get(name), err_msg=name)
