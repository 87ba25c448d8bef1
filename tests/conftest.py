"""Test-wide settings: 8 fake CPU devices, no network, float32 matmuls at full precision, XLA's
quick compile mode except in the tests that train for hundreds of steps, one persistent
compilation cache per session, slow tests first."""

import fcntl
import os
import shutil
import tempfile

# XLA:CPU's older fusion code generators instead of its new MLIR-based emitters (the programs, their
# HLO and fusions, are the same; the machine code is generated differently and about a third faster
# to compile). Measured, each file alone in one process, both settings back to back: on the idle
# machine tests/sampling/test_block_slots.py 29.0 -> 18.3 CPU user s, and the compute-bound
# tests/training/test_end_to_end.py 96.8 / 91.8 -> 92.5 / 78.6 s wall in two pairs (the generated
# code runs as fast); the whole suite, idle, 24 min 43 s -> 12 min 26 s (with other test changes).
# Test files that start processes with their own device count append these flags (`xla_flags`).
QUICK_XLA_FLAGS = "--xla_cpu_use_fusion_emitters=false"


def xla_flags(devices: int) -> str:
    """XLA_FLAGS for a process the tests start: `devices` fake CPU devices and the quick flags."""
    return f"--xla_force_host_platform_device_count={devices} {QUICK_XLA_FLAGS}"


# Must happen before jax is imported anywhere.
os.environ.setdefault("XLA_FLAGS", xla_flags(8))
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# The test models are tiny, so most tests spend their time in XLA:CPU's compiler, not in the
# programs: compile with LLVM at -O0 and without its expensive passes (jax's own switch; XLA's
# HLO passes still run, so the programs are the ones users get, only less tuned machine code).
# Set in the environment so that the runs the tests start in subprocesses inherit it. Measured
# on two compile-bound files: 110 s -> 71 s.
os.environ.setdefault("JAX_DISABLE_MOST_OPTIMIZATIONS", "1")
# One persistent XLA compilation cache for the session, in a fresh temporary folder: set here, in
# the process that starts the xdist workers, so both workers and every run a test starts in a
# subprocess inherit it. Many tests train or evaluate the same tiny models again (each run() and
# each CLI process traces its programs anew; the cache then skips XLA's backend compilation,
# about half of such a run's CPU time). Measured on tests/training/test_step_units.py: 72 ->
# 44 CPU s. Every entry is kept (min compile time 0): the tiny programs each compile in well
# under the default 1 s. The tests that count compilations still see every program: jax reports
# a program read from the cache as a backend compilation too (tests/util/test_compilation_cache.py).
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="mdu-jax-tests-xla-")
    os.environ["MDU_JAX_TESTS_XLA_CACHE_OWNER"] = str(os.getpid())
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
# One folder for results that several test files build the same way (the tiny demo's SFT models
# and their evaluations): made here for the same reason, so that the xdist workers share it; the
# first worker that needs a result builds it under a file lock, the other waits and reuses it
# (``build_once``).
if "MDU_JAX_TESTS_SHARED_DIR" not in os.environ:
    os.environ["MDU_JAX_TESTS_SHARED_DIR"] = tempfile.mkdtemp(prefix="mdu-jax-tests-shared-")
    os.environ["MDU_JAX_TESTS_SHARED_OWNER"] = str(os.getpid())

import logging  # noqa: E402
import pathlib  # noqa: E402
from typing import Callable  # noqa: E402

import jax  # noqa: E402
import pytest  # noqa: E402

jax.config.update("jax_default_matmul_precision", "highest")

# Tests whose time goes into running hundreds of training steps (unoptimised code runs them
# about 2x slower: the CI-size demo's SFT 46 s -> 84 s).
COMPUTE_BOUND_MARKER = "compute_bound"


@pytest.fixture(autouse=True)
def _no_stale_root_handlers():
    """Removes the root handlers a test's CLI call installed (``logging.basicConfig`` in the entry
    points binds a StreamHandler to the sys.stderr of that moment, which pytest closes after the
    test); left behind, a later test's warning prints a 'Logging error' dump into its stderr."""
    yield
    root = logging.getLogger()
    for handler in list(root.handlers):
        if type(handler) is logging.StreamHandler:
            root.removeHandler(handler)


@pytest.fixture(autouse=True)
def _compile_mode(request):
    """Full XLA optimisation inside tests marked ``compute_bound``; the quick mode elsewhere."""
    if request.node.get_closest_marker(COMPUTE_BOUND_MARKER) is None:
        yield
        return
    quick = jax.config.read("jax_disable_most_optimizations")
    jax.config.update("jax_disable_most_optimizations", False)
    try:
        yield
    finally:
        jax.config.update("jax_disable_most_optimizations", quick)


def pytest_unconfigure(config):
    """Removes the session's compilation cache and shared folder (in the process that made them,
    after the workers)."""
    if os.environ.get("MDU_JAX_TESTS_XLA_CACHE_OWNER") == str(os.getpid()):
        shutil.rmtree(os.environ["JAX_COMPILATION_CACHE_DIR"], ignore_errors=True)
    if os.environ.get("MDU_JAX_TESTS_SHARED_OWNER") == str(os.getpid()):
        shutil.rmtree(os.environ["MDU_JAX_TESTS_SHARED_DIR"], ignore_errors=True)


def build_once(name: str, build: Callable[[pathlib.Path], None]) -> pathlib.Path:
    """The session's shared folder `name` (under ``MDU_JAX_TESTS_SHARED_DIR``), filled by
    `build(folder)` the first time any test process asks for it: an exclusive file lock makes a
    second process wait for the first one's build instead of repeating it; a build that raised
    leaves no folder, so the next caller builds afresh."""
    root = pathlib.Path(os.environ["MDU_JAX_TESTS_SHARED_DIR"])
    folder, done = root / name, root / f"{name}.done"
    with open(root / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        if not done.exists():
            shutil.rmtree(folder, ignore_errors=True)
            try:
                build(folder)
            except BaseException:
                shutil.rmtree(folder, ignore_errors=True)
                raise
            done.touch()
    return folder


def pytest_collection_modifyitems(config, items):
    """Slow tests first (stable order otherwise): with ``--dist loadfile`` their files are handed
    out first, so the two workers' queues of short tests even out at the end."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


SHARED = pathlib.Path(__file__).resolve().parents[1].parent / "shared"


@pytest.fixture(scope="session")
def shared_data() -> pathlib.Path:
    """../shared/data beside the checkout (read-only)."""
    path = SHARED / "data"
    if not path.is_dir():
        pytest.fail(f"{path} is missing: CI lays ../shared beside the checkout")
    return path
