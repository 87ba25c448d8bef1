"""Unlearning baselines adapted to masked diffusion models.

Every baseline sees the same random masking as MDLM training and MDU: a forget row is noised at
a time t (``diffusion.noise_batch``) and scored at its masked response positions. A masked
diffusion model has no exact sequence log-likelihood; its stand-in is the one-sample ELBO
estimate

    S_b = sum_i w_i CE(logits[b, i], y[b, i]) masked[b, i]        (``diffusion.sequence_nll``)

with the MDLM weights w_i (1/t, uniform or CART), so that E[S_b] >= -log p(y_b | x_b) and
"log pi(y|x)" of an autoregressive formula becomes -S_b. N_b is the number of maskable
(response) tokens of row b, the length |y|.

Each loss exists at two levels: ``*_loss`` takes logits [B, T, V] (fp32 inside whatever their
dtype), and ``*_from_nll`` takes the per-row sums S_b [B], which ``objectives.chunked`` computes
in chunks from hidden states without a full [B, T, V] array. ``rows`` [B] bool selects the
forget rows of a mixed batch; means are over the selected rows (count global over `axis_name`).
The ``*_objective`` functions add ``retain_weight`` x the MDLM loss of the other rows.
"""

from __future__ import annotations

import json
import os
from typing import Callable

import jax
import jax.numpy as jnp

from mdu_jax import diffusion
from mdu_jax.objectives.mdu import masked_mean, retain_term, restricted_log_softmax

Array = jax.Array


def _rows(rows: Array | None, batch_size: int) -> Array:
    return jnp.ones((batch_size,), jnp.float32) if rows is None else rows.astype(jnp.float32)


def _row_mean(values: Array, rows: Array | None, axis_name: str | None) -> Array:
    """mean of values [B] over the selected rows, count global over `axis_name`."""
    r = _rows(rows, values.shape[0])
    n = diffusion.global_sum(jnp.sum(r), axis_name)
    return jnp.sum(jnp.where(r > 0, values, 0.0)) / jnp.maximum(1.0, n)


def _lengths(maskable: Array) -> Array:
    return jnp.sum(maskable.astype(jnp.float32), axis=-1)


def _nll_kwargs(weight, schedule, cart_p):
    return {"weight": weight, "schedule": schedule, "cart_p": cart_p}


# ----------------------------------------------------------------------------- GA, GradDiff

def ga_loss(logits: Array, target_ids: Array, masked: Array, maskable: Array, t: Array, *,
            weight: str = "scheduler", schedule: str = "linear", norm: str = "token",
            cart_p: float = 0.3, rows: Array | None = None, axis_name: str | None = None) -> Array:
    """Gradient ascent (GA): L = -mdlm_loss(forget rows), scalar fp32.

    The negated MDLM loss of the forget rows, with the same weights and normalisation as
    `diffusion.mdlm_loss` (the MDU reference's `_random_ga_loss`: 1/t for LLaDA, CART for
    Dream, divided by the number of maskable tokens).
    Reference: Jang et al. 2023, "Knowledge Unlearning for Mitigating Privacy Risks in Language
    Models"; the GA baseline of TOFU (Maini et al. 2024).
    """
    return -diffusion.mdlm_loss(logits, target_ids, masked, maskable, t, weight=weight,
                                schedule=schedule, norm=norm, cart_p=cart_p, rows=rows,
                                axis_name=axis_name)


def ga_objective(logits: Array, target_ids: Array, masked: Array, maskable: Array, t: Array,
                 is_forget: Array, *, weight: str = "scheduler", schedule: str = "linear",
                 norm: str = "token", cart_p: float = 0.3,
                 axis_name: str | None = None) -> tuple[Array, dict[str, Array]]:
    """GA on the forget rows of a mixed batch (retain rows unused): (loss, aux)."""
    forget = ga_loss(logits, target_ids, masked, maskable, t, weight=weight, schedule=schedule,
                     norm=norm, cart_p=cart_p, rows=is_forget, axis_name=axis_name)
    return forget, {"forget_loss": forget}


