"""The session's persistent compilation cache (tests/conftest.py): the same program traced again
from a new function (as each run() and each process does) is read from the cache, and the
compile counters of the compile-reuse tests still count it (jax reports the read as a backend
compilation), so those tests keep their meaning with the cache on."""

import os

import jax
import jax.numpy as jnp

from tests.sampling.test_generate_programs import count_compiles

CACHE_HIT_EVENT = "/jax/compilation_cache/cache_hits"


def _program(offset: float):
    """A new jitted function each call, from the same source line (locations are part of the key)."""
    return jax.jit(lambda v: jnp.sin(v) * 3.0 + offset)


def test_a_program_traced_again_is_read_from_the_cache_and_still_counted():
    assert jax.config.jax_compilation_cache_dir == os.environ["JAX_COMPILATION_CACHE_DIR"]
    offset = float(os.getpid()) + 0.25  # a program new to this session (one per worker)
    x = jnp.arange(8.0)
    hits = []

    def listener(event, **kwargs):
        if event == CACHE_HIT_EVENT:
            hits.append(event)

    jax.monitoring.register_event_listener(listener)
    try:
        with count_compiles() as first:
            _program(offset)(x).block_until_ready()
        assert len(first) == 1 and hits == []
        with count_compiles() as second:
            _program(offset)(x).block_until_ready()
    finally:
        jax.monitoring.unregister_event_listener(listener)
    assert len(hits) == 1 and len(second) == 1
