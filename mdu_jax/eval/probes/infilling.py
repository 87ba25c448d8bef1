"""The partial-reveal (infilling) attack, specific to diffusion LMs.

For a (prompt, answer) pair the attacker reveals a fraction r of the answer's tokens, masks the
rest, and asks the model to fill them in; the probe reports how many hidden tokens come back.
A model that forgot the answer should recover no more than a retain-only reference does (the
floor: what the prompt and the revealed tokens alone give away).

Reveal orders (``reveal_order``), each a permutation of the answer positions; the first
``n = reveal_count(r, A)`` positions are revealed, so the revealed sets of one pair nest as r
grows:

- ``random``: a uniform permutation drawn from ``default_rng([seed, pair_index])``.
- ``prefix``: left to right (the attacker knows how the answer starts).
- ``least_informative``: the positions the model is already most confident about first. The
  confidence of position i is p(answer_i | prompt, every answer position masked), read off one
  forward pass (``answer_confidence``) of the model given as ``order_params`` (default: the model
  under attack); ties go to the earlier position. Revealing what the model would have guessed
  anyway tells it the least, so the hidden tokens are the hard ones: the most demanding order.

Pairs are ``(prompt_ids, answer_ids)`` or ``(prompt_ids, answer_ids, suffix_ids)``: the suffix (a
chat template's end-of-turn tail) follows the answer and is always shown, like the prompt: the
attacker knows the template, and template tokens are no evidence of memorised content.

Filling: one forward pass on ``[prompt | answer with the hidden positions masked | suffix]`` and the
argmax of each hidden position's logits (the mask token excluded). Not the iterative sampler,
on purpose: one pass gives every hidden token the same context (the revealed tokens), is
deterministic, and costs one forward per row, so the curve measures what the weights know given
the reveal rather than what a particular unmasking schedule does with its own guesses.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from mdu_jax.models.config import ModelConfig
from mdu_jax.models.transformer import forward
from mdu_jax.sampling.common import suppress

ORDERS = ("random", "prefix", "least_informative")


@functools.partial(jax.jit, static_argnames=("cfg",))
def _fill_logits(cfg: ModelConfig, params, input_ids, attention_mask, targets):
    """(argmax ids [B, T] int32 with the mask token excluded, log p of `targets` [B, T] fp32 under
    the same mask-free softmax). Only these leave the program, never the [B, T, V] log-probs."""
    logits = forward(cfg, params, input_ids, attention_mask).astype(jnp.float32)
    logits = suppress(logits, (cfg.mask_token_id,))
    logp = jnp.take_along_axis(jax.nn.log_softmax(logits, axis=-1), targets[..., None], axis=-1)[..., 0]
    return jnp.argmax(logits, axis=-1).astype(jnp.int32), logp


def _check_pairs(pairs: Sequence) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(prompt, answer, suffix) int32 arrays of each pair; the suffix is empty for 2-item pairs."""
    out = []
    for n, pair in enumerate(pairs):
        if len(pair) not in (2, 3):
            raise ValueError(f"pairs[{n}]: expected (prompt_ids, answer_ids[, suffix_ids]), got {len(pair)} items")
        prompt, answer, suffix = (np.asarray(x, np.int64).reshape(-1) for x in (*pair, [])[:3])
        if answer.size == 0:
            raise ValueError(f"pairs[{n}]: empty answer (nothing to hide)")
        out.append((prompt.astype(np.int32), answer.astype(np.int32), suffix.astype(np.int32)))
    return out


def _run_rows(cfg: ModelConfig, params, rows: list[np.ndarray], batch_size: int,
              targets: list[np.ndarray] | None = None):
    """Forward passes over right-padded `rows` (lists of ids), `batch_size` rows per compiled call.
    Returns (argmax ids, log p of `targets` (default: the rows themselves)) per row, each trimmed
    to the row's length."""
    T = max(len(r) for r in rows)
    ids = np.full((len(rows), T), cfg.pad_token_id, np.int32)
    tgt = np.zeros((len(rows), T), np.int32)
    attn = np.zeros((len(rows), T), np.int32)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = r
        tgt[i, : len(r)] = r if targets is None else targets[i]
        attn[i, : len(r)] = 1
    preds, logps = [], []
    for start in range(0, len(rows), batch_size):
        chunk = slice(start, start + batch_size)
        n = len(ids[chunk])
        pad = batch_size - n  # a fixed batch shape: one compiled program for every chunk
        fill = lambda a: jnp.asarray(np.concatenate([a[chunk], np.repeat(a[chunk][-1:], pad, 0)]))  # noqa: E731
        p, lp = _fill_logits(cfg, params, fill(ids), fill(attn), fill(tgt))
        preds.append(np.asarray(p)[:n])
        logps.append(np.asarray(lp)[:n])
    preds, logps = np.concatenate(preds), np.concatenate(logps)
    return [preds[i, : len(r)] for i, r in enumerate(rows)], [logps[i, : len(r)] for i, r in enumerate(rows)]