def _with_retain(forget: Array, logits, target_ids, masked, maskable, t, is_forget, retain_weight,
                 weight, schedule, norm, cart_p, axis_name) -> tuple[Array, dict[str, Array]]:
    retain = retain_term(logits, target_ids, masked, maskable, t, ~is_forget.astype(bool),
                         weight=weight, schedule=schedule, norm=norm, cart_p=cart_p,
                         axis_name=axis_name)
    return forget + retain_weight * retain, {"forget_loss": forget, "retain_loss": retain}


def graddiff_objective(logits: Array, target_ids: Array, masked: Array, maskable: Array, t: Array,
                       is_forget: Array, *, retain_weight: float | Array = 1.0,
                       weight: str = "scheduler", schedule: str = "linear", norm: str = "token",
                       cart_p: float = 0.3,
                       axis_name: str | None = None) -> tuple[Array, dict[str, Array]]:
    """Gradient difference (GradDiff): L = -mdlm(forget rows) + lambda mdlm(retain rows).

    (loss, aux) on a mixed batch (is_forget [B] bool). Reference: Liu et al. 2022, "Continual
    Learning and Private Unlearning"; the "Grad. Diff." baseline of TOFU (Maini et al. 2024).
    """
    forget = ga_loss(logits, target_ids, masked, maskable, t, weight=weight, schedule=schedule,
                     norm=norm, cart_p=cart_p, rows=is_forget, axis_name=axis_name)
    return _with_retain(forget, logits, target_ids, masked, maskable, t, is_forget, retain_weight,
                        weight, schedule, norm, cart_p, axis_name)


# ----------------------------------------------------------------------------- NPO

def _global_nonlinear(f: Callable[[Array], Array], num: Array, den: Array,
                      axis_name: str | None) -> Array:
    """This device's share of f(global num / global den), with the exact global gradient.

    f is nonlinear, so f(psum(num)/psum(den)) cannot be split into per-device sums. Each device
    returns f(L)/n_devices + f'(L) (num - sg(num)) / den_global: the values add up to f(L)
    and the summed gradients to f'(L) dL, without differentiating through a collective.
    """
    if axis_name is None:
        return f(num / jnp.maximum(1.0, den))
    den_g = jnp.maximum(1.0, jax.lax.psum(den, axis_name))
    L = jax.lax.psum(jax.lax.stop_gradient(num), axis_name) / den_g
    value, slope = jax.value_and_grad(f)(L)
    n_dev = jax.lax.psum(1.0, axis_name)
    return value / n_dev + slope * (num - jax.lax.stop_gradient(num)) / den_g


def npo_from_nll(nll: Array, ref_nll: Array, maskable: Array, *, beta: float = 0.1,
                 batch_level: bool = False, length_normalized: bool = False,
                 rows: Array | None = None, axis_name: str | None = None) -> Array:
    """NPO from per-row ELBO sums S_b (model) and S_ref_b (frozen reference) [B], scalar fp32.

    Per-sequence (default, the NPO paper): with log pi(y|x) ~ -S_b,
        L = mean_b  -(2/beta) log sigmoid(beta (S_b - S_ref_b))
    (length_normalized: S_b / N_b instead of S_b). batch_level=True reproduces the MDU
    reference's `_random_npo_loss`: L_cur = sum_b S_b / sum_b N_b (same for the reference) and
        L = -(2/beta) log sigmoid(beta (L_cur - L_ref)).
    ref_nll carries no gradient. Reference: Zhang et al. 2024, "Negative Preference
    Optimization: From Catastrophic Collapse to Effective Unlearning".
    """
    r = _rows(rows, nll.shape[0])
    ref_nll = jax.lax.stop_gradient(ref_nll)
    if batch_level:
        num = jnp.sum(r * nll)
        den = jnp.sum(r * _lengths(maskable))
        ref_num = diffusion.global_sum(jnp.sum(r * ref_nll), axis_name)
        ref_L = ref_num / jnp.maximum(1.0, diffusion.global_sum(den, axis_name))
        f = lambda L: -(2.0 / beta) * jax.nn.log_sigmoid(beta * (L - ref_L))  # noqa: E731
        return _global_nonlinear(f, num, den, axis_name)
    if length_normalized:
        n = jnp.maximum(1.0, _lengths(maskable))
        nll, ref_nll = nll / n, ref_nll / n
    per_row = -(2.0 / beta) * jax.nn.log_sigmoid(beta * (nll - ref_nll))
    return _row_mean(per_row, rows, axis_name)


