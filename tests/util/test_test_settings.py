"""The suite's own settings (tests/conftest.py): quick compile mode, compute-bound opt-out, slow first."""

import os

import jax
import pytest

from tests.conftest import pytest_collection_modifyitems


QUICK = "tests/conftest.py sets JAX_DISABLE_MOST_OPTIMIZATIONS=1 (unless the environment already sets it)"


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
