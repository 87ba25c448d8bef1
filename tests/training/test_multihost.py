"""Two local processes (jax.distributed on 127.0.0.1, gloo CPU collectives) train like one process."""

import os
import socket
import subprocess
import sys

import numpy as np
import pytest
import yaml

from mdu_jax.checkpoints.safetensors_io import CheckpointReader
from tests.training.helpers import setup_run

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(devices, **extra):
    env = dict(os.environ)
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
    for k in ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID"):
        env.pop(k, None)
    env.update(extra)
    return env


@pytest.mark.slow
def test_two_processes_match_one_process(tmp_path):
    base = setup_run(tmp_path)
    base.update(max_steps=4, parallel={"mesh": {"data": 2, "fsdp": -1, "tensor": 1}},
                checkpoint={"every_steps": 2, "keep": 1, "async_save": False})
    paths = {}
    for name in ("single", "multi"):
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump(dict(base, output_dir=str(tmp_path / name))))
        paths[name] = path
    cmd = lambda p: [sys.executable, "-m", "mdu_jax.train", "--config", str(p), "--no-progress"]  # noqa: E731
    subprocess.run(cmd(paths["single"]), check=True, env=_env(4), cwd=REPO, capture_output=True)
    port = _free_port()
    procs = [subprocess.Popen(cmd(paths["multi"]), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              env=_env(2, JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}", JAX_NUM_PROCESSES="2",
                                       JAX_PROCESS_ID=str(i)))
             for i in range(2)]
    outputs = [p.communicate(timeout=600)[0].decode() for p in procs]
    for p, out in zip(procs, outputs):
        assert p.returncode == 0, out[-3000:]
    assert "process 1 of 2" in "".join(outputs)  # the run really was distributed
    a = CheckpointReader(tmp_path / "single" / "final")
    b = CheckpointReader(tmp_path / "multi" / "final")
    for name in a.names():
        np.testing.assert_allclose(a.get(name), b.get(name), rtol=1e-5, atol=1e-7, err_msg=name)
    # Only process 0 writes the metrics log: one line per step.
    with open(tmp_path / "multi" / "metrics.jsonl") as f:
        assert len(f.readlines()) == 4
