"""The suite's own settings (tests/conftest.py): quick compile mode, compute-bound opt-out, slow first,
the shared folder built once."""

import os
import threading
import time

import jax
import pytest

from tests.conftest import QUICK_XLA_FLAGS, build_once, pytest_collection_modifyitems, xla_flags


QUICK = "tests/conftest.py sets JAX_DISABLE_MOST_OPTIMIZATIONS=1 (unless the environment already sets it)"


def test_the_quick_xla_flags_reach_this_process_and_the_processes_tests_start():
    assert QUICK_XLA_FLAGS in os.environ["XLA_FLAGS"]  # unless the environment already set XLA_FLAGS
    assert xla_flags(2).split() == ["--xla_force_host_platform_device_count=2", *QUICK_XLA_FLAGS.split()]


def test_quick_compile_mode_is_the_default():
    assert os.environ["JAX_DISABLE_MOST_OPTIMIZATIONS"] == "1", QUICK
    assert jax.config.read("jax_disable_most_optimizations") is True, QUICK


@pytest.mark.compute_bound
def test_compute_bound_tests_compile_with_full_optimisation():
    assert jax.config.read("jax_disable_most_optimizations") is False


def test_the_quick_mode_is_back_after_a_compute_bound_test():
    # runs after the test above (same file, same worker, file order)
    assert jax.config.read("jax_disable_most_optimizations") is True


class _Item:
    def __init__(self, name, slow):
        self.name, self.slow = name, slow

    def get_closest_marker(self, name):
        return object() if name == "slow" and self.slow else None


def test_slow_tests_are_collected_first_in_a_stable_order():
    items = [_Item("a", False), _Item("b", True), _Item("c", False), _Item("d", True)]
    pytest_collection_modifyitems(None, items)
    assert [i.name for i in items] == ["b", "d", "a", "c"]


def test_build_once_builds_a_shared_folder_once_while_other_callers_wait(monkeypatch, tmp_path):
    monkeypatch.setenv("MDU_JAX_TESTS_SHARED_DIR", str(tmp_path))
    builds, started = [], threading.Event()

    def slow_build(folder):
        builds.append(folder)
        started.set()
        time.sleep(0.3)  # the other caller arrives while this build holds the lock
        folder.mkdir()
        (folder / "result").write_text("built")

    first = threading.Thread(target=build_once, args=("thing", slow_build))
    first.start()
    started.wait()
    second = build_once("thing", slow_build)  # waits for the first build, then reuses it
    first.join()
    assert len(builds) == 1 and (second / "result").read_text() == "built"


def test_a_failed_build_leaves_nothing_and_the_next_caller_builds_afresh(monkeypatch, tmp_path):
    monkeypatch.setenv("MDU_JAX_TESTS_SHARED_DIR", str(tmp_path))

    def failing(folder):
        folder.mkdir()
        (folder / "half").write_text("")
        raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError, match="interrupted"):
        build_once("thing", failing)
    assert not (tmp_path / "thing").exists()
    folder = build_once("thing", lambda f: f.mkdir())
    assert folder.is_dir() and not (folder / "half").exists()
