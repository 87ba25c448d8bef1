"""One LLaDA denoising step: low-confidence (or random) remasking inside the current block
(reference-mdlm 4.1, 4.2)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from mdu_jax.sampling.common import select_top, suppress

REMASKING = ("low_confidence", "random")


def llada_update(logits: jax.Array, gen: jax.Array, *, mask_id: int, block_end: jax.Array, count: jax.Array,
                 temperature: float, remasking: str, suppress_tokens: tuple[int, ...],
                 confidence_suppress_tokens: tuple[int, ...], token_keys: jax.Array,
                 position_keys: jax.Array) -> jax.Array:
    """The generation slots [B, G] after one step.

    logits: float32 [B, G, V] for the slots. ``suppress_tokens`` are removed before the token
    choice; the choice is ``argmax(logits + temperature * Gumbel)`` (a draw from
    softmax(logits / temperature); plain argmax at 0). ``confidence_suppress_tokens`` are then
    removed from the logits the confidence reads (dllm's ``begin_suppress_tokens``: a chosen
    suppressed token gets confidence 0 and is revealed last). Confidence: ``low_confidence`` is
    the noise-free softmax probability of the chosen token, ``random`` a U[0, 1) draw. The
    ``count`` most confident masked slots before ``block_end`` are revealed; revealed slots never
    change again.

    Precision: LLaDA draws its Gumbel noise and softmax in float64, dllm's softmax runs in the
    model dtype (bf16 for the released models, where equal confidences are common and
    ``torch.topk`` breaks ties its own way); here both are float32 and ties go to the lowest slot.
    """
    G, V = logits.shape[-2:]
    logits = suppress(logits, suppress_tokens)
    scores = logits
    if temperature > 0:
        noise = jax.vmap(lambda k: jax.random.gumbel(k, (G, V), jnp.float32))(token_keys)
        scores = logits + temperature * noise
    x0 = jnp.argmax(scores, axis=-1)
    logits = suppress(logits, confidence_suppress_tokens)
    if remasking == "low_confidence":
        chosen = jnp.take_along_axis(logits, x0[..., None], axis=-1)[..., 0]
        confidence = jnp.exp(chosen - jax.nn.logsumexp(logits, axis=-1))
    elif remasking == "random":
        confidence = jax.vmap(lambda k: jax.random.uniform(k, (G,), jnp.float32))(position_keys)
    else:
        raise ValueError(f"remasking: unknown {remasking!r}; expected one of {REMASKING}")
    masked = gen == mask_id
    eligible = masked & (jnp.arange(G) < block_end)
    reveal = select_top(confidence, eligible, count)
    return jnp.where(reveal, x0.astype(gen.dtype), gen)
