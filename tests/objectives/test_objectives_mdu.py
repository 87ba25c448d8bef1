"""The MDU loss: parity with a NumPy implementation of the formula, and its properties."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mdu_jax.objectives import (mdu_loss, mdu_objective, template_keep_mask, token_divergence,
                                unconditional_inputs)
from tests.objectives.quick_jit import quick_jit
from tests.objectives import formulas_np as F
from tests.objectives.random_batch import random_batch

TAUS = (0.0, 0.25, 0.5, 0.75, 1.0, 2.0)
ETAS = (0.0, 1.0)
DIVERGENCES = ("forward", "reverse", "js")
EXCLUDE = (0, 5, 12)  # ids removed from both distributions (V = 13)


@functools.lru_cache(maxsize=None)
def _jitted_loss(divergence, exclude):
    # tau and eta are traced: one compilation serves the whole (tau, eta) grid.
    return quick_jit(lambda lc, lu, m, tau, eta: mdu_loss(lc, lu, m, tau=tau, eta=eta,
                                                        divergence=divergence, exclude_ids=exclude))


@pytest.mark.parametrize("exclude", [None, EXCLUDE], ids=["all_ids", "excluded_ids"])
@pytest.mark.parametrize("divergence", DIVERGENCES)
def test_mdu_loss_matches_numpy_formula(divergence, exclude):
    b = random_batch(1)
    f = _jitted_loss(divergence, exclude)
    for tau in TAUS:
        for eta in ETAS:
            got = f(b["cond"], b["anchor"], b["masked"], tau, eta)
            want = F.mdu_loss(b["cond"], b["anchor"], b["masked"], tau=tau, eta=eta, kind=divergence,
                              exclude=exclude)
            assert got.dtype == jnp.float32
            np.testing.assert_allclose(got, want, rtol=1e-5, err_msg=f"tau={tau} eta={eta}")


def test_mdu_loss_upcasts_bf16_logits_to_fp32():
    b = random_batch(2)
    lc, lu = jnp.asarray(b["cond"], jnp.bfloat16), jnp.asarray(b["anchor"], jnp.bfloat16)
    got = quick_jit(lambda a, c: mdu_loss(a, c, b["masked"], tau=0.5))(lc, lu)
    want = F.mdu_loss(np.asarray(lc, np.float32), np.asarray(lu, np.float32), b["masked"],
                      tau=0.5, eta=0.0, kind="forward")
    assert got.dtype == jnp.float32
    np.testing.assert_allclose(got, want, rtol=1e-5)


@pytest.mark.parametrize("divergence", DIVERGENCES)
def test_divergence_is_nonnegative(divergence):
    b = random_batch(3, B=4, scale=8.0)  # peaked distributions
    f = quick_jit(lambda lc, lu, tau, eta: token_divergence(lc, lu, tau=tau, eta=eta, divergence=divergence))
    for tau in TAUS:
        for eta in ETAS:
            d = np.asarray(f(b["cond"], b["anchor"], tau, eta))
            assert np.all(np.isfinite(d)) and d.min() >= -1e-6, (tau, eta, d.min())


@pytest.mark.parametrize("exclude", [None, EXCLUDE])
@pytest.mark.parametrize("divergence", DIVERGENCES)
def test_mdu_is_zero_when_cond_equals_anchor_at_tau_1_eta_0(divergence, exclude):
    b = random_batch(4)
    f = quick_jit(lambda lc, lu, tau: token_divergence(lc, lu, tau=tau, eta=0.0, divergence=divergence,
                                                     exclude_ids=exclude))
    np.testing.assert_allclose(f(b["cond"], b["cond"], 1.0), 0.0, atol=1e-6)
    # and not zero once tau moves away from 1
    assert np.asarray(f(b["cond"], b["cond"], 0.5)).min() > 1e-4


@pytest.mark.parametrize("exclude", [None, EXCLUDE])
def test_tau_0_is_the_kl_to_uniform(exclude):
    b = random_batch(5)
    f = quick_jit(lambda lc, lu: token_divergence(lc, lu, tau=0.0, exclude_ids=exclude))
    d = np.asarray(f(b["cond"], b["anchor"]))
    lc = np.asarray(b["cond"], np.float64)
    if exclude is not None:
        lc = np.delete(lc, EXCLUDE, axis=-1)  # uniform over the remaining ids
    lp = F.log_softmax(lc)
    entropy = -(np.exp(lp) * lp).sum(-1)
    np.testing.assert_allclose(d, np.log(lc.shape[-1]) - entropy, rtol=1e-5, atol=1e-6)
    # the anchor is irrelevant at tau = 0
    d2 = f(b["cond"], b["extra"])
    np.testing.assert_allclose(d2, d, rtol=1e-6)


@pytest.mark.parametrize("divergence", DIVERGENCES)
def test_tau_0_with_excluded_ids_has_finite_values_and_gradients(divergence):
    b = random_batch(6)
    # extreme logits on the excluded ids must not leak into anything
    lc = b["cond"].copy()
    lc[..., list(EXCLUDE)] = 1e30
    f = lambda x: mdu_loss(x, b["anchor"], b["masked"], tau=0.0, divergence=divergence,  # noqa: E731
                           exclude_ids=EXCLUDE)
    val, g = quick_jit(jax.value_and_grad(f))(lc)
    assert np.isfinite(val) and np.all(np.isfinite(g))
    np.testing.assert_array_equal(np.asarray(g)[..., list(EXCLUDE)], 0.0)
    want = F.mdu_loss(b["cond"], b["anchor"], b["masked"], tau=0.0, eta=0.0, kind=divergence, exclude=EXCLUDE)
    np.testing.assert_allclose(val, want, rtol=1e-5)


@pytest.mark.parametrize("exclude", [None, EXCLUDE])
@pytest.mark.parametrize("divergence", DIVERGENCES)
def test_no_gradient_flows_into_the_anchor(divergence, exclude):
    b = random_batch(7)
    f = lambda lc, lu, eta: mdu_loss(lc, lu, b["masked"], tau=0.5, eta=eta, divergence=divergence,  # noqa: E731
                                     exclude_ids=exclude)
    grads = quick_jit(jax.grad(f, argnums=(0, 1)))
    for eta in ETAS:
        g_cond, g_anchor = grads(b["cond"], b["anchor"], eta)
        np.testing.assert_array_equal(g_anchor, 0.0)
        assert np.abs(np.asarray(g_cond)).max() > 1e-4  # the conditional side does learn


def _central_differences(f, x, h=1e-6):
    x = np.asarray(x, np.float64)
    g = np.zeros_like(x)
    for idx in np.ndindex(x.shape):
        e = np.zeros_like(x)
        e[idx] = h
        g[idx] = (float(f(x + e)) - float(f(x - e))) / (2 * h)
    return g


@pytest.mark.parametrize("exclude", [None, (1, 4)])
@pytest.mark.parametrize("divergence", DIVERGENCES)
def test_gradient_matches_central_differences_fp64(divergence, exclude):
    rng = np.random.default_rng(8)
    B, T, V = 2, 3, 6
    lc0, lu = 2 * rng.standard_normal((B, T, V)), 2 * rng.standard_normal((B, T, V))
    masked = np.array([[True, False, True], [False, True, True]])
    tau = 0.75
    kw = dict(tau=tau, divergence=divergence, exclude_ids=exclude)
    with jax.enable_x64(True):
        loss = quick_jit(lambda x, anchor: mdu_loss(x, anchor, masked, eta=0.0, **kw))
        grad = quick_jit(jax.grad(lambda x, anchor, eta: mdu_loss(x, anchor, masked, eta=eta, **kw)))
        for eta in ETAS:
            g = grad(lc0, lu, eta)
            assert g.dtype == jnp.float64
            # The target is a stop-gradient function of l_c: the gradient is that of the loss with
            # the target frozen at l_c0, i.e. eta = 0 and the anchor (1 + eta) l_u - eta l_c0.
            frozen_anchor = (1 + eta) * lu - eta * lc0
            fd = _central_differences(lambda x: loss(x, frozen_anchor), lc0)
            np.testing.assert_allclose(g, fd, rtol=1e-6, atol=1e-9, err_msg=f"eta={eta}")


def test_nan_to_num_reproduces_the_llada_safe_kl():
    b = random_batch(9)
    lc = b["cond"].copy()
    lc[0, :, 3] = -np.inf  # p_c = 0 there: 0 * (-inf - log p_t) is NaN in the plain formula
    masked = b["masked"]
    plain = mdu_loss(lc, b["anchor"], masked)
    safe = mdu_loss(lc, b["anchor"], masked, nan_to_num=True)
    assert np.isnan(plain)  # Dream's reference formula
    # LLaDA's _safe_kl drops the NaN term: the KL restricted to the other ids of p_c, against
    # the full-vocabulary target
    lpc = F.log_softmax(lc.astype(np.float64))
    lpt = F.log_softmax(b["anchor"].astype(np.float64))
    with np.errstate(invalid="ignore"):
        terms = np.nan_to_num(np.exp(lpc) * (lpc - lpt), nan=0.0)
    want = terms.sum(-1)[masked].sum() / masked.sum()
    np.testing.assert_allclose(safe, want, rtol=1e-5)


def test_mdu_loss_divides_by_the_masked_count_and_has_no_time_weight():
    b = random_batch(10)
    d = np.asarray(token_divergence(b["cond"], b["anchor"]))
    m = b["masked"]
    np.testing.assert_allclose(mdu_loss(b["cond"], b["anchor"], m), d[m].mean(), rtol=1e-6)
    assert float(mdu_loss(b["cond"], b["anchor"], np.zeros_like(m))) == 0.0


def test_unknown_divergence_is_an_error():
    b = random_batch(0)
    with pytest.raises(ValueError, match="divergence"):
        mdu_loss(b["cond"], b["anchor"], b["masked"], divergence="kl")


# ----------------------------------------------------------------------------- inputs

def test_unconditional_inputs_mask_every_non_response_position_including_padding():
    MASK = 99
    ids = np.array([[5, 6, 7, 8, 99, 9, 1, 1],
                    [5, 6, 7, 99, 99, 1, 1, 1]], np.int32)       # row-wise: prompt | noised response | pad
    response = np.array([[0, 0, 1, 1, 1, 1, 0, 0],
                         [0, 0, 0, 1, 1, 0, 0, 0]], bool)
    out = np.asarray(quick_jit(unconditional_inputs, static_argnums=2)(ids, response, MASK))
    np.testing.assert_array_equal(out[~response], MASK)            # prompt and padding
    np.testing.assert_array_equal(out[response], ids[response])    # the partial masking is kept

    keep = np.asarray(template_keep_mask(ids, [6, 1], response))
    np.testing.assert_array_equal(keep, np.isin(ids, [6, 1]) & ~response)
    out = np.asarray(unconditional_inputs(ids, response, MASK, keep_mask=keep))
    np.testing.assert_array_equal(out[keep], ids[keep])
    np.testing.assert_array_equal(out[~keep & ~response], MASK)
    np.testing.assert_array_equal(out[response], ids[response])


# ----------------------------------------------------------------------------- the objective

@pytest.mark.parametrize("retain_loss_weight", ["scheduler", "cart"])
def test_mdu_objective_is_forget_term_plus_lambda_retain(retain_loss_weight):
    b = random_batch(11, B=4)
    is_forget = np.array([True, False, True, False])
    lam = 0.7
    f = quick_jit(lambda lc, lu: mdu_objective(lc, lu, b["ids"], b["masked"], b["maskable"], b["t"],
                                             is_forget, tau=0.25, eta=1.0, divergence="js",
                                             retain_weight=lam, retain_loss_weight=retain_loss_weight))
    loss, aux = f(b["cond"], b["anchor"])
    fm = b["masked"] & is_forget[:, None]
    forget = F.mdu_loss(b["cond"], b["anchor"], fm, tau=0.25, eta=1.0, kind="js")
    retain = F.mdlm_loss(b["cond"], b["ids"], b["masked"], b["maskable"], b["t"],
                         weight=retain_loss_weight, rows=~is_forget)
    np.testing.assert_allclose(aux["forget_loss"], forget, rtol=1e-5)
    np.testing.assert_allclose(aux["retain_loss"], retain, rtol=1e-5)
    np.testing.assert_allclose(loss, forget + lam * retain, rtol=1e-5)
    assert aux["forget_tokens"] == fm.sum()
    assert aux["retain_tokens"] == (b["maskable"] & ~is_forget[:, None]).sum()
