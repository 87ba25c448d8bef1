"""attention_impl='cudnn' / 'auto' on GPU, checked as far as a CPU can.

The cuDNN kernel itself needs an NVIDIA GPU and has not run in these tests. What they check: when
'auto' takes cuDNN (GPU backend, bf16/fp16 activations) and when not; that the call handed to
``jax.nn.dot_product_attention(implementation='cudnn')`` (mask, scale, grouped heads,
bidirectional) describes exactly the XLA path's attention, by running that same call with jax's
XLA implementation on CPU, for LLaDA's key-only and Dream's query-and-key padding masks and in a
whole model; and that an explicit 'cudnn' without a GPU is an error, not a silent fallback.
Unverified here: the cuDNN kernel's numerics, and its output at Dream's fully masked pad rows
(the XLA path gives a uniform average there; test_release_semantics.py).
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mdu_jax.models import layers, transformer
from tests.training.loss_helpers import tiny_config, tiny_params

B, T, H, K, HD = 2, 16, 4, 2, 8


@pytest.fixture
def cudnn_calls(monkeypatch):
    """Records every jax.nn.dot_product_attention call and runs it with jax's XLA implementation."""
    calls = []
    real = jax.nn.dot_product_attention

    def recording(*args, **kwargs):
        calls.append(kwargs)
        return real(*args, **{**kwargs, "implementation": "xla"})

    monkeypatch.setattr(jax.nn, "dot_product_attention", recording)
    return calls


def qkv(dtype=jnp.float32):
    keys = jax.random.split(jax.random.key(0), 3)
    return tuple(jax.random.normal(k, (B, T, n, HD), jnp.float32).astype(dtype) for k, n in zip(keys, (H, K, K)))


def padding(family):
    attn = np.ones((B, T), np.int32)
    attn[0, 10:] = 0
    return attn, transformer.attention_mask_4d(tiny_config(family), jnp.asarray(attn))


@pytest.mark.parametrize("backend, dtype, expected", [
    ("gpu", jnp.bfloat16, "cudnn"), ("gpu", jnp.float16, "cudnn"),
    ("gpu", jnp.float32, "xla"),   # cuDNN flash attention has no fp32 kernel
    ("cpu", jnp.bfloat16, "xla"),
])
def test_auto_takes_cudnn_on_gpu_in_half_precision(monkeypatch, cudnn_calls, backend, dtype, expected):
    monkeypatch.setattr(jax, "default_backend", lambda: backend)
    q, k, v = qkv(dtype)
    layers.attention(q, k, v, None, "auto")
    assert [c["implementation"] for c in cudnn_calls] == (["cudnn"] if expected == "cudnn" else [])


@pytest.mark.parametrize("family", ["none", "llada", "dream"])
def test_the_cudnn_call_is_the_xla_attention(cudnn_calls, family):
    q, k, v = qkv()
    mask = None if family == "none" else padding(family)[1]
    got = np.asarray(layers.attention(q, k, v, mask, "cudnn"))
    (call,) = cudnn_calls
    assert call["implementation"] == "cudnn" and call["is_causal"] is False
    assert call["scale"] == pytest.approx(1 / math.sqrt(HD))
    # Every position, Dream's fully masked pad rows included (jax's XLA implementation of the
    # call averages all values there, as layers' XLA path does).
    np.testing.assert_allclose(got, np.asarray(layers.attention(q, k, v, mask, "xla")), rtol=0, atol=1e-6)


@pytest.mark.parametrize("family", ["llada", "dream"])
def test_a_model_with_cudnn_attention_is_the_xla_model(cudnn_calls, family):
    cfg = tiny_config(family)
    params = tiny_params(cfg, scale=1.0)
    ids = jnp.asarray(np.random.default_rng(0).integers(2, cfg.vocab_size - 1, (B, T)), jnp.int32)
    attn = jnp.asarray(padding(family)[0])

    def logits(impl):
        c = cfg.replace(attention_impl=impl)
        return np.asarray(jax.jit(lambda p: transformer.forward(c, p, ids, attn))(params))

    ref, got = logits("xla"), logits("cudnn")
    assert cudnn_calls and all(c["implementation"] == "cudnn" for c in cudnn_calls)  # (the layer scan traces once)
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-5)


def test_explicit_cudnn_without_a_gpu_is_an_error():
    if jax.default_backend() == "gpu":
        pytest.skip("a GPU is present: the kernel can run")
    q, k, v = qkv(jnp.bfloat16)
    with pytest.raises(RuntimeError, match="cuDNN"):
        layers.attention(q, k, v, None, "cudnn")
