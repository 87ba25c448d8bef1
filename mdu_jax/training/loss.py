"""The training loss of every method, written once for the jit and pmap steps.

``make_loss_fn(model_cfg, objective_cfg, ...)`` returns
``loss_fn(params, anchor, batch, key, row_offset, axis_name) -> (loss, aux)``.

Two conventions make every device layout compute the same numbers (see ``training/step.py``):
each row's diffusion time and mask come from ``fold_in(key, row_offset + row)``, and every
normaliser (masked / maskable counts, row counts) is a *global* count, ``psum``-ed over
`axis_name` under pmap. A loss is then a sum of per-row contributions divided by global
counts, whose per-device gradients add up to the gradient of the global batch.

This is the only module that knows models and objectives together: it runs the model passes
(conditional with gradient; the frozen anchor without) and hands logits to the pure functions of
``mdu_jax.objectives`` and ``mdu_jax.diffusion``.

With a `lora` spec, `params` are the adapters (``mdu_jax.models.lora``) and `anchor` holds the frozen
base weights: the conditional pass is base + adapters, every anchor pass is the base alone, and
the LM head is the base's. `fuse_anchor_pass` (LoRA, MDU) runs the conditional and anchor passes
as one layer stack sharing each base matmul (``lora.paired_hidden_states``).

`activation_sharding` (a sharding of the batch rows, e.g. ``parallel.batch_sharding(mesh)``) pins
every model pass's input tokens and output hidden states to it. Without it, under FSDP GSPMD may
keep the layers' saved activations in a layout that grows with the *global* batch on every device
(see ``bench/memory_plan.py``); with it they stay per-device, at the price of an unsharded
LM-head gradient transient.
"""

from __future__ import annotations

from typing import Any, Sequence

import jax
import jax.numpy as jnp

from mdu_jax import diffusion, objectives
from mdu_jax.models import lora as lora_lib
from mdu_jax.models.config import ModelConfig
from mdu_jax.models.transformer import hidden_states as transformer_hidden_states, lm_head_kernel
from mdu_jax.objectives import chunked
from mdu_jax.training.config import ObjectiveSection

# Methods whose forget term needs the frozen initial model.
ANCHORED = ("mdu", "npo", "idkpo", "dpo")
def needs_anchor(method: str) -> bool:
    """Whether `method`'s loss reads the frozen initial model (the anchor argument of the step)."""
    return method in ANCHORED


# Methods with a retain term (lambda x MDLM loss on retain rows) when retain_weight != 0.
WITH_RETAIN = ("mdu", "graddiff", "npo", "simnpo", "me_gd", "idkpo")


def default_weighting(cfg: ModelConfig) -> str:
    """The reference's MDLM weighting: 1/t for LLaDA, CART (p = 0.3) for Dream."""
    return "cart" if cfg.family == "dream" else "scheduler"