def answer_confidence(cfg: ModelConfig, params, pairs: Sequence, *, batch_size: int = 8) -> list[np.ndarray]:
    """Per pair, float32 [A]: p(answer_i | prompt, every answer position masked), one forward pass.

    pairs: (prompt_ids, answer_ids[, suffix_ids]) sequences of ints. The probability is of the
    true token after the mask token's logit is removed (the model never fills in a mask).
    """
    checked = _check_pairs(pairs)
    rows = [np.concatenate([p, np.full(len(a), cfg.mask_token_id, np.int32), s]) for p, a, s in checked]
    _, logps = _run_rows(cfg, params, rows, batch_size, targets=[np.concatenate(t) for t in checked])
    return [np.exp(lp[len(p) + np.arange(len(a))]).astype(np.float32) for (p, a, _), lp in zip(checked, logps)]


def reveal_order(order: str, answer_len: int, *, seed: int = 0, pair_index: int = 0,
                 confidence: np.ndarray | None = None) -> np.ndarray:
    """The answer positions in reveal order: an int64 permutation of range(answer_len).

    order: ``random`` (uses seed and pair_index), ``prefix``, or ``least_informative`` (needs
    `confidence` [answer_len], highest first, stable on ties). See the module docstring.
    """
    if order == "random":
        return np.random.default_rng([seed, pair_index]).permutation(answer_len)
    if order == "prefix":
        return np.arange(answer_len)
    if order == "least_informative":
        if confidence is None or np.shape(confidence) != (answer_len,):
            raise ValueError(f"least_informative: needs a confidence of shape ({answer_len},), got "
                             f"{None if confidence is None else np.shape(confidence)}")
        return np.argsort(-np.asarray(confidence, np.float64), kind="stable")
    raise ValueError(f"order: expected one of {list(ORDERS)}, got {order!r}")


def reveal_count(ratio: float, answer_len: int) -> int:
    """How many of `answer_len` tokens a reveal ratio in [0, 1) shows: floor(ratio * A), at most
    A - 1 so that at least one token stays hidden."""
    if not 0.0 <= ratio < 1.0:
        raise ValueError(f"ratio: expected 0 <= r < 1 (r = 1 hides nothing), got {ratio}")
    return min(int(np.floor(ratio * answer_len + 1e-9)), answer_len - 1)


@dataclasses.dataclass
class InfillingCurve:
    """Recovery of hidden answer tokens per reveal ratio, for one order.

    token_accuracy[j]: hidden tokens recovered / hidden tokens, pooled over all pairs at
    ratios[j]; exact_match[j]: fraction of pairs whose hidden tokens all came back;
    hidden_tokens[j]: how many tokens were hidden in all (the denominator).
    """

    order: str
    ratios: list[float]
    token_accuracy: list[float]
    exact_match: list[float]
    hidden_tokens: list[int]

    def to_json(self) -> dict[str, Any]:
        """The curve as a JSON-ready dict of its fields."""
        return dataclasses.asdict(self)


def infilling_curve(cfg: ModelConfig, params, pairs: Sequence, ratios: Sequence[float], *,
                    order: str = "random", seed: int = 0, order_params=None,
                    batch_size: int = 8) -> InfillingCurve:
    """The partial-reveal attack on `pairs` ((prompt_ids, answer_ids[, suffix_ids]) int sequences) at each
    reveal ratio in `ratios` (each in [0, 1)), revealing in `order` (see the module docstring;
    ``least_informative`` ranks with `order_params`, default `params`). One forward pass per
    (pair, ratio) row, `batch_size` rows per compiled call."""
    if order not in ORDERS:
        raise ValueError(f"order: expected one of {list(ORDERS)}, got {order!r}")
    checked = _check_pairs(pairs)
    confidence = (answer_confidence(cfg, params if order_params is None else order_params, checked,
                                    batch_size=batch_size)
                  if order == "least_informative" else [None] * len(checked))
    rows, hidden = [], []
    for n, (prompt, answer, suffix) in enumerate(checked):
        ranking = reveal_order(order, len(answer), seed=seed, pair_index=n, confidence=confidence[n])
        for r in ratios:
            hide = np.ones(len(answer), bool)
            hide[ranking[: reveal_count(r, len(answer))]] = False
            rows.append(np.concatenate([prompt, np.where(hide, cfg.mask_token_id, answer), suffix]).astype(np.int32))
            hidden.append(hide)
    preds, _ = _run_rows(cfg, params, rows, batch_size)
    correct = np.zeros((len(checked), len(ratios)))
    counts = np.zeros((len(checked), len(ratios)), np.int64)
    for i, (pred, hide) in enumerate(zip(preds, hidden)):
        n, j = divmod(i, len(ratios))
        prompt, answer, _ = checked[n]
        correct[n, j] = np.sum(pred[len(prompt):len(prompt) + len(answer)][hide] == answer[hide])
        counts[n, j] = hide.sum()
    return InfillingCurve(order=order, ratios=[float(r) for r in ratios],
                          token_accuracy=[float(x) for x in correct.sum(0) / counts.sum(0)],
                          exact_match=[float(x) for x in np.mean(correct == counts, axis=0)],
                          hidden_tokens=[int(x) for x in counts.sum(0)])


__all__ = ["ORDERS", "answer_confidence", "reveal_order", "reveal_count", "InfillingCurve", "infilling_curve"]
