"""The unlearning baselines: parity with NumPy versions of the paper formulas, and properties."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mdu_jax import diffusion
from mdu_jax.objectives import baselines as BL
from mdu_jax.objectives import mdu_loss
from tests.objectives.quick_jit import quick_jit
from tests.objectives import formulas_np as F
from tests.objectives.random_batch import random_batch

ROWS = np.array([True, False, True, True])  # forget rows of a mixed batch


@pytest.fixture(scope="module")
def batch():
    b = random_batch(30, B=4)
    b["is_forget"] = ROWS
    return b


def _S(b, key, weight="scheduler"):
    return F.row_nll(b[key], b["ids"], b["masked"], b["maskable"], b["t"], weight=weight)


def test_ga_is_the_negated_mdlm_loss(batch):
    b = batch
    got = quick_jit(lambda lg: BL.ga_loss(lg, b["ids"], b["masked"], b["maskable"], b["t"], rows=ROWS))(b["cond"])
    want = -F.mdlm_loss(b["cond"], b["ids"], b["masked"], b["maskable"], b["t"], rows=ROWS)
    np.testing.assert_allclose(got, want, rtol=1e-5)
    loss, aux = quick_jit(lambda lg: BL.ga_objective(lg, b["ids"], b["masked"], b["maskable"], b["t"], ROWS,
                                                     weight="cart"))(b["cond"])
    np.testing.assert_allclose(loss, -F.mdlm_loss(b["cond"], b["ids"], b["masked"], b["maskable"], b["t"],
                                                  weight="cart", rows=ROWS), rtol=1e-5)


def test_graddiff_is_ga_on_forget_plus_lambda_retain(batch):
    b = batch
    f = quick_jit(lambda lg: BL.graddiff_objective(lg, b["ids"], b["masked"], b["maskable"], b["t"], ROWS,
                                                 retain_weight=0.5, norm="sequence"))
    loss, aux = f(b["cond"])
    forget = -F.mdlm_loss(b["cond"], b["ids"], b["masked"], b["maskable"], b["t"], norm="sequence", rows=ROWS)
    retain = F.mdlm_loss(b["cond"], b["ids"], b["masked"], b["maskable"], b["t"], norm="sequence", rows=~ROWS)
    np.testing.assert_allclose(aux["forget_loss"], forget, rtol=1e-5)
    np.testing.assert_allclose(aux["retain_loss"], retain, rtol=1e-5)
    np.testing.assert_allclose(loss, forget + 0.5 * retain, rtol=1e-5)


@pytest.mark.parametrize("beta", [0.1, 1.0])
def test_npo_matches_the_formula_per_sequence_and_batch_level(batch, beta):
    b = batch
    S, S_ref = _S(b, "cond"), _S(b, "ref")
    n = b["maskable"].sum(-1)
    f = quick_jit(lambda lg, ref: (
        BL.npo_loss(lg, ref, b["ids"], b["masked"], b["maskable"], b["t"], beta=beta, rows=ROWS),
        BL.npo_loss(lg, ref, b["ids"], b["masked"], b["maskable"], b["t"], beta=beta, rows=ROWS,
                    length_normalized=True),
        BL.npo_loss(lg, ref, b["ids"], b["masked"], b["maskable"], b["t"], beta=beta, rows=ROWS,
                    batch_level=True)))
    per_seq, per_seq_norm, batch_level = f(b["cond"], b["ref"])
    np.testing.assert_allclose(per_seq, F.npo_per_sequence(S, S_ref, ROWS, beta), rtol=1e-5)
    np.testing.assert_allclose(per_seq_norm, F.npo_per_sequence(S / n, S_ref / n, ROWS, beta), rtol=1e-5)
    np.testing.assert_allclose(batch_level, F.npo_batch(S, S_ref, b["maskable"], ROWS, beta), rtol=1e-5)


def test_npo_is_2log2_over_beta_and_has_no_gradient_into_the_reference_at_equality(batch):
    b = batch
    f = lambda lg, ref: BL.npo_loss(lg, ref, b["ids"], b["masked"], b["maskable"], b["t"], beta=0.5)  # noqa: E731
    nll = lambda lg: diffusion.sequence_nll(lg, b["ids"], b["masked"], b["maskable"], b["t"]).sum()  # noqa: E731
    val, (g, g_ref), g_nll = quick_jit(lambda x: (*jax.value_and_grad(f, argnums=(0, 1))(x, x),
                                                  jax.grad(nll)(x)))(b["cond"])
    np.testing.assert_allclose(val, 2 / 0.5 * np.log(2), rtol=1e-6)
    np.testing.assert_array_equal(g_ref, 0.0)
    # minimising NPO raises the forget NLL: the gradient is minus a positive multiple of the NLL's
    assert float(jnp.vdot(g, g_nll)) < 0


def test_simnpo_matches_the_formula(batch):
    b = batch
    S = _S(b, "cond", weight="uniform")
    f = quick_jit(lambda lg: BL.simnpo_loss(lg, b["ids"], b["masked"], b["maskable"], b["t"], beta=2.5, gamma=0.3,
                                          weight="uniform", rows=ROWS))
    np.testing.assert_allclose(f(b["cond"]), F.simnpo(S, b["maskable"], ROWS, 2.5, 0.3), rtol=1e-5)
    loss, aux = quick_jit(lambda lg: BL.simnpo_objective(lg, b["ids"], b["masked"], b["maskable"], b["t"], ROWS,
                                                         beta=2.5, gamma=0.3, weight="uniform",
                                                         retain_weight=2.0))(b["cond"])
    retain = F.mdlm_loss(b["cond"], b["ids"], b["masked"], b["maskable"], b["t"], weight="uniform", rows=~ROWS)
    np.testing.assert_allclose(loss, F.simnpo(S, b["maskable"], ROWS, 2.5, 0.3) + 2.0 * retain, rtol=1e-5)


def test_me_is_log_v_minus_entropy_and_equals_mdu_at_tau_0(batch):
    b = batch
    fm = b["masked"] & ROWS[:, None]
    both = quick_jit(lambda lg, lu: (BL.me_loss(lg, fm), mdu_loss(lg, lu, fm, tau=0.0)))
    got, mdu_at_0 = both(b["cond"], b["anchor"])
    np.testing.assert_allclose(got, F.entropy_gap(b["cond"], fm), rtol=1e-5)
    np.testing.assert_allclose(got, mdu_at_0, rtol=1e-5)
    loss, aux = quick_jit(lambda lg: BL.me_gd_objective(lg, b["ids"], b["masked"], b["maskable"], b["t"], ROWS,
                                                      retain_weight=0.3))(b["cond"])
    retain = F.mdlm_loss(b["cond"], b["ids"], b["masked"], b["maskable"], b["t"], rows=~ROWS)
    np.testing.assert_allclose(aux["forget_loss"], F.entropy_gap(b["cond"], fm), rtol=1e-5)
    np.testing.assert_allclose(loss, F.entropy_gap(b["cond"], fm) + 0.3 * retain, rtol=1e-5)


def test_idkpo_is_dpo_preferring_the_idk_answer(batch):
    b = batch
    idk = random_batch(31, B=4)  # the idk responses: their own ids, masks and times
    beta = 0.2
    args = (idk["cond"], idk["ref"], idk["ids"], idk["masked"], idk["maskable"], idk["t"],
            b["cond"], b["ref"], b["ids"], b["masked"], b["maskable"], b["t"])
    @quick_jit
    def run(*a):
        def loss(c_ref, r_ref):
            return BL.idkpo_loss(a[0], c_ref, *a[2:7], r_ref, *a[8:], beta=beta, rows=ROWS)

        same = BL.idkpo_loss(a[0], a[0], *a[2:7], a[6], *a[8:], beta=beta)  # policy == reference
        return (BL.idkpo_loss(*a, beta=beta, rows=ROWS), BL.idkpo_objective(*a, ROWS, beta=beta)[0],
                jax.grad(loss, argnums=(0, 1))(a[1], a[7]), same)

    got, objective, ref_grads, same = run(*args)
    Sc = F.row_nll(idk["cond"], idk["ids"], idk["masked"], idk["maskable"], idk["t"])
    Sc_ref = F.row_nll(idk["ref"], idk["ids"], idk["masked"], idk["maskable"], idk["t"])
    want = F.dpo(Sc, Sc_ref, _S(b, "cond"), _S(b, "ref"), ROWS, beta)
    np.testing.assert_allclose(got, want, rtol=1e-5)
    retain = F.mdlm_loss(b["cond"], b["ids"], b["masked"], b["maskable"], b["t"], rows=~ROWS)
    np.testing.assert_allclose(objective, want + retain, rtol=1e-5)
    # no gradient into either reference; log 2 when the policy is the reference
    for g in ref_grads:
        np.testing.assert_array_equal(g, 0.0)
    np.testing.assert_allclose(same, np.log(2), rtol=1e-6)


def test_baseline_gradients_match_central_differences_fp64():
    rng = np.random.default_rng(32)
    b = random_batch(33, B=3, T=6, V=5, scale=2.0)
    idk = random_batch(34, B=3, T=6, V=5, scale=2.0)
    a = (b["ids"], b["masked"], b["maskable"], b["t"])
    ia = (idk["ids"], idk["masked"], idk["maskable"], idk["t"])
    coef = rng.uniform(0.5, 1.5, 7)

    def total(lg, idk_lg):  # every baseline at once, with random weights
        return (coef[0] * BL.ga_loss(lg, *a, weight="cart")
                + coef[1] * BL.npo_loss(lg, b["ref"], *a, beta=0.7)
                + coef[2] * BL.npo_loss(lg, b["ref"], *a, beta=0.7, batch_level=True)
                + coef[3] * BL.simnpo_loss(lg, *a, gamma=0.2)
                + coef[4] * BL.me_loss(lg, b["masked"])
                + coef[5] * BL.idkpo_loss(idk_lg, idk["ref"], *ia, lg, b["ref"], *a, beta=0.5)
                + coef[6] * diffusion.mdlm_loss(lg, *a, weight="cart", norm="sequence"))

    with jax.enable_x64(True):
        x0 = (b["cond"].astype(np.float64), idk["cond"].astype(np.float64))
        grads = quick_jit(jax.grad(total, argnums=(0, 1)))(*x0)
        f = quick_jit(total)
        for i, g in enumerate(grads):
            fd = _central_differences(lambda x: f(*[x if j == i else x0[j] for j in range(2)]), x0[i])
            np.testing.assert_allclose(g, fd, rtol=1e-5, atol=1e-8)


def _central_differences(f, x, h=1e-6):
    g = np.zeros_like(x)
    for idx in np.ndindex(x.shape):
        e = np.zeros_like(x)
        e[idx] = h
        g[idx] = (float(f(x + e)) - float(f(x - e))) / (2 * h)
    return g


def test_distributed_batch_level_npo_shares_add_up_to_global_value_and_gradient(batch):
    """Batch-level NPO is nonlinear in global sums: its per-device shares must still add up."""
    b = batch
    n_dev = 2
    args = (b["cond"], b["ref"], b["ids"], b["masked"], b["maskable"], b["t"], ROWS)
    split = [a.reshape((n_dev, a.shape[0] // n_dev) + a.shape[1:]) for a in args]

    def f(lg, ref, y, m, mk, t, rows, axis=None):
        return jnp.stack([BL.npo_loss(lg, ref, y, m, mk, t, beta=0.3, batch_level=bl, rows=rows, axis_name=axis)
                          for bl in (False, True)])

    glob, g_glob = quick_jit(lambda *a: (f(*a), jax.jacrev(f)(*a)))(*args)
    def per_device(*a):
        return f(*a, axis="d"), jax.jacrev(lambda x: f(x, *a[1:], axis="d"))(a[0])

    shares, g_shares = jax.pmap(per_device, axis_name="d", devices=jax.devices()[:n_dev])(*split)
    np.testing.assert_allclose(np.sum(shares, 0), glob, rtol=1e-6)
    np.testing.assert_allclose(np.concatenate(list(np.asarray(g_shares)), axis=1), g_glob, rtol=1e-5, atol=1e-8)


def test_load_idk_answers(shared_data, tmp_path):
    answers = BL.load_idk_answers(shared_data / "tofu" / "idontknow.json")
    assert len(answers) == 100 and all(isinstance(a, str) and a for a in answers)
    assert "I'm not sure." in answers
    lines = tmp_path / "idk.txt"
    lines.write_text("I don't know.\n\nNo idea.\n")
    assert BL.load_idk_answers(lines) == ["I don't know.", "No idea."]
    bad = tmp_path / "bad.json"
    bad.write_text('{"a": 1}')
    with pytest.raises(ValueError, match="bad.json"):
        BL.load_idk_answers(bad)
