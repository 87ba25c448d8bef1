"""Two local processes (jax.distributed on 127.0.0.1, gloo CPU collectives) train like one process."""

import os
import socket
import subprocess
import sys

import numpy as np
import pytest
import yaml

from mdu_jax.checkpoints.safetensors_io import CheckpointReader
from mdu_jax.training.metrics_log import read_metrics
from tests.conftest import xla_flags
from tests.training.helpers import setup_run

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


# Every subprocess has a deadline, so a hung run fails the test instead of hanging the suite.
RUN_TIMEOUT_S = 600
PORT_ATTEMPTS = 3
# What jax prints when the coordinator cannot bind its port.
PORT_TAKEN = ("Failed to start RPC server", "Failed to add port")


def _free_port():
    """A port that was free a moment ago; another process may take it before the coordinator
    binds it, so `_run_two_processes` retries with a new one when that happens."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run_two_processes(cmd, devices_per_process):
    """Runs `cmd` as processes 0 and 1 of a 2-process job; returns their combined outputs.

    Process 0 hosts the coordinator. If it exits because its port was taken in the meantime,
    process 1 (which would wait for a coordinator that never comes) is killed and both start
    again on another port."""
    for _ in range(PORT_ATTEMPTS):
        port = _free_port()
        procs = [subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                  env=_env(devices_per_process, JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}",
                                           JAX_NUM_PROCESSES="2", JAX_PROCESS_ID=str(i)))
                 for i in range(2)]
        try:
            first = procs[0].communicate(timeout=RUN_TIMEOUT_S)[0].decode()
            if procs[0].returncode != 0 and any(m in first for m in PORT_TAKEN):
                continue
            second = procs[1].communicate(timeout=RUN_TIMEOUT_S)[0].decode()
        finally:
            for proc in procs:
                if proc.poll() is None:
                    proc.kill()
                    proc.communicate()
        for proc, out in zip(procs, (first, second)):
            assert proc.returncode == 0, out[-3000:]
        return first + second
    pytest.fail(f"the coordinator could not bind a port in {PORT_ATTEMPTS} attempts:\n{first[-3000:]}")


def _env(devices, **extra):
    env = dict(os.environ)
    env["XLA_FLAGS"] = xla_flags(devices)
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
    single = subprocess.run(cmd(paths["single"]), env=_env(4), cwd=REPO, capture_output=True, text=True,
                            timeout=RUN_TIMEOUT_S)
    assert single.returncode == 0, (single.stdout + single.stderr)[-3000:]
    outputs = _run_two_processes(cmd(paths["multi"]), devices_per_process=2)
    assert "process 1 of 2" in outputs  # the run really was distributed
    a = CheckpointReader(tmp_path / "single" / "final")
    b = CheckpointReader(tmp_path / "multi" / "final")
    for name in a.names():
        np.testing.assert_allclose(a.get(name), b.get(name), rtol=1e-5, atol=1e-7, err_msg=name)
    # Only process 0 writes the metrics log: one line per step.
    with open(tmp_path / "multi" / "metrics.jsonl") as f:
        assert len(f.readlines()) == 4
    # The same loss and gradient norm at every step: clipped AdamW moves the parameters the same
    # way for g and c * g, so a constant factor on the gradient across processes (a mean where
    # a sum belongs) shows only in the norm. rtol as for the parameters: the processes sum the
    # same float32 terms in another order (measured: 1e-7 relative).
    logged = {name: read_metrics(str(tmp_path / name / "metrics.jsonl")) for name in ("single", "multi")}
    for key in ("loss", "grad_norm"):
        np.testing.assert_allclose([m[key] for m in logged["multi"]], [m[key] for m in logged["single"]],
                                   rtol=1e-5, err_msg=key)
