"""A run SIGKILLed after a checkpoint and resumed ends bit-identical to an uninterrupted run."""

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import yaml

from mdu_jax.checkpoints.safetensors_io import CheckpointReader
from tests.training.helpers import setup_run

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _command(config_path):
    return [sys.executable, "-m", "mdu_jax.train", "--config", str(config_path), "--no-progress"]


def _env():
    env = dict(os.environ)
    env["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
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


@pytest.mark.slow
def test_killed_and_resumed_run_is_bit_identical(tmp_path):
    base = setup_run(tmp_path)
    base.update(max_steps=120, checkpoint={"every_steps": 10, "keep": 2, "async_save": True},
                parallel={"mesh": {"data": 1, "fsdp": 2, "tensor": 1}}, log_every=10)
    straight = _write_config(tmp_path, "straight", base)
    resumed = _write_config(tmp_path, "resumed", base)
    subprocess.run(_command(straight), check=True, env=_env(), cwd=REPO, capture_output=True)

    proc = subprocess.Popen(_command(resumed), env=_env(), cwd=REPO, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not _committed_steps(tmp_path / "resumed") and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = _committed_steps(tmp_path / "resumed")
    assert killed_at and max(killed_at) < 120, f"the run was not interrupted mid-way: {killed_at}"
    assert not os.path.exists(tmp_path / "resumed" / "final")
    print(f"killed after checkpoints {killed_at}")

    subprocess.run(_command(resumed), check=True, env=_env(), cwd=REPO, capture_output=True)
    a = CheckpointReader(tmp_path / "straight" / "final")
    b = CheckpointReader(tmp_path / "resumed" / "final")
    assert sorted(a.names()) == sorted(b.names())
    for name in a.names():
        np.testing.assert_array_equal(a.get(name), b.get(name), err_msg=name)
