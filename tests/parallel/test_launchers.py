"""Multi-host start-up under SLURM and Open MPI (the README's "SLURM and Open MPI launches are
detected too"), on one CPU machine.

``parallel.maybe_initialize_distributed`` starts ``jax.distributed`` when the launcher says there
are several tasks, and leaves the coordinator address, process count and rank to jax's own
cluster detection (``jax._src.clusters``: SLURM's SLURM_JOB_ID / SLURM_STEP_NODELIST / SLURM_NTASKS
/ SLURM_PROCID / SLURM_LOCALID; Open MPI's OMPI_MCA_orte_hnp_uri and OMPI_COMM_WORLD_*, which
Open MPI 4's ORTE launcher sets; Open MPI 5's PRRTE does not set OMPI_MCA_orte_hnp_uri). The
first test checks the trigger with jax.distributed stubbed; the second starts two real processes
with the environment each launcher gives its tasks and checks that they form one 2-process job.
"""

import os
import socket
import subprocess
import sys

import jax
import pytest

from mdu_jax import parallel
from tests.conftest import xla_flags

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
LAUNCHER_VARS = ("SLURM_JOB_ID", "SLURM_STEP_NODELIST", "SLURM_NTASKS", "SLURM_PROCID", "SLURM_LOCALID",
                 "OMPI_MCA_orte_hnp_uri", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_RANK",
                 "OMPI_COMM_WORLD_LOCAL_RANK", "JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID",
                 "TPU_WORKER_HOSTNAMES")
# jax's clusters take the coordinator port from the job id, in the range 61440..65535.
PORT_BASE, PORT_SPAN = 65536 - 4096, 4096


def slurm_env(rank, tasks=2, job_id=17):
    return {"SLURM_JOB_ID": str(job_id), "SLURM_STEP_NODELIST": "localhost", "SLURM_NTASKS": str(tasks),
            "SLURM_PROCID": str(rank), "SLURM_LOCALID": str(rank)}


def ompi_env(rank, tasks=2, job_id=17 * 4096):
    return {"OMPI_MCA_orte_hnp_uri": f"{job_id}.0;tcp://127.0.0.1:1024", "OMPI_COMM_WORLD_SIZE": str(tasks),
            "OMPI_COMM_WORLD_RANK": str(rank), "OMPI_COMM_WORLD_LOCAL_RANK": str(rank)}


@pytest.mark.parametrize("env, starts", [
    ({}, False),
    (slurm_env(1), True),
    (slurm_env(0, tasks=1), False),   # one task: nothing to coordinate
    (ompi_env(1), True),
    (ompi_env(0, tasks=1), False),
])
def test_launcher_environment_starts_jax_distributed(monkeypatch, env, starts):
    for name in LAUNCHER_VARS:
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    calls = []
    monkeypatch.setattr(jax.distributed, "is_initialized", lambda: False)
    monkeypatch.setattr(jax.distributed, "initialize", lambda **kwargs: calls.append(kwargs))
    monkeypatch.setattr(jax, "process_index", lambda: 0)
    monkeypatch.setattr(jax, "process_count", lambda: 2)
    monkeypatch.setattr(jax.config, "update", lambda *a: None)  # the gloo switch: not in this process
    parallel.maybe_initialize_distributed("auto")
    # No arguments: jax's cluster detection reads the launcher's variables.
    assert calls == ([{}] if starts else [])


CHILD = ("import jax, jax.numpy as jnp; from jax.experimental import multihost_utils; from mdu_jax import parallel; "
         "parallel.maybe_initialize_distributed(); "
         "ranks = multihost_utils.process_allgather(jnp.array([jax.process_index()])); "
         "print('job', jax.process_index(), jax.process_count(), ranks.ravel().tolist())")


def _free_launcher_port():
    """A currently free port in jax's cluster-port range."""
    for offset in range(17, PORT_SPAN, 97):
        with socket.socket(socket.AF_INET6 if socket.has_ipv6 else socket.AF_INET) as s:
            try:
                s.bind(("", PORT_BASE + offset))
            except OSError:
                continue
            return PORT_BASE + offset
    pytest.fail("no free port in 61440..65535")


@pytest.mark.parametrize("launcher", ["slurm", "ompi"])
def test_two_tasks_of_a_launcher_form_one_job(launcher):
    for _ in range(3):  # another process may take the port between the check and the bind
        offset = _free_launcher_port() - PORT_BASE
        procs = []
        for rank in range(2):
            env = {k: v for k, v in os.environ.items() if k not in LAUNCHER_VARS}
            env.update(slurm_env(rank, job_id=offset) if launcher == "slurm" else ompi_env(rank, job_id=offset * 4096))
            env.update(XLA_FLAGS=xla_flags(1), JAX_PLATFORMS="cpu",
                       PYTHONPATH=REPO + os.pathsep + env.get("PYTHONPATH", ""))
            procs.append(subprocess.Popen([sys.executable, "-c", CHILD], cwd=REPO, env=env, text=True,
                                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT))
        try:
            first = procs[0].communicate(timeout=300)[0]
            if procs[0].returncode != 0 and "Failed to start RPC server" in first:
                continue
            second = procs[1].communicate(timeout=300)[0]
        finally:
            for p in procs:
                if p.poll() is None:
                    p.kill()
                    p.communicate()
        for p, out in zip(procs, (first, second)):
            assert p.returncode == 0, out[-3000:]
        lines = sorted(line for out in (first, second) for line in out.splitlines() if line.startswith("job "))
        assert lines == ["job 0 2 [0, 1]", "job 1 2 [0, 1]"], (first + second)[-3000:]
        return
    pytest.fail("the coordinator port was taken three times")
