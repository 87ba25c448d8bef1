"""attention_impl='splash': the Pallas TPU splash kernel equals the XLA attention path.

Off TPU the kernel runs in Pallas interpret mode (opt-in through MDU_JAX_SPLASH_INTERPRET=1),
which executes the same kernel body (online softmax over kv blocks, segment-id padding mask,
custom VJP) with ordinary XLA ops, so these parity tests check the kernel's semantics, not TPU
numerics. Shapes are tiny: interpret mode is slow.

Tolerance, fp32: 2e-5 absolute (plus 1e-5 relative for gradients, whose entries reach a few
units). The two paths compute the same softmax in a different order (blockwise online softmax vs
one softmax; q pre-scaled by 1/sqrt(h) vs scaled logits): each differs from exact by a few fp32
ulps times a sum over T=128 keys, i.e. ~1e-6 on O(1) values; 2e-5 leaves margin while any
masking or head-grouping error shows up at O(0.1).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mdu_jax.models import layers, transformer
from mdu_jax.models.config import ConfigError
from mdu_jax.models.params import abstract_params
from tests.sampling.tiny import tiny_model
from tests.training.loss_helpers import tiny_config

ATOL = 2e-5
GRAD_RTOL = 1e-5
B, T, H, K, HD = 2, 128, 4, 2, 16


@pytest.fixture
def interpret(monkeypatch):
    monkeypatch.setenv(layers.SPLASH_INTERPRET_ENV, "1")


def padding_mask():
    """[B, T] validity: row 0 is right-padded after 100 tokens, row 1 has no padding."""
    attn = np.ones((B, T), np.int32)
    attn[0, 100:] = 0
    return attn


def normal(rng, shape):
    """float32 N(0, 1) draws (NumPy: a jax.random program per shape takes seconds to compile here)."""
    return jnp.asarray(rng.standard_normal(shape), jnp.float32)


def qkv(seed=0):
    rng = np.random.default_rng(seed)
    return normal(rng, (B, T, H, HD)), normal(rng, (B, T, K, HD)), normal(rng, (B, T, K, HD))


def mask_4d(kind, attn):
    """None, LLaDA's keys-only [B,1,1,T] mask, or Dream's queries-and-keys [B,1,T,T] mask."""
    if kind == "none":
        return None
    return transformer.attention_mask_4d(tiny_config(kind), jnp.asarray(attn))


@pytest.mark.parametrize("kind", ["none", "llada", "dream"])
def test_splash_equals_xla_outputs_and_grads(interpret, kind):
    """Same outputs at non-padded queries (and, by construction, at padded ones) and the same
    gradients w.r.t. q/k/v of sum(out * cotangent) over non-padded queries; H=4 query heads share
    K=2 kv heads."""
    attn = padding_mask() if kind != "none" else np.ones((B, T), np.int32)
    valid = attn.astype(np.float32)[:, :, None, None]
    mask = mask_4d(kind, attn)
    q, k, v = qkv()
    cot = normal(np.random.default_rng(7), (B, T, H, HD))

    def loss(impl, q, k, v):
        out = layers.attention(q, k, v, mask, impl)
        return jnp.sum(out * cot * valid), out

    results = {}
    for impl in ("xla", "splash"):
        (_, out), grads = jax.jit(jax.value_and_grad(lambda *a, impl=impl: loss(impl, *a), argnums=(0, 1, 2),
                                                     has_aux=True))(q, k, v)
        results[impl] = (np.asarray(out), [np.asarray(g) for g in grads])

    out_x, grads_x = results["xla"]
    out_s, grads_s = results["splash"]
    rows = np.asarray(attn, bool)
    np.testing.assert_allclose(out_s[rows], out_x[rows], rtol=0, atol=ATOL)
    # Padded queries: LLaDA's see the valid keys, Dream's see nothing (uniform over all T keys) in both.
    np.testing.assert_allclose(out_s, out_x, rtol=0, atol=ATOL)
    for name, gs, gx in zip("qkv", grads_s, grads_x):
        assert np.abs(gx).max() > 1e-2, f"d/d{name} is trivially zero"
        np.testing.assert_allclose(gs, gx, rtol=GRAD_RTOL, atol=ATOL, err_msg=f"d loss / d {name}")


def test_splash_really_masks_padding(interpret):
    """Changing the padded keys changes nothing at valid queries, and without the mask it would."""
    attn = padding_mask()
    mask = mask_4d("llada", attn)
    q, k, v = qkv()
    k2 = k.at[0, 100:].add(3.0)
    v2 = v.at[0, 100:].add(3.0)
    f = jax.jit(lambda k, v, m: layers.attention(q, k, v, m, "splash"))
    a, b = np.asarray(f(k, v, mask)[0, :100]), np.asarray(f(k2, v2, mask)[0, :100])
    np.testing.assert_allclose(a, b, rtol=0, atol=ATOL)
    c = np.asarray(jax.jit(lambda k, v: layers.attention(q, k, v, None, "splash"))(k2, v2)[0, :100])
    assert np.abs(c - a).max() > 0.1


@pytest.mark.parametrize("family", ["llada", "dream"])
def test_forward_splash_equals_xla(interpret, family):
    """A whole tiny model (2 layers, LLaDA: 4 heads; Dream: 4 query heads over 2 kv heads, masked
    queries) gives the same logits at non-padded positions with either attention."""
    cfg, params = tiny_model(family)  # random params drawn with NumPy: no init program to compile
    ids = jnp.asarray(np.random.default_rng(0).integers(2, cfg.vocab_size - 1, (B, T)), jnp.int32)
    attn = jnp.asarray(padding_mask())

    def logits(impl):
        c = cfg.replace(attention_impl=impl)
        return np.asarray(jax.jit(lambda p, i, m: transformer.forward(c, p, i, m))(params, ids, attn))

    ref, got = logits("xla"), logits("splash")
    rows = np.asarray(attn, bool)
    if family == "dream":
        rows[:, 0] = False  # Dream's position 0 is never a target (its logit comes from a shift)
    assert np.abs(ref[rows]).max() > 0.1
    np.testing.assert_allclose(got[rows], ref[rows], rtol=0, atol=ATOL)


def test_unsupported_sequence_length_raises(interpret):
    q = jnp.zeros((1, 96, H, HD))
    kv = jnp.zeros((1, 96, K, HD))
    with pytest.raises(ValueError, match=r"multiple of 128.*T=96"):
        layers.attention(q, kv, kv, None, "splash")
    cfg = tiny_config("llada", attention_impl="splash")
    ids = jnp.zeros((1, 96), jnp.int32)
    with pytest.raises(ValueError, match=r"T=96"):  # raised while tracing: shapes suffice
        jax.eval_shape(lambda p: transformer.forward(cfg, p, ids), abstract_params(cfg))


def test_per_head_mask_raises(interpret):
    q, k, v = qkv()
    with pytest.raises(ValueError, match="shared by all heads"):
        layers.attention(q, k, v, jnp.ones((B, H, T, T), bool), "splash")


def test_off_tpu_without_opt_in_raises(monkeypatch):
    monkeypatch.delenv(layers.SPLASH_INTERPRET_ENV, raising=False)
    q, k, v = qkv()
    with pytest.raises(ValueError, match=layers.SPLASH_INTERPRET_ENV):
        layers.attention(q, k, v, None, "splash")


@pytest.mark.parametrize("backend, T, head_dim, expected", [
    ("tpu", 128, 128, "splash"),
    ("tpu", 96, 128, "xla"),      # T not a multiple of 128
    ("tpu", 128, 16, "xla"),      # head_dim below the lane width
    ("cpu", 128, 128, "xla"),
])
def test_auto_choice(monkeypatch, backend, T, head_dim, expected):
    """'auto' takes splash on TPU only for supported shapes; elsewhere (fp32) XLA. The choice is
    made while tracing, so jax.eval_shape sees it without compiling the attention op by op."""
    calls = []
    q = jax.ShapeDtypeStruct((1, T, 2, head_dim), jnp.float32)
    monkeypatch.setattr(layers, "splash_attention", lambda q, *a, **kw: calls.append("splash") or q)
    monkeypatch.setattr(layers.jax, "default_backend", lambda: backend)
    out = jax.eval_shape(lambda q: layers.attention(q, q, q, None, "auto"), q)
    assert out.shape == q.shape
    assert calls == (["splash"] if expected == "splash" else [])


def test_config_accepts_splash():
    assert tiny_config("llada", attention_impl="splash").attention_impl == "splash"
    with pytest.raises(ConfigError, match="attention_impl"):
        tiny_config("llada", attention_impl="flash")