def npo_loss(logits: Array, ref_logits: Array, target_ids: Array, masked: Array, maskable: Array,
             t: Array, *, beta: float = 0.1, batch_level: bool = False,
             length_normalized: bool = False, weight: str = "scheduler", schedule: str = "linear",
             cart_p: float = 0.3, rows: Array | None = None,
             axis_name: str | None = None) -> Array:
    """NPO on logits: `npo_from_nll` of the model's (logits) and the frozen reference's
    (ref_logits, same noised input) per-row ELBO sums. See `npo_from_nll` for the formula."""
    kw = _nll_kwargs(weight, schedule, cart_p)
    nll = diffusion.sequence_nll(logits, target_ids, masked, maskable, t, **kw)
    ref = diffusion.sequence_nll(ref_logits, target_ids, masked, maskable, t, **kw)
    return npo_from_nll(nll, ref, maskable, beta=beta, batch_level=batch_level,
                        length_normalized=length_normalized, rows=rows, axis_name=axis_name)


def npo_objective(logits: Array, ref_logits: Array, target_ids: Array, masked: Array,
                  maskable: Array, t: Array, is_forget: Array, *, beta: float = 0.1,
                  batch_level: bool = False, length_normalized: bool = False,
                  retain_weight: float | Array = 1.0, weight: str = "scheduler",
                  schedule: str = "linear", norm: str = "token", cart_p: float = 0.3,
                  axis_name: str | None = None) -> tuple[Array, dict[str, Array]]:
    """NPO on the forget rows + retain_weight x mdlm_loss on the retain rows: (loss, aux).

    With retain_weight > 0 this is the "NPO + RT" variant of the NPO paper.
    """
    forget = npo_loss(logits, ref_logits, target_ids, masked, maskable, t, beta=beta,
                      batch_level=batch_level, length_normalized=length_normalized, weight=weight,
                      schedule=schedule, cart_p=cart_p, rows=is_forget, axis_name=axis_name)
    return _with_retain(forget, logits, target_ids, masked, maskable, t, is_forget, retain_weight,
                        weight, schedule, norm, cart_p, axis_name)


# ----------------------------------------------------------------------------- SimNPO

def simnpo_from_nll(nll: Array, maskable: Array, *, beta: float = 2.5, gamma: float = 0.0,
                    rows: Array | None = None, axis_name: str | None = None) -> Array:
    """SimNPO from per-row ELBO sums S_b [B], scalar fp32.

    With log pi(y|x) ~ -S_b and |y| = N_b (maskable tokens of the row):
        L = mean_b  -(2/beta) log sigmoid(beta S_b / N_b - gamma)
    (the paper's -(2/beta) log sigmoid(-(beta/|y|) log pi(y|x) - gamma); no reference model).
    Reference: Fan et al. 2024, "Simplicity Prevails: Rethinking Negative Preference
    Optimization for LLM Unlearning".
    """
    per_row = -(2.0 / beta) * jax.nn.log_sigmoid(beta * nll / jnp.maximum(1.0, _lengths(maskable)) - gamma)
    return _row_mean(per_row, rows, axis_name)


