"""Masked-diffusion samplers for LLaDA and Dream, each batch one compiled program.

``generate(cfg, params, prompts, ...)`` is the entry point; the pieces are importable for
research use: ``schedules`` (transfer counts), ``llada`` / ``dream`` (one denoising step),
``prompts`` (canvases, buckets, decoding), ``common`` (model call, selection, random streams).
"""

from mdu_jax.sampling.sampler import (GenerationOutput, SamplerSpec, compiled_programs, denoise, generate,
                                       make_spec, read_slots)
from mdu_jax.sampling.schedules import (dllm_transfer_counts, dream_reveal_probs, dream_timesteps,
                                        dream_transfer_counts, llada_plan, llada_transfer_counts)

__all__ = ["generate", "GenerationOutput", "SamplerSpec", "make_spec", "denoise", "compiled_programs", "read_slots",
           "llada_transfer_counts", "dllm_transfer_counts", "dream_transfer_counts", "dream_timesteps",
           "dream_reveal_probs", "llada_plan"]
