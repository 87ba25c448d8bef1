"""``hidden_states(..., read_at=...)``: the last layer computes only the positions read.

Tolerance: every output row goes through the same float32 operations as in the full pass, but
XLA may vectorise a reduction (RMSNorm's mean, the softmax) differently for a [B, R] subset
than for [B, T], so rows agree to a few ulp (largest difference seen 7e-7 on values of size
~1); 2e-6 absolute leaves a margin, as in test_chunked_attention.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mdu_jax.models.transformer import hidden_states
from tests.sampling.tiny import tiny_model


def _inputs(cfg, B, T, seed=0):
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, cfg.mask_token_id, (B, T)).astype(np.int32)
    attn = np.ones((B, T), np.int32)
    pad = min(37, T // 4)
    attn[0, T - pad:] = 0  # a padded row
    read = np.stack([np.sort(rng.choice(T - pad, min(100, T // 2), replace=False)) for _ in range(B)]).astype(np.int32)
    read[1, 0] = 0  # position 0 (Dream copies the network's own position 0 there)
    return ids, attn, read


@pytest.mark.parametrize("family", ["llada", "dream"])
@pytest.mark.parametrize("attention, length", [("xla", 96), ("chunked", 96), ("chunked", 1024)])
def test_read_at_equals_the_rows_of_the_full_pass(family, attention, length):
    cfg, params = tiny_model(family)
    cfg = cfg.replace(attention_impl=attention)
    ids, attn, read = _inputs(cfg, 2, length)
    full = jax.jit(lambda p, i, a, r: jnp.take_along_axis(hidden_states(cfg, p, i, a), r[..., None], axis=1))
    part = jax.jit(lambda p, i, a, r: hidden_states(cfg, p, i, a, read_at=r))
    want, got = np.asarray(full(params, ids, attn, read)), np.asarray(part(params, ids, attn, read))
    assert got.shape == (2, read.shape[1], cfg.hidden_size)
    np.testing.assert_allclose(got, want, rtol=0, atol=2e-6)


@pytest.mark.parametrize("changes", [dict(scan_layers=False), dict(num_layers=1)])
def test_read_at_without_a_layer_scan_and_with_one_layer(changes):
    cfg, params = tiny_model("llada")
    cfg = cfg.replace(**changes)
    if changes.get("num_layers") == 1:
        params = jax.tree.map(lambda a: a, params)
        params["layers"] = jax.tree.map(lambda a: a[:1], params["layers"])
    ids, attn, read = _inputs(cfg, 2, 64)
    want = np.take_along_axis(np.asarray(hidden_states(cfg, params, ids, attn)), read[..., None], axis=1)
    np.testing.assert_allclose(np.asarray(hidden_states(cfg, params, ids, attn, read_at=read)), want,
                               rtol=0, atol=2e-6)
