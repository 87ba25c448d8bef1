"""The train loss of every method, as ``make_loss_fn`` composes it, equals an independent
composition of the public pure functions: per-row noise (``diffusion.row_keys`` /
``noise_batch``) -> ``mj.forward`` on the noised batch (and, for the anchored methods, the frozen
model on its own input: ``objectives.unconditional_inputs`` for MDU, the same noised batch for
NPO / IdkPO / DPO) -> the method's objective from ``mdu_jax.objectives``. Values and gradients.

The other training-loss tests compare the loss with itself under options (chunking, remat, LoRA);
this one pins down what it computes: feeding the anchor the conditional input, dropping the
retain weight, mixing up beta's or weighting schemes, or ignoring ``data.attend_padding`` fails.

Tolerances: both sides run the same float32 operations in a different order (the train loss
projects hidden states in its own chunk loop and sums per-row terms), so they agree to float32
rounding: rtol 1e-5 on the loss, rtol 1e-5 + atol 1e-6 on gradients (as test_remat_chunk.py).
Each power check below asks a wrong composition to be off by at least 100x that.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mdu_jax as mj
from mdu_jax import diffusion, objectives
from mdu_jax.training.config import METHODS, ObjectiveSection
from mdu_jax.training.loss import make_loss_fn
from tests.training.loss_helpers import assert_trees_close, tiny_batch, tiny_config, tiny_params

# One compiled program per case with both compositions (and their gradients): minutes on 2 cores.
pytestmark = pytest.mark.slow

RTOL, ATOL = 1e-5, 1e-6
# Non-default settings, so a composition that reads the wrong field (or a default) shows.
OBJECTIVE = dict(tau=0.5, eta=0.2, retain_weight=0.7, npo_beta=0.3, simnpo_gamma=0.4, dpo_beta=0.6)


def batch_with_alternatives(B=4, T=16, seed=0):
    """tiny_batch (right padding on odd rows, forget rows 0 and 2) plus alt_* rows: the same prompts
    with another response and other padding, the "I don't know" side of IdkPO / DPO."""
    batch = tiny_batch(B, T, seed=seed)
    rng = np.random.default_rng(seed + 1)
    alt_ids = batch["input_ids"].copy()
    alt_maskable = np.zeros((B, T), bool)
    alt_attn = np.zeros((B, T), np.int32)
    for b in range(B):
        prompt = int(np.argmax(batch["maskable"][b]))
        length = T - 2 * (b % 3)
        alt_ids[b, prompt:length] = rng.integers(2, 94, length - prompt)
        alt_ids[b, length:] = 1
        alt_maskable[b, prompt:length] = True
        alt_attn[b, :length] = 1
    return {**batch, "alt_input_ids": alt_ids, "alt_maskable": alt_maskable, "alt_attention_mask": alt_attn}


def independent_loss(cfg, obj, params, anchor, batch, key, *, attend_padding=False,
                     anchor_sees_noised=False):
    """(loss, {"forget": ..., "retain": ...}) composed from the public functions, full logits."""
    ids, maskable, is_forget = batch["input_ids"], batch["maskable"], batch["is_forget"]
    attn = None if attend_padding else batch["attention_mask"]
    weight = "cart" if cfg.family == "dream" else "scheduler"  # the reference's MDLM weighting
    B = ids.shape[0]
    noised, masked, t = diffusion.noise_batch(diffusion.row_keys(key, B), ids, maskable, cfg.mask_token_id,
                                              eps=obj.time_eps, schedule=obj.schedule)
    logits = mj.forward(cfg, params, noised, attn)
    common = dict(weight=weight, schedule=obj.schedule)
    m = obj.method
    if m == "sft":
        loss = diffusion.mdlm_loss(logits, ids, masked, maskable, t, **common)
        return loss, {"retain": loss}
    if m == "mdu":
        anchor_in = noised if anchor_sees_noised else objectives.unconditional_inputs(noised, maskable,
                                                                                      cfg.mask_token_id)
        loss, aux = objectives.mdu_objective(logits, mj.forward(cfg, anchor, anchor_in, attn), ids, masked, maskable,
                                             t, is_forget, tau=obj.tau, eta=obj.eta, divergence=obj.divergence,
                                             retain_weight=obj.retain_weight, retain_loss_weight=weight,
                                             schedule=obj.schedule)
    elif m == "ga":
        loss, aux = objectives.ga_objective(logits, ids, masked, maskable, t, is_forget, **common)
    elif m == "graddiff":
        loss, aux = objectives.graddiff_objective(logits, ids, masked, maskable, t, is_forget,
                                                  retain_weight=obj.retain_weight, **common)
    elif m == "npo":
        ref = mj.forward(cfg, anchor, noised, attn)
        loss, aux = objectives.npo_objective(logits, ref, ids, masked, maskable, t, is_forget, beta=obj.npo_beta,
                                             batch_level=obj.npo_batch_level, retain_weight=obj.retain_weight,
                                             **common)
    elif m == "simnpo":
        loss, aux = objectives.simnpo_objective(logits, ids, masked, maskable, t, is_forget, beta=obj.npo_beta,
                                                gamma=obj.simnpo_gamma, retain_weight=obj.retain_weight, **common)
    elif m == "me_gd":
        loss, aux = objectives.me_gd_objective(logits, ids, masked, maskable, t, is_forget,
                                               retain_weight=obj.retain_weight, **common)
    elif m in ("idkpo", "dpo"):
        alt_ids, alt_maskable = batch["alt_input_ids"], batch["alt_maskable"]
        alt_attn = None if attend_padding else batch["alt_attention_mask"]
        alt_noised, alt_masked, alt_t = diffusion.noise_batch(
            diffusion.row_keys(jax.random.fold_in(key, 1), B), alt_ids, alt_maskable, cfg.mask_token_id,
            eps=obj.time_eps, schedule=obj.schedule)
        loss, aux = objectives.idkpo_objective(
            mj.forward(cfg, params, alt_noised, alt_attn), mj.forward(cfg, anchor, alt_noised, alt_attn), alt_ids,
            alt_masked, alt_maskable, alt_t, logits, mj.forward(cfg, anchor, noised, attn), ids, masked, maskable, t,
            is_forget, beta=obj.dpo_beta, retain_weight=obj.retain_weight if m == "idkpo" else 0.0, **common)
    else:
        raise AssertionError(f"no independent composition for method {m!r}: add one")
    out = {"forget": aux["forget_loss"]}
    if "retain_loss" in aux and (m != "dpo"):
        out["retain"] = aux["retain_loss"]
    return loss, out


@functools.lru_cache(maxsize=None)
def setup(family):
    """(cfg, params, anchor, batch) of a tiny model of `family`, built once per module."""
    cfg = tiny_config(family)
    return cfg, tiny_params(cfg, 0), tiny_params(cfg, 1), jax.tree.map(jnp.asarray, batch_with_alternatives())


KEY = 11


def both_losses(cfg, obj, params, anchor, batch, *, attend_padding=False, grads=False):
    """(train, independent): each (loss, aux) or, with `grads`, ((loss, aux), grads), in one program."""
    key = jax.random.key(KEY)
    train = make_loss_fn(cfg, obj, attend_padding=attend_padding)
    fns = (lambda p: train(p, anchor, batch, key, 0, None),
           lambda p: independent_loss(cfg, obj, p, anchor, batch, key, attend_padding=attend_padding))
    if grads:
        fns = tuple(jax.value_and_grad(f, has_aux=True) for f in fns)
    return jax.jit(lambda p: tuple(f(p) for f in fns))(params)


def assert_same(a, b, what):
    (loss, aux), (ref_loss, ref_aux) = a, b
    assert float(loss) != 0.0, what
    np.testing.assert_allclose(float(loss), float(ref_loss), rtol=RTOL, err_msg=f"{what}: loss")
    assert set(aux) == set(ref_aux), (what, sorted(aux), sorted(ref_aux))
    assert_trees_close(aux, ref_aux, RTOL, ATOL, f"{what}: aux")


def test_every_method_is_covered():
    assert set(METHODS) == {"mdu", "sft", "ga", "graddiff", "npo", "simnpo", "me_gd", "idkpo", "dpo"}


# Every method on Dream (GQA, q/k/v biases, the logits shift, CART weights); on LLaDA the methods
# whose composition differs by family (the 1/t weighting of the forget and retain terms).
# Values only: a wrong input or setting changes the loss; the gradient tests below cover the
# stop-gradients (MDU's target, the frozen references).
CASES = [("dream", m) for m in METHODS] + [("llada", m) for m in ("sft", "graddiff", "npo")]


@pytest.mark.parametrize("family, method", CASES)
def test_train_loss_equals_independent_composition(family, method):
    cfg, params, anchor, batch = setup(family)
    train, ref = both_losses(cfg, ObjectiveSection(method=method, **OBJECTIVE), params, anchor, batch)
    assert_same(train, ref, f"{family} {method}")


@pytest.mark.parametrize("family, method", [("llada", "mdu"), ("dream", "mdu"), ("dream", "npo")])
def test_train_gradients_equal_independent_composition(family, method):
    cfg, params, anchor, batch = setup(family)
    (train, g), (ref, g_ref) = both_losses(cfg, ObjectiveSection(method=method, **OBJECTIVE), params, anchor, batch,
                                           grads=True)
    assert_same(train, ref, f"{family} {method}")
    assert max(float(jnp.abs(x).max()) for x in jax.tree.leaves(g)) > 1e-3
    assert_trees_close(g, g_ref, RTOL, ATOL, f"{family} {method}: grads")


def test_anchor_input_is_the_prompt_masked_batch():
    """Power: the anchor on the conditional input (prompt visible) gives another MDU loss."""
    cfg, params, anchor, batch = setup("dream")
    obj = ObjectiveSection(method="mdu", **OBJECTIVE)
    key = jax.random.key(KEY)
    right, wrong = jax.jit(lambda p: tuple(
        independent_loss(cfg, obj, p, anchor, batch, key, anchor_sees_noised=s)[1]["forget"]
        for s in (False, True)))(params)
    assert abs(float(wrong) - float(right)) > 100 * RTOL * abs(float(right))


@pytest.mark.parametrize("method", ["mdu", "idkpo"])
def test_attend_padding(method):
    """data.attend_padding=True drops the attention masks (the reference's padding, visible to every
    token; IdkPO's "I don't know" rows too): it equals the composition without masks, and differs
    from the masked loss exactly when the batch has padding."""
    cfg, params, anchor, batch = setup("dream")
    obj = ObjectiveSection(method=method, **OBJECTIVE)
    (open_train, open_ref), (closed_train, _) = jax.jit(
        lambda b: (both_losses(cfg, obj, params, anchor, b, attend_padding=True),
                   both_losses(cfg, obj, params, anchor, b)))(batch)
    assert_same(open_train, open_ref, f"{method}, attend_padding")
    assert abs(float(open_train[0]) - float(closed_train[0])) > 100 * RTOL * abs(float(closed_train[0]))
    # Without padding the two settings compute the same thing.
    full = dict(batch, attention_mask=jnp.ones_like(batch["attention_mask"]),
                alt_attention_mask=jnp.ones_like(batch["alt_attention_mask"]))
    key = jax.random.key(KEY)
    open_full, closed_full = jax.jit(lambda b: tuple(
        make_loss_fn(cfg, obj, attend_padding=a)(params, anchor, b, key, 0, None)[0] for a in (True, False)))(full)
    np.testing.assert_allclose(float(open_full), float(closed_full), rtol=RTOL)
