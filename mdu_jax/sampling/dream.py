"""One Dream denoising step: ``diffusion_generate``'s algorithms (reference-mdlm 4.3).

The logits are already right-shifted by the model (``forward`` aligns them so that slot i is
predicted at slot i); nothing here shifts again.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from mdu_jax.sampling.common import select_top

ALGORITHMS = ("origin", "maskgit_plus", "topk_margin", "entropy")
_CONFIDENCE = {"maskgit_plus": "probability", "topk_margin": "margin", "entropy": "neg_entropy"}
_FILTERED = float(jnp.finfo(jnp.float32).min)  # what Dream writes into filtered logits


def top_p_filter(logits: jax.Array, top_p: float) -> jax.Array:
    """Nucleus filter on the last axis: keeps the most likely tokens up to and including the
    first one whose cumulative probability exceeds ``top_p``; the rest get float32 min.
    Tokens tied with the last kept one are kept too."""
    sorted_desc = -jnp.sort(-logits, axis=-1)
    cumulative = jnp.cumsum(jax.nn.softmax(sorted_desc, axis=-1), axis=-1)
    # The count of tokens strictly before the crossing, plus the crossing token itself.
    keep = jnp.minimum(jnp.sum(cumulative <= top_p, axis=-1) + 1, logits.shape[-1])
    threshold = jnp.take_along_axis(sorted_desc, (keep - 1)[..., None], axis=-1)
    return jnp.where(logits < threshold, _FILTERED, logits)


def top_k_filter(logits: jax.Array, top_k: int) -> jax.Array:
    """Keeps the logits >= the k-th largest on the last axis; the rest get float32 min."""
    k = min(int(top_k), logits.shape[-1])
    kth = jax.lax.top_k(logits, k)[0][..., -1:]
    return jnp.where(logits < kth, _FILTERED, logits)


def sample_tokens(logits: jax.Array, token_keys: jax.Array, *, temperature: float, top_p: float | None,
                  top_k: int | None, confidence: str = "probability") -> tuple[jax.Array, jax.Array]:
    """Dream's ``sample_tokens`` on float32 logits [B, G, V]: (confidence [B, G], tokens [B, G]).

    Divide by ``temperature`` (if > 0), apply top-p then top-k, softmax. At temperature > 0 the
    token is a categorical draw and its probability the confidence; at 0 it is the argmax
    (lowest index on ties) with the max probability. ``confidence='margin'`` gives
    p_top1 - p_top2, ``'neg_entropy'`` gives sum p log(p + 1e-10).
    """
    if temperature > 0:
        logits = logits / temperature
    if top_p is not None and top_p < 1:
        logits = top_p_filter(logits, top_p)
    if top_k is not None:
        logits = top_k_filter(logits, top_k)
    probs = jax.nn.softmax(logits, axis=-1)
    if temperature > 0:
        tokens = jax.vmap(lambda k, l: jax.random.categorical(k, l, axis=-1))(token_keys, logits)
    else:
        tokens = jnp.argmax(logits, axis=-1)
    if confidence == "probability":
        conf = jnp.take_along_axis(probs, tokens[..., None], axis=-1)[..., 0]
    elif confidence == "margin":
        top2 = jax.lax.top_k(probs, 2)[0]
        conf = top2[..., 0] - top2[..., 1]
    elif confidence == "neg_entropy":
        conf = jnp.sum(probs * jnp.log(probs + 1e-10), axis=-1)
    else:
        raise ValueError(f"confidence: unknown {confidence!r}")
    return conf, tokens


def dream_update(logits: jax.Array, gen: jax.Array, *, mask_id: int, algorithm: str, count: jax.Array,
                 reveal_prob: jax.Array, temperature: float, top_p: float | None, top_k: int | None,
                 alg_temp: float | None, token_keys: jax.Array, position_keys: jax.Array) -> jax.Array:
    """The generation slots [B, G] after one Dream step.

    ``origin``: each masked slot is revealed independently with probability ``reveal_prob``
    (1 - s/t; 1 on the last step), with a token from ``sample_tokens``; the uniforms are
    ``uniform(position_key, (G,))`` per row. Confidence algorithms: ``count`` masked slots with
    the highest confidence are revealed (``topk``), or, with ``alg_temp`` > 0, ``count`` slots
    drawn without replacement from softmax(confidence / alg_temp) (as Gumbel-top-k).
    """
    G = gen.shape[-1]
    masked = gen == mask_id
    if algorithm == "origin":
        _, tokens = sample_tokens(logits, token_keys, temperature=temperature, top_p=top_p, top_k=top_k)
        u = jax.vmap(lambda k: jax.random.uniform(k, (G,), jnp.float32))(position_keys)
        reveal = masked & (u < reveal_prob)
    elif algorithm in _CONFIDENCE:
        conf, tokens = sample_tokens(logits, token_keys, temperature=temperature, top_p=top_p, top_k=top_k,
                                     confidence=_CONFIDENCE[algorithm])
        if alg_temp:
            gumbel = jax.vmap(lambda k: jax.random.gumbel(k, (G,), jnp.float32))(position_keys)
            conf = conf / alg_temp + gumbel
        reveal = select_top(conf, masked, count)
    else:
        raise ValueError(f"algorithm: unknown Dream algorithm {algorithm!r}; expected one of {ALGORITHMS}")
    return jnp.where(reveal, tokens.astype(gen.dtype), gen)