def simnpo_loss(logits: Array, target_ids: Array, masked: Array, maskable: Array, t: Array, *,
                beta: float = 2.5, gamma: float = 0.0, weight: str = "scheduler",
                schedule: str = "linear", cart_p: float = 0.3, rows: Array | None = None,
                axis_name: str | None = None) -> Array:
    """SimNPO on logits; see `simnpo_from_nll` for the formula."""
    nll = diffusion.sequence_nll(logits, target_ids, masked, maskable, t,
                                 **_nll_kwargs(weight, schedule, cart_p))
    return simnpo_from_nll(nll, maskable, beta=beta, gamma=gamma, rows=rows, axis_name=axis_name)


def simnpo_objective(logits: Array, target_ids: Array, masked: Array, maskable: Array, t: Array,
                     is_forget: Array, *, beta: float = 2.5, gamma: float = 0.0,
                     retain_weight: float | Array = 1.0, weight: str = "scheduler",
                     schedule: str = "linear", norm: str = "token", cart_p: float = 0.3,
                     axis_name: str | None = None) -> tuple[Array, dict[str, Array]]:
    """SimNPO on the forget rows + retain_weight x mdlm_loss on the retain rows: (loss, aux)."""
    forget = simnpo_loss(logits, target_ids, masked, maskable, t, beta=beta, gamma=gamma,
                         weight=weight, schedule=schedule, cart_p=cart_p, rows=is_forget,
                         axis_name=axis_name)
    return _with_retain(forget, logits, target_ids, masked, maskable, t, is_forget, retain_weight,
                        weight, schedule, norm, cart_p, axis_name)


# ----------------------------------------------------------------------------- ME + GD

def token_kl_to_uniform(logits: Array) -> Array:
    """KL(softmax(logits) || uniform over V) = log V - H(p) at every position: fp32 [B, T]."""
    logp, p = restricted_log_softmax(logits, None)
    return jnp.log(float(logits.shape[-1])) + jnp.sum(p * logp, axis=-1)


def me_loss(logits: Array, masked: Array, *, axis_name: str | None = None) -> Array:
    """Maximum entropy (ME) forget term, scalar fp32.

    L = sum_{masked (b, i)} KL(p_theta(. | x_t)[b, i] || Uniform(V)) / max(1, # masked)
      = log V - mean predictive entropy at the masked positions.
    Minimising it maximises the entropy of the predictions of the masked forget tokens. It is
    MDU's forget term at tau = 0 (uniform target). Reference: Yuan et al. 2025, "A Closer Look
    at Machine Unlearning for Large Language Models" (ICLR 2025), ME+GD.
    """
    return masked_mean(token_kl_to_uniform(logits), masked, axis_name)


def me_gd_objective(logits: Array, target_ids: Array, masked: Array, maskable: Array, t: Array,
                    is_forget: Array, *, retain_weight: float | Array = 1.0,
                    weight: str = "scheduler", schedule: str = "linear", norm: str = "token",
                    cart_p: float = 0.3,
                    axis_name: str | None = None) -> tuple[Array, dict[str, Array]]:
    """ME on the masked forget positions + retain_weight x mdlm_loss on the retain rows (the GD
    part): (loss, aux). Reference: Yuan et al. 2025 (see `me_loss`)."""
    forget_masked = masked.astype(bool) & maskable.astype(bool) & is_forget.astype(bool)[:, None]
    forget = me_loss(logits, forget_masked, axis_name=axis_name)
    return _with_retain(forget, logits, target_ids, masked, maskable, t, is_forget, retain_weight,
                        weight, schedule, norm, cart_p, axis_name)


# ----------------------------------------------------------------------------- DPO / IdkPO

