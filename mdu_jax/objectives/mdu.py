"""The MDU objective (Masked Diffusion Unlearning; reference-mdlm.md section 6.1).

At every masked response position of a forget row, MDU pulls the conditional prediction
p_c = softmax(l_c) (trainable model, input [prompt | noised response]) toward the tempered
unconditional anchor

    p_t = softmax(tau * stop_gradient(l_u - eta * (l_c - l_u)))

where l_u are the frozen initial model's logits on the prompt-masked input (every non-response
position replaced by the mask token, see `unconditional_inputs`). tau = 1, eta = 0 is the plain
anchor, tau = 0 the uniform distribution, tau > 1 a sharper anchor; eta > 0 pushes the target
further away from the conditional prediction.

Everything is computed in fp32 (the reference forms tau * l_t in the logits dtype, then upcasts;
computing it in fp32 is the more precise reading of the same formula).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from mdu_jax import diffusion

Array = jax.Array

DIVERGENCES = ("forward", "reverse", "js")
JS_LOG_FLOOR = 1e-12  # the reference's clamp on the JS mixture before its log


# ----------------------------------------------------------------------------- distributions

def keep_vector(vocab_size: int, exclude_ids) -> Array | None:
    """bool [V]: False at `exclude_ids` (a sequence or int array of token ids), or None."""
    if exclude_ids is None:
        return None
    ids = jnp.asarray(exclude_ids, jnp.int32).reshape(-1)
    return jnp.ones((vocab_size,), bool).at[ids].set(False)


def restricted_log_softmax(logits: Array, keep: Array | None) -> tuple[Array, Array]:
    """(log p, p) over the kept ids, fp32 [..., V].

    With `keep` [V] bool, the excluded ids are removed from the distribution (as logits of
    -inf would do): p = 0 there, and log p holds the placeholder 0 so that no inf or NaN
    appears in any later product or in a gradient. Without `keep` this is log_softmax.
    """
    x = diffusion.upcast(logits)
    if keep is None:
        logp = jax.nn.log_softmax(x, axis=-1)
        return logp, jnp.exp(logp)
    m = jax.lax.stop_gradient(jnp.max(jnp.where(keep, x, -jnp.inf), axis=-1, keepdims=True))
    z = jnp.where(keep, x - m, 0.0)  # finite everywhere, so the unused branch has finite gradients
    lse = jnp.log(jnp.sum(jnp.where(keep, jnp.exp(z), 0.0), axis=-1, keepdims=True))
    logp = jnp.where(keep, z - lse, 0.0)
    return logp, jnp.where(keep, jnp.exp(logp), 0.0)


def target_logits(logits_cond: Array, logits_anchor: Array, tau: float | Array = 1.0,
                  eta: float | Array = 0.0) -> Array:
    """tau * stop_gradient(l_u - eta (l_c - l_u)) in fp32 [..., V]; no gradient flows out."""
    lc = jax.lax.stop_gradient(diffusion.upcast(logits_cond))
    lu = jax.lax.stop_gradient(diffusion.upcast(logits_anchor))
    # eta = 0 must ignore l_c entirely (as the reference does), even where l_c is not finite.
    return tau * jnp.where(eta == 0, lu, lu - eta * (lc - lu))


def _kl_terms(p: Array, logp: Array, logq: Array, nan_to_num: bool) -> Array:
    term = logp - logq
    if nan_to_num:
        # The LLaDA reference's _safe_kl: non-finite log-ratios count as 0.
        term = jnp.nan_to_num(term, nan=0.0, posinf=0.0, neginf=0.0)
    return jnp.sum(p * term, axis=-1)


def token_divergence(logits_cond: Array, logits_anchor: Array, *, tau: float | Array = 1.0,
                     eta: float | Array = 0.0, divergence: str = "forward", exclude_ids=None,
                     nan_to_num: bool = False) -> Array:
    """The MDU divergence at every position: fp32 [B, T] (mask it yourself).

    logits_cond, logits_anchor [..., V] (any float dtype). With p_c = softmax(l_c) and
    p_t = softmax(target_logits(l_c, l_u, tau, eta)), both restricted to the ids not in
    `exclude_ids`:
      'forward': KL(p_c || p_t) = sum_v p_c (log p_c - log p_t)      (the paper's choice)
      'reverse': KL(p_t || p_c) = sum_v p_t (log p_t - log p_c)
      'js'     : 0.5 KL(p_c || m) + 0.5 KL(p_t || m), m = (p_c + p_t) / 2, log m floored at
                 log(1e-12); gradient flows through p_c in both terms (m is not detached).
    Gradients reach only logits_cond. `nan_to_num` zeroes non-finite log-ratios term by term
    (the LLaDA reference's `_safe_kl`; it only matters for non-finite logits).
    """
    if divergence not in DIVERGENCES:
        raise ValueError(f"divergence: unknown {divergence!r}; expected one of {list(DIVERGENCES)}")
    if logits_cond.shape != logits_anchor.shape:
        raise ValueError(f"logits_anchor: expected shape {logits_cond.shape} (logits_cond), "
                         f"got {logits_anchor.shape}")
    keep = keep_vector(logits_cond.shape[-1], exclude_ids)
    logp_c, p_c = restricted_log_softmax(logits_cond, keep)
    logp_t, p_t = restricted_log_softmax(target_logits(logits_cond, logits_anchor, tau, eta), keep)
    logp_t, p_t = jax.lax.stop_gradient(logp_t), jax.lax.stop_gradient(p_t)
    if divergence == "forward":
        return _kl_terms(p_c, logp_c, logp_t, nan_to_num)
    if divergence == "reverse":
        return _kl_terms(p_t, logp_t, logp_c, nan_to_num)
    log_m = jnp.log(jnp.maximum(0.5 * (p_c + p_t), JS_LOG_FLOOR))
    return 0.5 * (_kl_terms(p_c, logp_c, log_m, nan_to_num) + _kl_terms(p_t, logp_t, log_m, nan_to_num))


def masked_mean(values: Array, masked: Array, axis_name: str | None = None) -> Array:
    """sum(values * masked) / max(1, # masked): scalar fp32 (count global over `axis_name`)."""
    masked = masked.astype(bool)
    total = jnp.sum(jnp.where(masked, diffusion.upcast(values), 0.0))
    count = diffusion.global_sum(jnp.sum(masked.astype(jnp.float32)), axis_name)
    return total / jnp.maximum(1.0, count)


def mdu_loss(logits_cond: Array, logits_anchor: Array, masked: Array, *, tau: float | Array = 1.0,
             eta: float | Array = 0.0, divergence: str = "forward", exclude_ids=None,
             nan_to_num: bool = False, axis_name: str | None = None) -> Array:
    """The MDU forget term, scalar fp32.

    L = sum_{masked (b, i)} D(p_c[b, i], p_t[b, i]) / max(1, # masked)

    logits_cond [B, T, V]: trainable model on [prompt | noised response] (gradient flows).
    logits_anchor [B, T, V]: frozen initial model on `unconditional_inputs(...)` (no gradient).
    masked [B, T] bool: the masked forget positions (pass ``masked & is_forget[:, None]`` for a
    mixed batch). D, tau, eta, exclude_ids, nan_to_num: see `token_divergence`. No 1/t weight;
    the denominator is the *masked* count (reference-mdlm 6.1 step 7). Finite for every tau >= 0.
    """
    d = token_divergence(logits_cond, logits_anchor, tau=tau, eta=eta, divergence=divergence,
                         exclude_ids=exclude_ids, nan_to_num=nan_to_num)
    return masked_mean(d, masked, axis_name)


# ----------------------------------------------------------------------------- inputs

def unconditional_inputs(noised_ids: Array, response_mask: Array, mask_id: int,
                         keep_mask: Array | None = None) -> Array:
    """The anchor's input [B, T]: every non-response position replaced by `mask_id`.

    noised_ids [B, T]: the conditional input (prompt | noised response); response_mask [B, T]
    bool: the response (maskable) positions, which keep their partial masking unchanged.
    As in the reference, BOS, template tokens, the question *and padding* all become mask
    tokens. keep_mask [B, T] bool (optional): non-response positions to leave as they are
    (e.g. chat-template tokens, see `template_keep_mask`).
    """
    hide = ~response_mask.astype(bool)
    if keep_mask is not None:
        hide = hide & ~keep_mask.astype(bool)
    return jnp.where(hide, jnp.asarray(mask_id, noised_ids.dtype), noised_ids)


def template_keep_mask(input_ids: Array, keep_ids, response_mask: Array | None = None) -> Array:
    """bool [B, T]: positions whose token is in `keep_ids` (outside the response if given)."""
    keep = jnp.isin(input_ids, jnp.asarray(keep_ids, input_ids.dtype).reshape(-1))
    if response_mask is not None:
        keep = keep & ~response_mask.astype(bool)
    return keep


# ----------------------------------------------------------------------------- the objective

def retain_term(logits: Array, target_ids: Array, masked: Array, maskable: Array, t: Array,
                rows: Array | None, *, weight: str = "scheduler", schedule: str = "linear",
                norm: str = "token", cart_p: float = 0.3, axis_name: str | None = None) -> Array:
    """The retain loss: `diffusion.mdlm_loss` on the `rows` [B] bool (the retain rows)."""
    return diffusion.mdlm_loss(logits, target_ids, masked, maskable, t, weight=weight,
                               schedule=schedule, norm=norm, cart_p=cart_p, rows=rows,
                               axis_name=axis_name)


def mdu_objective(logits_cond: Array, logits_anchor: Array, target_ids: Array, masked: Array,
                  maskable: Array, t: Array, is_forget: Array, *, tau: float | Array = 1.0,
                  eta: float | Array = 0.0, divergence: str = "forward", exclude_ids=None,
                  nan_to_num: bool = False, retain_weight: float | Array = 1.0,
                  retain_loss_weight: str = "scheduler", schedule: str = "linear",
                  norm: str = "token", cart_p: float = 0.3,
                  axis_name: str | None = None) -> tuple[Array, dict[str, Array]]:
    """The MDU training loss of one mixed batch: (loss, aux), fp32 scalars.

    loss = mdu_loss(forget rows) + retain_weight * mdlm_loss(retain rows)

    One noised batch [B, T] holds forget rows (is_forget [B] True) and retain rows; every row
    was noised once (masked, t). logits_cond [B, T, V] is the trainable model on the noised
    batch, logits_anchor [B, T, V] the frozen model on its unconditional version (its retain
    rows are ignored). The retain term uses `retain_loss_weight` ('scheduler' for LLaDA, 'cart'
    for Dream in the reference) and `norm`. aux: forget_loss, retain_loss, forget_tokens
    (masked forget positions), retain_tokens (maskable retain positions).
    """
    forget_rows = is_forget.astype(bool)
    masked = masked.astype(bool) & maskable.astype(bool)
    forget_masked = masked & forget_rows[:, None]
    forget = mdu_loss(logits_cond, logits_anchor, forget_masked, tau=tau, eta=eta,
                      divergence=divergence, exclude_ids=exclude_ids, nan_to_num=nan_to_num,
                      axis_name=axis_name)
    retain = retain_term(logits_cond, target_ids, masked, maskable, t, ~forget_rows,
                         weight=retain_loss_weight, schedule=schedule, norm=norm, cart_p=cart_p,
                         axis_name=axis_name)
    aux = {"forget_loss": forget, "retain_loss": retain,
           "forget_tokens": jnp.sum(forget_masked.astype(jnp.float32)),
           "retain_tokens": jnp.sum((maskable.astype(bool) & ~forget_rows[:, None]).astype(jnp.float32))}
    return forget + retain_weight * retain, aux
