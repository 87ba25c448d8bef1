"""The MDLM loss: NumPy parity, CART weights, normalisations, and the ELBO in expectation."""

import functools
import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import integrate

from mdu_jax import diffusion
from tests.objectives.quick_jit import quick_jit
from tests.objectives import formulas_np as F
from tests.objectives.random_batch import random_batch


@functools.lru_cache(maxsize=None)
def _loss(weight, schedule, norm):
    return quick_jit(lambda lg, y, m, mk, t, rows: diffusion.mdlm_loss(
        lg, y, m, mk, t, weight=weight, schedule=schedule, norm=norm, rows=rows))


@pytest.mark.parametrize("weight,schedule", [("scheduler", "linear"), ("scheduler", "cosine"),
                                             ("uniform", "linear"), ("cart", "linear")])
def test_mdlm_loss_matches_numpy_formula(weight, schedule):
    b = random_batch(20, B=4)
    rows = np.array([True, False, True, True])
    for norm in diffusion.NORMS:
        f = _loss(weight, schedule, norm)
        for r in (None, rows):
            got = f(b["cond"], b["ids"], b["masked"], b["maskable"], b["t"], r)
            want = F.mdlm_loss(b["cond"], b["ids"], b["masked"], b["maskable"], b["t"], weight=weight,
                               schedule=schedule, norm=norm, rows=r)
            assert got.dtype == jnp.float32
            np.testing.assert_allclose(got, want, rtol=1e-5, err_msg=f"{norm} rows={r}")


def test_mdlm_loss_upcasts_bf16_logits():
    b = random_batch(21)
    lg = jnp.asarray(b["cond"], jnp.bfloat16)
    got = quick_jit(diffusion.mdlm_loss)(lg, b["ids"], b["masked"], b["maskable"], b["t"])
    want = F.mdlm_loss(np.asarray(lg, np.float32), b["ids"], b["masked"], b["maskable"], b["t"])
    np.testing.assert_allclose(got, want, rtol=1e-5)


def test_token_norm_divides_by_maskable_not_masked_count():
    b = random_batch(22)
    m = b["masked"]
    w = 1.0 / (b["t"][:, None] + 1e-6)
    ce = F.cross_entropy(b["cond"], b["ids"])
    got = _loss("scheduler", "linear", "token")(b["cond"], b["ids"], m, b["maskable"], b["t"], None)
    np.testing.assert_allclose(got, (w * ce)[m].sum() / b["maskable"].sum(), rtol=1e-5)
    assert b["maskable"].sum() > m.sum()  # the two denominators differ in this batch


def test_masked_positions_outside_maskable_are_not_scored():
    b = random_batch(23)
    everything = np.ones_like(b["masked"])
    got = _loss("uniform", "linear", "token")(b["cond"], b["ids"], everything, b["maskable"], b["t"], None)
    want = F.mdlm_loss(b["cond"], b["ids"], b["maskable"], b["maskable"], b["t"], weight="uniform")
    np.testing.assert_allclose(got, want, rtol=1e-5)