def make_loss_fn(model_cfg: ModelConfig, obj: ObjectiveSection, *, special_ids: Sequence[int] = (),
                 attend_padding: bool = False, lora: lora_lib.LoraSpec | None = None,
                 fuse_anchor_pass: bool = False, activation_sharding=None):
    """The loss function of `obj.method` for `model_cfg` (see the module docstring)."""
    if fuse_anchor_pass and (lora is None or obj.method != "mdu"):
        raise ValueError("fuse_anchor_pass: needs LoRA (the anchor must be the base weights) and method 'mdu'")
    method = obj.method
    mask_id = model_cfg.mask_token_id
    retain_kind = obj.retain_loss_weight or default_weighting(model_cfg)
    forget_kind = default_weighting(model_cfg)
    exclude = tuple(sorted(set(int(i) for i in special_ids))) if obj.exclude_special else None
    keep_ids = tuple(sorted(set(int(i) for i in special_ids))) if obj.keep_template_tokens else None
    chunk = obj.chunk_size

    def pin(x):
        return x if activation_sharding is None else jax.lax.with_sharding_constraint(x, activation_sharding)

    def hidden_states(cfg, params, inputs, mask):  # the model core's, with pinned rows
        return pin(transformer_hidden_states(cfg, params, pin(inputs), mask))

    def lora_hidden(cfg, base, adapters, spec, inputs, mask):
        return pin(lora_lib.hidden_states(cfg, base, adapters, spec, pin(inputs), mask))

    def lora_paired(cfg, base, adapters, spec, cond, uncond, mask):
        hc, ha = lora_lib.paired_hidden_states(cfg, base, adapters, spec, pin(cond), pin(uncond), mask)
        return pin(hc), pin(ha)

    def loss_fn(params, anchor, batch, key, row_offset, axis_name):
        ids, maskable = batch["input_ids"], batch["maskable"]
        is_forget = batch["is_forget"]
        attn = None if attend_padding else batch["attention_mask"]
        keys = diffusion.row_keys(key, ids.shape[0], row_offset)
        noised, masked, t = diffusion.noise_batch(keys, ids, maskable, mask_id, eps=obj.time_eps,
                                                  schedule=obj.schedule, t_range=obj.t_range, band_rows=is_forget)
        if method == "sft" and obj.prompt_dropout > 0:
            # Prompt dropout: these rows see every non-response position as a mask token.
            drop_keys = diffusion.row_keys(jax.random.fold_in(key, 2), ids.shape[0], row_offset)
            drop = jax.vmap(lambda k: jax.random.bernoulli(k, obj.prompt_dropout))(drop_keys)
            noised = jnp.where(drop[:, None], objectives.unconditional_inputs(noised, maskable, mask_id), noised)
        if lora is None:
            def cond_hidden(inputs, mask):
                return hidden_states(model_cfg, params, inputs, mask)
            head = lm_head_kernel(model_cfg, params)
        else:
            def cond_hidden(inputs, mask):
                return lora_hidden(model_cfg, anchor, params, lora, inputs, mask)
            head = lm_head_kernel(model_cfg, anchor)
        if method == "mdu":
            keep = objectives.template_keep_mask(ids, keep_ids, maskable) if keep_ids else None
            uncond = objectives.unconditional_inputs(noised, maskable, mask_id, keep_mask=keep)
        if fuse_anchor_pass:
            h, h_uncond = lora_paired(model_cfg, anchor, params, lora, noised, uncond, attn)
        else:
            h = cond_hidden(noised, attn)
        common = dict(chunk_size=chunk, schedule=obj.schedule, axis_name=axis_name)

        def mdlm(weight, rows):
            return chunked.chunked_mdlm_loss(h, head, ids, masked, maskable, t, weight=weight, rows=rows, **common)

        def sequence_nll(hidden, kernel, target, msk, mskable, tt):
            return chunked.chunked_sequence_nll(hidden, kernel, target, msk, mskable, tt, chunk_size=chunk,
                                                weight=forget_kind, schedule=obj.schedule)

        def anchor_hidden(inputs, mask):
            return jax.lax.stop_gradient(hidden_states(model_cfg, anchor, inputs, mask))

        aux: dict[str, Any] = {}
        if method == "sft":
            loss = mdlm(retain_kind, None)
            return loss, {"retain": loss}
        if method == "mdu":
            if not fuse_anchor_pass:
                h_uncond = anchor_hidden(uncond, attn)
            loss, parts = chunked.chunked_mdu_objective(
                h, head, h_uncond, lm_head_kernel(model_cfg, anchor), ids, masked, maskable, t,
                is_forget, tau=obj.tau, eta=obj.eta, divergence=obj.divergence, exclude_ids=exclude,
                nan_to_num=obj.nan_to_num, retain_weight=obj.retain_weight, retain_loss_weight=retain_kind,
                **common)
            return loss, {"forget": parts["forget_loss"], "retain": parts["retain_loss"]}
        if method in ("ga", "graddiff"):
            forget = -mdlm(forget_kind, is_forget)
        elif method == "npo":
            s = sequence_nll(h, head, ids, masked, maskable, t)
            s_ref = sequence_nll(anchor_hidden(noised, attn), lm_head_kernel(model_cfg, anchor), ids, masked,
                                 maskable, t)
            forget = objectives.npo_from_nll(s, s_ref, maskable, beta=obj.npo_beta, batch_level=obj.npo_batch_level,
                                             rows=is_forget, axis_name=axis_name)
        elif method == "simnpo":
            s = sequence_nll(h, head, ids, masked, maskable, t)
            forget = objectives.simnpo_from_nll(s, maskable, beta=obj.npo_beta, gamma=obj.simnpo_gamma,
                                                rows=is_forget, axis_name=axis_name)
        elif method == "me_gd":
            forget = chunked.chunked_me_loss(h, head, masked & is_forget[:, None], chunk_size=chunk,
                                             axis_name=axis_name)
        elif method in ("idkpo", "dpo"):
            # chosen: the "I don't know" response, noised on its own; rejected: the forget answer.
            alt_ids, alt_maskable = batch["alt_input_ids"], batch["alt_maskable"]
            alt_attn = None if attend_padding else batch["alt_attention_mask"]
            alt_keys = diffusion.row_keys(jax.random.fold_in(key, 1), ids.shape[0], row_offset)
            alt_noised, alt_masked, alt_t = diffusion.noise_batch(alt_keys, alt_ids, alt_maskable, mask_id,
                                                                  eps=obj.time_eps, schedule=obj.schedule)
            anchor_head = lm_head_kernel(model_cfg, anchor)
            chosen = sequence_nll(cond_hidden(alt_noised, alt_attn), head, alt_ids, alt_masked,
                                  alt_maskable, alt_t)
            chosen_ref = sequence_nll(anchor_hidden(alt_noised, alt_attn), anchor_head, alt_ids, alt_masked,
                                      alt_maskable, alt_t)
            rejected = sequence_nll(h, head, ids, masked, maskable, t)
            rejected_ref = sequence_nll(anchor_hidden(noised, attn), anchor_head, ids, masked, maskable, t)
            forget = objectives.dpo_from_nll(chosen, chosen_ref, rejected, rejected_ref, beta=obj.dpo_beta,
                                             rows=is_forget, axis_name=axis_name)
        else:  # pragma: no cover - config validation lists the methods
            raise ValueError(f"objective.method: unknown {method!r}")
        aux["forget"] = forget
        loss = forget
        if method in WITH_RETAIN and obj.retain_weight != 0.0:
            retain = mdlm(retain_kind, ~is_forget)
            aux["retain"] = retain
            loss = loss + obj.retain_weight * retain
        return loss, aux

    return loss_fn
