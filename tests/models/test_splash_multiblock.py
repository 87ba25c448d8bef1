"""attention_impl='splash' over several key/value blocks, with padding that crosses block
boundaries and whole blocks of padding, against the XLA attention path.

T = 384 is not a multiple of 256 or 512, so the kernel runs 128-wide tiles: 3 query blocks x 3
key/value blocks per sequence. The online softmax then really carries its running maximum and
normaliser across kv blocks (with T = 128, as in test_splash_attention.py, there is one block and
it never does), and the padding below leaves kv blocks that are partly and wholly padded:

- row 0: 128 valid tokens, so padding starts exactly at a block boundary and kv blocks 1 and 2
  are wholly padded (and, for Dream, so are query blocks 1 and 2);
- row 1: 200 valid tokens, so the padding starts inside kv block 1 and fills kv block 2.

Off TPU the kernel runs in Pallas interpret mode (MDU_JAX_SPLASH_INTERPRET=1): the kernel's own
loop over blocks with ordinary XLA ops. One head pair and head_dim 8 keep it to seconds.
Tolerances as in test_splash_attention.py: measured 1e-6 between the blockwise and the whole
softmax here (outputs up to 3), while a lost block or a mis-masked key moves outputs by O(0.1).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mdu_jax.models import layers, transformer
from tests.training.loss_helpers import tiny_config

ATOL = 2e-5
GRAD_RTOL = 1e-5
B, T, H, K, HD = 2, 384, 2, 1, 8
VALID = (128, 200)


@pytest.fixture
def interpret(monkeypatch):
    monkeypatch.setenv(layers.SPLASH_INTERPRET_ENV, "1")


def test_the_kernel_runs_several_blocks():
    assert layers.splash_block_size(T) == 128 and T // 128 == 3


@pytest.mark.slow  # interpret mode over 3 x 3 blocks with gradients: ~20 s per case
@pytest.mark.parametrize("kind", ["llada", "dream"])
def test_splash_equals_xla_across_blocks_with_padded_blocks(interpret, kind):
    attn = np.zeros((B, T), np.int32)
    for b, n in enumerate(VALID):
        attn[b, :n] = 1
    mask = transformer.attention_mask_4d(tiny_config(kind), jnp.asarray(attn))
    rng = np.random.default_rng(3)  # NumPy: a jax.random program per shape takes seconds to compile here
    q = jnp.asarray(rng.standard_normal((B, T, H, HD)), jnp.float32)
    k = jnp.asarray(rng.standard_normal((B, T, K, HD)), jnp.float32)
    # Values grow with the position, so a query that drops (or double-counts) a block of keys
    # lands far from the right average.
    v = jnp.asarray(rng.standard_normal((B, T, K, HD)) + np.arange(T)[None, :, None, None] / 64, jnp.float32)
    cot = jnp.asarray(rng.standard_normal((B, T, H, HD)), jnp.float32)
    valid = jnp.asarray(attn, jnp.float32)[:, :, None, None]

    def run(impl):
        def loss(q, k, v):
            out = layers.attention(q, k, v, mask, impl)
            return jnp.sum(out * cot * valid), out
        (_, out), grads = jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2), has_aux=True))(q, k, v)
        return np.asarray(out), [np.asarray(g) for g in grads]

    out_x, grads_x = run("xla")
    out_s, grads_s = run("splash")
    # Every query, valid or padded: LLaDA's padded queries see the valid keys; Dream's see no key
    # and average all T values in both paths (the same finite mask value everywhere).
    np.testing.assert_allclose(out_s, out_x, rtol=0, atol=ATOL)
    for name, gs, gx in zip("qkv", grads_s, grads_x):
        assert np.abs(gx).max() > 1e-2, f"d/d{name} is trivially zero"
        np.testing.assert_allclose(gs, gx, rtol=GRAD_RTOL, atol=ATOL, err_msg=f"d loss / d {name}")
    # Power: keys of every kv block matter to valid queries, so dropping one would show.
    for b, n in enumerate(VALID):
        blocks = range(0, n, 128)
        for start in blocks:
            assert np.abs(grads_x[1][b, start:min(start + 128, n)]).max() > 1e-3, (b, start)
