"""Chunked evaluation from hidden states: same values and gradients, lower compiled peak memory."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mdu_jax import diffusion
from mdu_jax.objectives import baselines as BL
from mdu_jax.objectives import chunked as C
from mdu_jax.objectives import mdu_loss, mdu_objective
from tests.objectives.quick_jit import quick_jit

B, T, D, V = 3, 37, 16, 29  # T is not a multiple of the chunk sizes below


@pytest.fixture(scope="module")
def inputs():
    rng = np.random.default_rng(40)
    maskable = np.zeros((B, T), bool)
    maskable[0, 3:30] = maskable[1, 5:37] = maskable[2, 1:12] = True  # rows 0 and 2 end in padding
    masked = (rng.random((B, T)) < 0.5) & maskable
    f32 = lambda *s: rng.standard_normal(s).astype(np.float32)  # noqa: E731
    return {"hc": f32(B, T, D), "kc": f32(D, V), "ha": f32(B, T, D), "ka": f32(D, V),
            "ids": rng.integers(0, V, (B, T)).astype(np.int32), "masked": masked, "maskable": maskable,
            "t": rng.uniform(0.05, 1.0, B).astype(np.float32), "is_forget": np.array([True, False, True])}


def test_chunked_position_sum_is_the_plain_row_sum():
    x = np.random.default_rng(41).standard_normal((2, 11, 3)).astype(np.float32)
    fn = lambda a: {"s": a.sum(-1), "q": (a ** 2).sum(-1)}  # noqa: E731
    for size in (0, 4, 50):  # one chunk; a scan with a zero-padded last chunk; chunk > T
        got = C.chunked_position_sum(fn, size, x)
        np.testing.assert_allclose(got["s"], x.sum((1, 2)), rtol=1e-6)
        np.testing.assert_allclose(got["q"], (x ** 2).sum((1, 2)), rtol=1e-6)
    with pytest.raises(ValueError, match="leading shape"):
        C.chunked_position_sum(lambda a, b: a.sum(-1), 4, x, x[:, :5])


@pytest.mark.parametrize("divergence,exclude,tau,eta", [("forward", None, 0.5, 0.0), ("reverse", (0, 7), 0.0, 0.0),
                                                        ("js", (3,), 2.0, 1.0)])
def test_chunked_mdu_loss_equals_unchunked_with_gradients(inputs, divergence, exclude, tau, eta):
    x = inputs
    kw = dict(tau=tau, eta=eta, divergence=divergence, exclude_ids=exclude)
    full = lambda hc, kc, ha, ka: mdu_loss(hc @ kc, ha @ ka, x["masked"], **kw)  # noqa: E731
    part = lambda hc, kc, ha, ka: C.chunked_mdu_loss(hc, kc, ha, ka, x["masked"], chunk_size=8, **kw)  # noqa: E731
    both = quick_jit(lambda *a: [jax.value_and_grad(f, argnums=(0, 1, 2, 3))(*a) for f in (full, part)])
    (v1, g1), (v2, g2) = both(x["hc"], x["kc"], x["ha"], x["ka"])
    np.testing.assert_allclose(v2, v1, rtol=1e-6)
    _assert_grads_close(g2[:2], g1[:2])
    assert all(np.all(np.asarray(g) == 0) for g in g2[2:])  # the anchor side gets no gradient


def _assert_grads_close(got, want):
    # gradients are sums over V of products: compare at fp32 rounding of their scale
    for a, b in zip(got, want):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6 * np.abs(b).max())


@pytest.mark.parametrize("weight,norm", [("scheduler", "token"), ("cart", "sequence"), ("uniform", "batch")])
def test_chunked_mdlm_loss_equals_unchunked_with_gradients(inputs, weight, norm):
    x = inputs
    kw = dict(weight=weight, norm=norm, rows=x["is_forget"])
    args = (x["ids"], x["masked"], x["maskable"], x["t"])
    full = lambda h, k: diffusion.mdlm_loss(h @ k, *args, **kw)  # noqa: E731
    part = lambda h, k: C.chunked_mdlm_loss(h, k, *args, chunk_size=8, **kw)  # noqa: E731
    both = quick_jit(lambda *a: [jax.value_and_grad(f, argnums=(0, 1))(*a) for f in (full, part)])
    (v1, g1), (v2, g2) = both(x["hc"], x["kc"])
    np.testing.assert_allclose(v2, v1, rtol=1e-6)
    _assert_grads_close(g2, g1)


def test_chunked_objective_and_row_statistics_equal_unchunked(inputs):
    x = inputs
    args = (x["ids"], x["masked"], x["maskable"], x["t"])
    kw = dict(tau=0.25, retain_weight=0.7, retain_loss_weight="cart")

    @quick_jit
    def both(hc, kc, ha, ka):
        lc, la = hc @ kc, ha @ ka
        full = {"objective": mdu_objective(lc, la, *args, x["is_forget"], **kw),
                "nll": diffusion.sequence_nll(lc, *args),
                "npo": BL.npo_loss(lc, la, *args),  # the chunked path: npo_from_nll of chunked sums
                "me": BL.me_loss(lc, x["masked"])}
        s, s_ref = (C.chunked_sequence_nll(h, k, *args, chunk_size=8) for h, k in ((hc, kc), (ha, ka)))
        part = {"objective": C.chunked_mdu_objective(hc, kc, ha, ka, *args, x["is_forget"], chunk_size=8, **kw),
                "nll": s, "npo": BL.npo_from_nll(s, s_ref, x["maskable"]),
                "me": C.chunked_me_loss(hc, kc, x["masked"], chunk_size=8)}
        return full, part

    full, part = both(x["hc"], x["kc"], x["ha"], x["ka"])
    np.testing.assert_allclose(part["objective"][0], full["objective"][0], rtol=1e-6)
    for k in full["objective"][1]:
        np.testing.assert_allclose(part["objective"][1][k], full["objective"][1][k], rtol=1e-6, err_msg=k)
    for k in ("nll", "npo", "me"):
        np.testing.assert_allclose(part[k], full[k], rtol=1e-6, err_msg=k)


def _peak_bytes(f, *args):
    m = jax.jit(f).lower(*args).compile().memory_analysis()
    return m.temp_size_in_bytes + m.output_size_in_bytes


def test_chunked_mdu_loss_has_lower_compiled_peak_memory():
    b, t, d, v, chunk = 2, 256, 32, 4096, 32
    sd = jax.ShapeDtypeStruct
    hidden, kernel = sd((b, t, d), jnp.float32), sd((d, v), jnp.float32)
    masked = sd((b, t), jnp.bool_)
    full = lambda hc, kc, ha, ka, m: mdu_loss(hc @ kc, ha @ ka, m, tau=0.5)  # noqa: E731
    part = lambda hc, kc, ha, ka, m: C.chunked_mdu_loss(hc, kc, ha, ka, m, chunk_size=chunk, tau=0.5)  # noqa: E731
    args = (hidden, kernel, hidden, kernel, masked)
    logits_bytes = b * t * v * 4
    for grad in (False, True):
        wrap = (lambda f: jax.value_and_grad(f, argnums=(0, 1))) if grad else (lambda f: f)
        unchunked, chunked = _peak_bytes(wrap(full), *args), _peak_bytes(wrap(part), *args)
        assert unchunked >= logits_bytes  # at least one full fp32 [B, T, V] array
        assert chunked < unchunked / 4, (grad, chunked, unchunked)
