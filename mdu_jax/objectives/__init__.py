"""Unlearning objectives for masked diffusion LMs: pure, jit-friendly functions of logits and masks.

- `mdu`: the MDU loss (`mdu_loss`, `token_divergence`), the anchor's input
  (`unconditional_inputs`) and the full objective (`mdu_objective`).
- `baselines`: GA, GradDiff, NPO, SimNPO, ME+GD, DPO / IdkPO, with the same random masking.
- `chunked`: the same losses from hidden states and the LM-head kernel, evaluated in chunks
  over the sequence so that no full [B, T, V] logits array is formed.

The MDLM (retain / SFT) loss itself is `mdu_jax.diffusion.mdlm_loss`.
"""

from mdu_jax.objectives import baselines, chunked
from mdu_jax.objectives.baselines import (dpo_from_nll, ga_loss, ga_objective, graddiff_objective,
                                          idkpo_loss, idkpo_objective, load_idk_answers, me_gd_objective,
                                          me_loss, npo_from_nll, npo_loss, npo_objective,
                                          simnpo_from_nll, simnpo_loss, simnpo_objective,
                                          token_kl_to_uniform)
from mdu_jax.objectives.chunked import (chunked_mdlm_loss, chunked_mdu_loss, chunked_mdu_objective,
                                        chunked_me_loss, chunked_position_sum, chunked_sequence_nll)
from mdu_jax.objectives.mdu import (DIVERGENCES, masked_mean, mdu_loss, mdu_objective, retain_term,
                                    target_logits, template_keep_mask, token_divergence,
                                    unconditional_inputs)

__all__ = [
    "DIVERGENCES", "baselines", "chunked",
    "mdu_loss", "token_divergence", "target_logits", "masked_mean", "unconditional_inputs",
    "template_keep_mask", "retain_term", "mdu_objective",
    "ga_loss", "ga_objective", "graddiff_objective", "npo_from_nll", "npo_loss", "npo_objective",
    "simnpo_from_nll", "simnpo_loss", "simnpo_objective", "token_kl_to_uniform", "me_loss",
    "me_gd_objective", "dpo_from_nll", "idkpo_loss", "idkpo_objective", "load_idk_answers",
    "chunked_position_sum", "chunked_sequence_nll", "chunked_mdlm_loss", "chunked_me_loss",
    "chunked_mdu_loss", "chunked_mdu_objective",
]
