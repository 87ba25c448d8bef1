"""'chunked' attention (layers.chunked_attention): the XLA path's values one (row, head, query
block) at a time, for LLaDA's key mask, Dream's query-and-key mask and grouped-query heads.

Tolerance: both paths compute the same float32 arithmetic; only the dots' summation order
differs (a [chunk, h] x [h, S] product instead of one batched einsum), so outputs of size ~1
agree to a few ulp; 2e-6 absolute leaves a margin of ~10x over the largest difference seen.
"""

import jax
import numpy as np
import pytest

from mdu_jax.models import layers
from mdu_jax.models.config import inference_config
from tests.sampling.tiny import tiny_config

T = 1024

# Every call runs jitted, one program per (implementation, shape): called op by op, each call
# compiled a small program per operation and shape, most of this file's time on this CPU.
attend = jax.jit(layers.attention, static_argnums=4)


def _qkv(B, T, H, K, h=16, seed=0):
    rng = np.random.default_rng(seed)
    # NumPy arrays: their slices below need no compiled program either
    return (rng.standard_normal((B, T, n, h)).astype(np.float32) for n in (H, K, K))


@pytest.mark.parametrize("queries_masked", [False, True])
@pytest.mark.parametrize("heads", [(4, 4), (4, 2)])
def test_chunked_equals_the_xla_path(queries_masked, heads):
    H, K = heads
    q, k, v = _qkv(2, T, H, K)
    valid = np.arange(T)[None, :] < np.asarray([[T - 77], [T // 3]])  # two rows, both padded
    mask = valid[:, None, None, :]  # NumPy masks: no small programs to compile
    if queries_masked:  # Dream: pad queries see nothing (a uniform softmax, finite)
        mask = mask & valid[:, None, :, None]
    want = attend(q, k, v, mask, "xla")
    got = attend(q, k, v, mask, "chunked")
    assert got.shape == want.shape and got.dtype == want.dtype
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=0, atol=2e-6)


def test_chunked_without_a_mask_and_a_row_is_independent_of_its_batch():
    q, k, v = _qkv(3, T, 4, 4, seed=1)
    together = attend(q, k, v, None, "chunked")
    np.testing.assert_allclose(np.asarray(together), np.asarray(attend(q, k, v, None, "xla")),
                               rtol=0, atol=2e-6)
    alone = attend(q[1:2], k[1:2], v[1:2], None, "chunked")
    np.testing.assert_array_equal(np.asarray(together)[1:2], np.asarray(alone))


def test_short_uneven_and_subset_queries():
    for length in (40, layers.ATTENTION_CHUNK + 72, T + 8):  # one short block; a padded last block
        q, k, v = _qkv(2, length, 4, 4)
        got = attend(q, k, v, None, "chunked")
        assert got.shape == q.shape
        np.testing.assert_allclose(np.asarray(got), np.asarray(attend(q, k, v, None, "xla")),
                                   rtol=0, atol=2e-6)
    q, k, v = _qkv(2, 300, 4, 2)
    valid = np.arange(300)[None, :] < np.asarray([[300], [211]])
    mask = valid[:, None, None, :] & valid[:, None, :, None]
    full = attend(q, k, v, mask, "chunked")
    part = attend(q[:, 50:150], k, v, mask[:, :, 50:150], "chunked")  # 100 of 300 queries
    np.testing.assert_allclose(np.asarray(part), np.asarray(full)[:, 50:150], rtol=0, atol=2e-6)


def test_inference_config_chunks_xla_attention_on_a_cpu_only():
    cfg = tiny_config("llada")
    assert cfg.attention_impl == "xla"
    want = "chunked" if jax.default_backend() == "cpu" else "xla"
    assert inference_config(cfg).attention_impl == want
    for other in ("cudnn", "splash", "auto", "chunked"):
        assert inference_config(cfg.replace(attention_impl=other)).attention_impl == other
