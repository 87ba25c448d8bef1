"""MDU's TruthfulQA score: the mean autoregressive NLL of a whole token sequence from one
unmasked forward pass (``sequence_ar_nll``; MDU's scripts/eval_rwku_dream.py)."""

from __future__ import annotations

import dataclasses
import functools
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from mdu_jax.models.config import ModelConfig, inference_config
from mdu_jax.models.transformer import hidden_states, logits_from_hidden
from mdu_jax.sampling.prompts import batch_bucket, bucket_length, pack_rows

_AR_TRACES = [0]


@functools.partial(jax.jit, static_argnames=("cfg",))
def _ar_nll_sums(cfg: ModelConfig, params, input_ids, attention_mask):
    """float32 [R] summed next-token NLL and [R] number of scored tokens (see ``sequence_ar_nll``)."""
    _AR_TRACES[0] += 1  # runs once per trace
    h = hidden_states(cfg, params, input_ids, attention_mask)
    # The script's logits[:-1] vs ids[1:] on the model's raw output. forward() already shifts
    # Dream right by one (our position i holds raw position i-1), so Dream's raw logits[:-1] are
    # our [1:]; LLaDA's raw logits are ours, taken literally.
    h = h[:, 1:] if cfg.shifts_logits else h[:, :-1]
    logits = logits_from_hidden(cfg, params, h).astype(jnp.float32)
    targets = input_ids[:, 1:]
    target_logit = jnp.take_along_axis(logits, targets[..., None], axis=-1)[..., 0]
    valid = attention_mask[:, 1:] > 0
    # where, not a product: Dream's fully masked padding rows need not be finite.
    nll = jnp.where(valid, jax.nn.logsumexp(logits, axis=-1) - target_logit, 0.0)
    return jnp.sum(nll, axis=-1), jnp.sum(valid.astype(jnp.float32), axis=-1)


def ar_programs() -> int:
    """How many ``sequence_ar_nll`` programs have been traced (one per cfg, row count, bucket)."""
    return _AR_TRACES[0]


@dataclasses.dataclass(frozen=True)
class SequenceBatch:
    """One forward pass of ``sequence_ar_nll``: sequence indices padded to ``padded_rows`` rows
    of ``length`` tokens."""

    length: int
    padded_rows: int
    members: tuple[int, ...]


def ar_nll_batches(lengths: Sequence[int], *, rows_per_forward: int = 64,
                   buckets: Sequence[int] | None = None) -> list[SequenceBatch]:
    """The forward passes ``sequence_ar_nll`` runs for sequences of these lengths, in order:
    grouped by length bucket, ``batch_bucket(group size, rows_per_forward)`` rows per pass."""
    by_bucket: dict[int, list[int]] = {}
    for n, length in enumerate(lengths):
        if length < 1:
            raise ValueError(f"sequence_ar_nll: sequence {n} is empty")
        by_bucket.setdefault(bucket_length(length, buckets), []).append(n)
    out = []
    for T, members in sorted(by_bucket.items()):
        R = batch_bucket(len(members), rows_per_forward)
        out += [SequenceBatch(T, R, tuple(members[lo:lo + R])) for lo in range(0, len(members), R)]
    return out


def sequence_ar_nll(cfg: ModelConfig, params, sequences: Sequence[list[int]], *, rows_per_forward: int = 64,
                    buckets: Sequence[int] | None = None, progress=None,
                    on_forward: Callable[[int], None] | None = None) -> np.ndarray:
    """float64 [N]: MDU's TruthfulQA score of each token sequence, the mean autoregressive NLL
    (nats) over the whole sequence: one unmasked forward pass (no mask token anywhere) and
    cross-entropy of the raw logits at positions 0..T-2 against tokens 1..T-1, divided by T-1.

    MDU wrote this for Dream, whose raw logit at i predicts token i+1, so for Dream it is a true
    next-token NLL (our logits[:, 1:] against ids[:, 1:]). For LLaDA it is the literal transfer of
    the same recipe to LLaDA's native logits (logits[:, :-1] against ids[:, 1:]), whose position i
    predicts token i itself: it is not a likelihood of the sequence, only what the script would
    compute. Sequences are right-padded (attention mask 0) per length bucket (``buckets``,
    default the sampler's ladder) in the passes of ``ar_nll_batches``, so each bucket compiles
    once. ``progress`` (a tqdm bar) advances per sequence, ``on_forward(1)`` after each pass.
    A one-token sequence scores 0.
    """
    out = np.zeros(len(sequences), dtype=np.float64)
    run_cfg = inference_config(cfg)
    for b in ar_nll_batches([len(s) for s in sequences], rows_per_forward=rows_per_forward, buckets=buckets):
        R, T, chunk = b.padded_rows, b.length, list(b.members)
        ids, attn = pack_rows([sequences[n] for n in chunk], R, T, cfg.pad_token_id)
        total, count = (np.asarray(x, dtype=np.float64) for x in _ar_nll_sums(run_cfg, params, ids, attn))
        out[chunk] = total[:len(chunk)] / np.maximum(count[:len(chunk)], 1.0)
        if progress is not None:
            progress.update(len(chunk))
        if on_forward is not None:
            on_forward(1)
    return out