def dpo_from_nll(chosen_nll: Array, chosen_ref_nll: Array, rejected_nll: Array,
                 rejected_ref_nll: Array, *, beta: float = 0.1, rows: Array | None = None,
                 axis_name: str | None = None) -> Array:
    """DPO from per-row ELBO sums [B] of the chosen and rejected responses, scalar fp32.

    With log pi(y|x) ~ -S:
        L = mean_b -log sigmoid(beta [(S_ref,c - S_c) - (S_ref,r - S_r)])
    The reference sums carry no gradient. Reference: Rafailov et al. 2023, "Direct Preference
    Optimization: Your Language Model is Secretly a Reward Model".
    """
    sg = jax.lax.stop_gradient
    margin = (sg(chosen_ref_nll) - chosen_nll) - (sg(rejected_ref_nll) - rejected_nll)
    return _row_mean(-jax.nn.log_sigmoid(beta * margin), rows, axis_name)


def idkpo_loss(idk_logits: Array, idk_ref_logits: Array, idk_ids: Array, idk_masked: Array,
               idk_maskable: Array, idk_t: Array, logits: Array, ref_logits: Array,
               target_ids: Array, masked: Array, maskable: Array, t: Array, *, beta: float = 0.1,
               weight: str = "scheduler", schedule: str = "linear", cart_p: float = 0.3,
               rows: Array | None = None, axis_name: str | None = None) -> Array:
    """IdkPO: DPO that prefers an "I don't know" answer to the forget answer, scalar fp32.

    `dpo_from_nll` with chosen = the idk response (idk_* arrays: the same prompt followed by an
    answer from `load_idk_answers`, noised on its own) and rejected = the original forget
    response. *_logits: the trained model; *_ref_logits: the frozen reference on the same
    noised inputs. Reference: the IdkPO / "IDK" preference baseline of TOFU (Maini et al. 2024)
    built on DPO (Rafailov et al. 2023).
    """
    kw = _nll_kwargs(weight, schedule, cart_p)
    c = diffusion.sequence_nll(idk_logits, idk_ids, idk_masked, idk_maskable, idk_t, **kw)
    c_ref = diffusion.sequence_nll(idk_ref_logits, idk_ids, idk_masked, idk_maskable, idk_t, **kw)
    r = diffusion.sequence_nll(logits, target_ids, masked, maskable, t, **kw)
    r_ref = diffusion.sequence_nll(ref_logits, target_ids, masked, maskable, t, **kw)
    return dpo_from_nll(c, c_ref, r, r_ref, beta=beta, rows=rows, axis_name=axis_name)


def idkpo_objective(idk_logits: Array, idk_ref_logits: Array, idk_ids: Array, idk_masked: Array,
                    idk_maskable: Array, idk_t: Array, logits: Array, ref_logits: Array,
                    target_ids: Array, masked: Array, maskable: Array, t: Array, is_forget: Array,
                    *, beta: float = 0.1, retain_weight: float | Array = 1.0,
                    weight: str = "scheduler", schedule: str = "linear", norm: str = "token",
                    cart_p: float = 0.3,
                    axis_name: str | None = None) -> tuple[Array, dict[str, Array]]:
    """IdkPO on the forget rows + retain_weight x mdlm_loss(logits) on the retain rows."""
    forget = idkpo_loss(idk_logits, idk_ref_logits, idk_ids, idk_masked, idk_maskable, idk_t,
                        logits, ref_logits, target_ids, masked, maskable, t, beta=beta,
                        weight=weight, schedule=schedule, cart_p=cart_p, rows=is_forget,
                        axis_name=axis_name)
    return _with_retain(forget, logits, target_ids, masked, maskable, t, is_forget, retain_weight,
                        weight, schedule, norm, cart_p, axis_name)


def load_idk_answers(path: str | os.PathLike) -> list[str]:
    """The "I don't know" answers: a JSON list of strings (TOFU ``idontknow.json``) or a text
    file with one answer per line."""
    path = os.fspath(path)
    with open(path, encoding="utf-8") as f:
        text = f.read()
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        data = [line.strip() for line in text.splitlines() if line.strip()]
    if not isinstance(data, list) or not data or not all(isinstance(x, str) and x.strip() for x in data):
        raise ValueError(f"{path}: expected a non-empty list of answer strings")
    return [x.strip() for x in data]
