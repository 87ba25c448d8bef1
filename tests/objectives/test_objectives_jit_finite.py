"""Every loss, jit-compiled on a padded batch of several rows, is finite with finite gradients,
also when a row (or the whole batch, or the forget / retain side) has no masked position."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mdu_jax import diffusion
from mdu_jax.objectives import baselines as BL
from mdu_jax.objectives import chunked as C
from mdu_jax.objectives import mdu_loss, mdu_objective
from tests.objectives.quick_jit import quick_jit
from tests.objectives.random_batch import random_batch

B, T, V, D = 4, 10, 13, 8
EXCLUDE = (0, 12)


def _all_losses(lg, anchor, ref, idk_lg, idk_ref, hidden, kernel, ids, masked, maskable, t, is_forget):
    """name -> scalar loss, for every public loss (logits-level and chunked)."""
    a = (ids, masked, maskable, t)
    out = {}
    for weight in diffusion.WEIGHTS:
        for norm in diffusion.NORMS:
            out[f"mdlm/{weight}/{norm}"] = diffusion.mdlm_loss(lg, *a, weight=weight, norm=norm)
            out[f"mdlm_rows/{weight}/{norm}"] = diffusion.mdlm_loss(lg, *a, weight=weight, norm=norm, rows=is_forget)
    out["sequence_nll"] = jnp.sum(diffusion.sequence_nll(lg, *a))
    for div in ("forward", "reverse", "js"):
        for ex in (None, EXCLUDE):
            for tau in (0.0, 1.0):
                out[f"mdu/{div}/{ex}/{tau}"] = mdu_loss(lg, anchor, masked, tau=tau, eta=1.0, divergence=div,
                                                        exclude_ids=ex)
    out["mdu_objective"] = mdu_objective(lg, anchor, *a, is_forget, tau=0.0, exclude_ids=EXCLUDE,
                                         retain_loss_weight="cart")[0]
    out["ga"] = BL.ga_objective(lg, *a, is_forget)[0]
    out["graddiff"] = BL.graddiff_objective(lg, *a, is_forget)[0]
    out["npo"] = BL.npo_objective(lg, ref, *a, is_forget)[0]
    out["npo_batch"] = BL.npo_objective(lg, ref, *a, is_forget, batch_level=True)[0]
    out["npo_lengthnorm"] = BL.npo_objective(lg, ref, *a, is_forget, length_normalized=True)[0]
    out["simnpo"] = BL.simnpo_objective(lg, *a, is_forget, gamma=0.5)[0]
    out["me_gd"] = BL.me_gd_objective(lg, *a, is_forget)[0]
    out["idkpo"] = BL.idkpo_objective(idk_lg, idk_ref, *a, lg, ref, *a, is_forget)[0]
    out["chunked/mdu"] = C.chunked_mdu_loss(hidden, kernel, hidden * 0.5, kernel, masked, chunk_size=4, tau=0.0,
                                            exclude_ids=EXCLUDE, divergence="js")
    out["chunked/mdlm"] = C.chunked_mdlm_loss(hidden, kernel, *a, chunk_size=4, weight="cart", norm="sequence")
    out["chunked/objective"] = C.chunked_mdu_objective(hidden, kernel, hidden * 0.5, kernel, *a, is_forget,
                                                       chunk_size=4)[0]
    out["chunked/me"] = C.chunked_me_loss(hidden, kernel, masked, chunk_size=4)
    out["chunked/sequence_nll"] = jnp.sum(C.chunked_sequence_nll(hidden, kernel, *a, chunk_size=4))
    return out


@pytest.fixture(scope="module")
def compiled():
    def value_and_grads(lg, hidden, kernel, *rest):
        # grad of the sum: finite iff every loss's gradient is finite (inf cannot cancel to finite)
        def total(lg, hidden, kernel):
            losses = _all_losses(lg, *rest[:4], hidden, kernel, *rest[4:])
            return sum(losses.values()), losses
        grads, losses = jax.grad(total, argnums=(0, 1, 2), has_aux=True)(lg, hidden, kernel)
        return losses, grads
    return quick_jit(value_and_grads)


def _case(kind):
    b = random_batch(50, B=B, T=T, V=V, empty_row=1)  # row 1: no masked position; rows 1-3 padded
    rng = np.random.default_rng(51)
    is_forget = np.array([True, True, False, False])
    if kind == "no_masked_anywhere":
        b["masked"][:] = False
    elif kind == "no_forget_rows":
        is_forget[:] = False
    elif kind == "no_retain_rows":
        is_forget[:] = True
    hidden = rng.standard_normal((B, T, D)).astype(np.float32)
    kernel = rng.standard_normal((D, V)).astype(np.float32)
    return (b["cond"], hidden, kernel, b["anchor"], b["ref"], b["extra"], b["ref"][::-1].copy(),
            b["ids"], b["masked"], b["maskable"], b["t"], is_forget)


@pytest.mark.parametrize("kind", ["one_row_without_masks", "no_masked_anywhere", "no_forget_rows", "no_retain_rows"])
def test_every_loss_is_finite_with_finite_gradients(compiled, kind):
    losses, grads = compiled(*_case(kind))
    bad = [k for k, v in losses.items() if not np.isfinite(v)]
    assert not bad, bad
    for g in grads:
        assert np.all(np.isfinite(g))
    if kind == "no_masked_anywhere":
        for k, v in losses.items():
            if k.startswith(("mdlm", "mdu/", "chunked/mdu", "chunked/me", "sequence_nll")):
                assert v == 0.0, k


def test_a_row_without_masked_positions_contributes_nothing():
    b = random_batch(52, B=3, empty_row=1)
    other = b["cond"].copy()
    other[1] += 5 * np.random.default_rng(53).standard_normal(other[1].shape).astype(np.float32)
    f = quick_jit(lambda lg: (mdu_loss(lg, b["anchor"], b["masked"]),
                              diffusion.mdlm_loss(lg, b["ids"], b["masked"], b["maskable"], b["t"], weight="uniform")))
    for x, y in zip(f(b["cond"]), f(other)):
        np.testing.assert_allclose(x, y, rtol=1e-6)