def test_cart_weights_match_the_definition():
    rng = np.random.default_rng(24)
    masked = rng.random((3, 17)) < 0.6
    masked[2] = True  # a fully masked row has no unmasked neighbour: weights 0
    got = np.asarray(quick_jit(diffusion.cart_weights)(masked))
    np.testing.assert_allclose(got, F.cart(masked), rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(got[~masked], 0.0)
    np.testing.assert_array_equal(got[2], 0.0)
    # an isolated masked token between two visible ones gets 2 * 0.5 p = p, plus the far ones
    m = np.zeros((1, 3), bool)
    m[0, 1] = True
    np.testing.assert_allclose(diffusion.cart_weights(m, p=0.3)[0, 1], 0.3, rtol=1e-6)


def test_sequence_nll_is_the_per_row_weighted_sum():
    b = random_batch(25)
    got = quick_jit(diffusion.sequence_nll)(b["cond"], b["ids"], b["masked"], b["maskable"], b["t"])
    want = F.row_nll(b["cond"], b["ids"], b["masked"], b["maskable"], b["t"])
    np.testing.assert_allclose(got, want, rtol=1e-5)


def test_unknown_weight_or_norm_is_an_error():
    b = random_batch(0)
    args = (b["cond"], b["ids"], b["masked"], b["maskable"], b["t"])
    with pytest.raises(ValueError, match="weight"):
        diffusion.mdlm_loss(*args, weight="ones")
    with pytest.raises(ValueError, match="norm"):
        diffusion.mdlm_loss(*args, norm="tokens")


# ----------------------------------------------------------------------------- the ELBO

L_RESP, V_TOY, MASK_TOY = 3, 4, 4  # 3 response tokens over 4 symbols; the mask id is 4
CLEAN = np.array([2, 0, 3, 1, 0], np.int32)  # [prompt | r1 r2 r3 | pad]
MASKABLE = np.array([False, True, True, True, False])


def _toy_denoiser_table(seed=26):
    """A fixed 'model': logits [T, V+1] for every one of the 5^3 noised responses."""
    return 2.0 * np.random.default_rng(seed).standard_normal((5 ** L_RESP, 5, V_TOY + 1))


def _code(noised):
    r = noised[..., 1:1 + L_RESP]
    return (r * np.array([25, 5, 1])).sum(-1)


def _exact_expected_loss(table, schedule, weight_fn):
    """E_{t ~ U(eps, 1), masks ~ 1 - alpha(t)} of the token-normalised loss, by enumerating
    all 2^3 masks and integrating over t by adaptive quadrature (error ~1e-10)."""
    eps = 1e-3
    total = 0.0
    for bits in itertools.product([0, 1], repeat=L_RESP):
        k = sum(bits)
        if k == 0:
            continue
        noised = CLEAN.copy()
        noised[1:1 + L_RESP] = np.where(np.array(bits, bool), MASK_TOY, CLEAN[1:1 + L_RESP])
        ce = F.cross_entropy(table[_code(noised)][None], CLEAN[None])[0]
        scored = sum(ce[1 + i] for i in range(L_RESP) if bits[i])

        def integrand(t):
            p = 1 - F.alpha(t, schedule)
            return weight_fn(t) * p ** k * (1 - p) ** (L_RESP - k)

        c, _ = integrate.quad(integrand, eps, 1.0, epsabs=1e-12, epsrel=1e-10, limit=200)
        total += c / (1 - eps) * scored
    return total / L_RESP  # 'token' norm: divided by the 3 maskable tokens


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_mdlm_loss_expectation_is_the_exact_elbo(schedule):
    """Mean of the loss over N draws of (t, mask) vs the enumerated expectation.

    Monte Carlo bound: the draws are i.i.d., so the error of the mean has standard deviation
    sigma / sqrt(N); we require |mean - exact| < 4 sigma_hat / sqrt(N) (a 6e-5 two-sided tail
    under the CLT; N = 40000 makes sigma_hat itself accurate to ~1%). The same bound rejects
    the loss without the time weight (checked below), so the test has power.
    """
    table = _toy_denoiser_table()
    N = 40000
    key_t, key_m = jax.random.split(jax.random.key(27))
    ids = np.broadcast_to(CLEAN, (N, CLEAN.size))
    maskable = np.broadcast_to(MASKABLE, ids.shape)

    @jax.jit
    def per_row_losses(kt, km):
        t = diffusion.sample_times(kt, N)
        noised, masked = diffusion.forward_mask(km, ids, maskable, t, MASK_TOY, schedule)
        code = jnp.sum(noised[:, 1:1 + L_RESP] * jnp.array([25, 5, 1]), axis=-1)
        logits = jnp.asarray(table, jnp.float32)[code]  # [N, T, V+1]
        one = lambda lg, y, m, mk, tt: diffusion.mdlm_loss(lg[None], y[None], m[None], mk[None],  # noqa: E731
                                                           tt[None], schedule=schedule)
        return jax.vmap(one)(logits, ids, masked, maskable, t)

    losses = np.asarray(per_row_losses(key_t, key_m), np.float64)
    mean, se = losses.mean(), losses.std(ddof=1) / math.sqrt(N)
    exact = _exact_expected_loss(table, schedule, lambda t: F.time_weight(t, schedule))
    assert abs(mean - exact) < 4 * se, (mean, exact, se)
    # power: a loss without the ELBO weight has a different expectation, far outside the bound
    unweighted = _exact_expected_loss(table, schedule, lambda t: np.ones_like(t))
    assert abs(unweighted - exact) > 20 * se


# ----------------------------------------------------------------------------- distributed

def test_axis_name_makes_device_shares_add_up_to_the_global_loss_and_gradient():
    n_dev = 2
    b = random_batch(28, B=4)
    args = (b["cond"], b["ids"], b["masked"], b["maskable"], b["t"])
    split = [a.reshape((n_dev, a.shape[0] // n_dev) + a.shape[1:]) for a in args]

    def losses(lg, y, m, mk, t, axis=None):  # the three normalisations, stacked
        return jnp.stack([diffusion.mdlm_loss(lg, y, m, mk, t, norm=norm, weight="cart", axis_name=axis)
                          for norm in diffusion.NORMS])

    glob, g_glob = quick_jit(lambda *a: (losses(*a), jax.jacrev(losses)(*a)))(*args)
    def per_device(*a):
        return losses(*a, axis="d"), jax.jacrev(lambda x: losses(x, *a[1:], axis="d"))(a[0])

    shares, g_shares = jax.pmap(per_device, axis_name="d", devices=jax.devices()[:n_dev])(*split)
    np.testing.assert_allclose(np.sum(shares, 0), glob, rtol=1e-6)
    # gradient of each norm w.r.t. the logits: device shares stacked back over the rows
    g_shares = np.concatenate(list(np.asarray(g_shares)), axis=1)
    np.testing.assert_allclose(g_shares, g_glob, rtol=1e-6, atol=1e-9)
