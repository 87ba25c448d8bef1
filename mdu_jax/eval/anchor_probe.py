"""Where the MDU anchor points: probabilities at masked answer positions, prompt visible or masked.

MDU pulls the model's prediction at each masked response position (input ``[prompt | noised
response]``, the *conditional* view) toward the frozen initial model's prediction on the same
response with every prompt position replaced by the mask token (the *prompt-masked* view, the
anchor at tau = 1). ``anchor_probe`` measures, for a model and a set of (question, answer) rows,
how much probability each view puts on the true answer token and on the end-of-sequence token
at masked answer-content positions (the answer's tokens, not the template's end-of-turn tail),
at several masking ratios of the response: ratio 1 masks the whole response; below 1 each
response token is masked independently with that probability (``draws`` draws per row,
seeded). Rows are padded to a common length with padding hidden from attention, so the model
sees exactly ``[prompt or masks | response]``.

Run it on the model before unlearning (its prompt-masked view *is* MDU's anchor) and after
(its conditional view is what MDU trained toward the anchor) to see where MDU converges and why.
"""

from __future__ import annotations

import functools
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from mdu_jax.eval import scoring as S
from mdu_jax.models.config import ModelConfig
from mdu_jax.models.transformer import hidden_states, logits_from_hidden

VIEWS = ("conditional", "prompt_masked")
STATS = ("p_true", "p_eos", "p_special", "argmax_eos", "argmax_true")


@functools.partial(jax.jit, static_argnames=("cfg",))
def _position_stats(cfg: ModelConfig, params, input_ids, attention_mask, targets, special):
    """Per position [R, T]: p(target), p(eos), total p over `special` [V] bool, argmax == eos,
    argmax == target; fp32 softmax."""
    h = hidden_states(cfg, params, input_ids, attention_mask)
    p = jax.nn.softmax(logits_from_hidden(cfg, params, h).astype(jnp.float32), axis=-1)
    argmax = jnp.argmax(p, axis=-1)
    p_true = jnp.take_along_axis(p, targets[..., None], axis=-1)[..., 0]
    p_special = jnp.sum(jnp.where(special, p, 0.0), axis=-1)
    return (p_true, p[..., cfg.eos_token_id], p_special, (argmax == cfg.eos_token_id).astype(jnp.float32),
            (argmax == targets).astype(jnp.float32))


def _masks(n_response: int, n_content: int, ratio: float, draws: int, rng: np.random.Generator) -> list[np.ndarray]:
    """bool [n_response] masks of one row: the whole response at ratio 1, else `draws` random ones
    (each with at least one masked content position, so every draw is scored)."""
    if ratio >= 1.0:
        return [np.ones(n_response, bool)]
    out = []
    while len(out) < draws:
        m = rng.random(n_response) < ratio
        if m[:n_content].any():
            out.append(m)
    return out


def anchor_probe(cfg: ModelConfig, params, tokenizer, rows: Sequence[dict], *,
                 ratios: Sequence[float] = (1.0, 0.5, 0.15), draws: int = 4, seed: int = 0,
                 rows_per_forward: int = 64) -> dict[str, dict[str, dict[str, float]]]:
    """{view: {ratio (str): {stat: mean}}} over masked answer-content positions of `rows`
    ({question, answer} dicts) for both views (``VIEWS``).

    Stats: ``p_true`` (probability of the true token), ``p_eos`` (of the EOS token),
    ``p_special`` (of all special tokens: EOS, end-of-turn, mask...), ``argmax_eos`` / ``argmax_true``
    (fraction of positions whose most likely token is EOS / the true token), and ``positions``
    (how many positions were averaged).
    """
    if not rows:
        raise ValueError("anchor_probe: no rows")
    bad = [r for r in ratios if not 0.0 < float(r) <= 1.0]
    if bad:
        raise ValueError(f"anchor_probe: ratios must lie in (0, 1], got {bad}")
    special = np.zeros(cfg.vocab_size, bool)
    special[[int(i) for i in tokenizer.all_special_ids if int(i) < cfg.vocab_size]] = True
    if getattr(tokenizer, "unk_token_id", None) is not None:
        special[int(tokenizer.unk_token_id)] = False
    pairs = [S.response_ids(tokenizer, r["question"], r["answer"]) for r in rows]
    rng = np.random.default_rng(seed)
    # One probe row per (row, ratio, draw, view): (ids, targets, scored positions).
    items: list[tuple[str, str, list[int], list[int], np.ndarray]] = []
    for prompt, response in pairs:
        n_content = S.content_length(tokenizer, response)
        for ratio in ratios:
            for m in _masks(len(response), n_content, float(ratio), draws, rng):
                noised = [cfg.mask_token_id if mi else t for t, mi in zip(response, m)]
                scored = np.flatnonzero(m[:n_content]) + len(prompt)
                target = list(prompt) + list(response)
                items.append(("conditional", f"{float(ratio):g}", list(prompt) + noised, target, scored))
                items.append(("prompt_masked", f"{float(ratio):g}", [cfg.mask_token_id] * len(prompt) + noised,
                              target, scored))
    T = max(len(ids) for _, _, ids, _, _ in items)
    sums: dict[tuple[str, str], np.ndarray] = {}
    counts: dict[tuple[str, str], int] = {}
    R = int(rows_per_forward)
    for lo in range(0, len(items), R):
        chunk = items[lo:lo + R]
        ids = np.full((R, T), cfg.pad_token_id, np.int32)
        attn = np.zeros((R, T), np.int32)
        tgt = np.zeros((R, T), np.int32)
        for r, (_, _, x, y, _) in enumerate(chunk):
            ids[r, :len(x)], attn[r, :len(x)], tgt[r, :len(y)] = x, 1, y
        stats = [np.asarray(s) for s in _position_stats(cfg, params, ids, attn, tgt, special)]
        for r, (view, ratio, _, _, scored) in enumerate(chunk):
            key = (view, ratio)
            sums[key] = sums.get(key, np.zeros(len(STATS))) + np.asarray([s[r, scored].sum() for s in stats])
            counts[key] = counts.get(key, 0) + len(scored)
    out: dict[str, dict[str, dict[str, float]]] = {v: {} for v in VIEWS}
    for (view, ratio), total in sums.items():
        out[view][ratio] = {**{k: float(v / counts[(view, ratio)]) for k, v in zip(STATS, total)},
                            "positions": counts[(view, ratio)]}
    return out
