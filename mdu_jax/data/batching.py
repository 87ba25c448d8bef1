"""Deterministic, resumable batches with length buckets.

The batch of micro-step ``s`` is a pure function of (examples, seed, s): the order of epoch e
is a permutation drawn from ``(seed, e)``, grouped by length in mega-batches (as HF's
LengthGroupedSampler does) so padding stays small, and each batch is right-padded to the
smallest configured bucket that holds it (``padding='bucket'``: a run compiles one program per
bucket) or to its own longest row (``padding='longest'``: the reference's collator; one program
per distinct length). Resuming at step s needs nothing but s.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

from mdu_jax.data.encoding import DataError, Example, lengths

MEGA_BATCH = 50  # batches per length-sorted group


@dataclasses.dataclass(frozen=True)
class Batch:
    """Arrays for one global micro-batch (numpy, host side).

    input_ids int32 [B, T]; maskable bool [B, T] (response positions); attention_mask int32 [B, T]
    (1 on tokens, 0 on padding); is_forget bool [B]; optional alt_* for preference objectives.
    """

    input_ids: np.ndarray
    maskable: np.ndarray
    attention_mask: np.ndarray
    is_forget: np.ndarray
    alt_input_ids: np.ndarray | None = None
    alt_maskable: np.ndarray | None = None
    alt_attention_mask: np.ndarray | None = None

    def as_dict(self) -> dict[str, np.ndarray]:
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}


def hf_length_grouped(perm: np.ndarray, lens: np.ndarray, group_rows: int) -> np.ndarray:
    """HF's LengthGroupedSampler order of one epoch, from the random permutation `perm`.

    ``group_rows`` is the Trainer's grouping batch (per-device rows x accumulation steps). The
    permutation is cut into mega-batches of ``m * group_rows`` rows, m = min(n // (4 group_rows),
    50) (at least 1); each is sorted by length, longest first (ties keep their order); the
    epoch's longest row is swapped with the first mega-batch's first row; micro-batches are then
    consecutive slices of the result. Returns int64 [n].
    """
    n = len(perm)
    mult = max(1, min(n // (group_rows * 4), 50))
    size = mult * group_rows
    megas = [sorted(perm[i: i + size].tolist(), key=lambda j: -int(lens[j])) for i in range(0, n, size)]
    heads = [int(lens[m[0]]) for m in megas]
    top = heads.index(max(heads))
    megas[0][0], megas[top][0] = megas[top][0], megas[0][0]
    return np.asarray([j for m in megas for j in m], np.int64)


def bucket_for(length: int, buckets: Sequence[int]) -> int:
    for b in buckets:
        if length <= b:
            return b
    raise DataError(f"a batch needs {length} positions, more than the largest bucket {buckets[-1]}")


def pad_rows(rows: Sequence[np.ndarray], prompt_lens: Sequence[int], T: int, pad_id: int,
             pad_labels: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Right-pads rows to T: (ids, maskable, attention_mask). pad_labels='eos' makes padding maskable."""
    B = len(rows)
    ids = np.full((B, T), pad_id, np.int32)
    maskable = np.zeros((B, T), bool)
    attn = np.zeros((B, T), np.int32)
    for i, (r, p) in enumerate(zip(rows, prompt_lens)):
        ids[i, : len(r)] = r
        attn[i, : len(r)] = 1
        maskable[i, p: len(r)] = True
        if pad_labels == "eos":
            maskable[i, len(r):] = True
    return ids, maskable, attn


class BatchPlan:
    """Global batches for every micro-step of a run; ``batch(step)`` is deterministic.

    length_grouping='shuffled': mega-batches of ``MEGA_BATCH`` batches sorted by length, the
    batches then shuffled; 'hf': HF's LengthGroupedSampler order (``hf_length_grouped``) over
    optimiser-step groups of `group_batches` micro-batches, as the reference's Trainer (only the
    random permutation differs: numpy's, not torch's). mixing='union': the shuffled union of forget and retain examples (the reference's
    concatenate + shuffle), split inside the step by ``is_forget``. mixing='paired': every batch
    holds `forget_batch_size` forget rows followed by retain rows; an epoch is one pass over the
    forget set (retain rows cycle in their own shuffled order).
    """

    def __init__(self, forget: Sequence[Example], retain: Sequence[Example], *, batch_size: int, seed: int,
                 buckets: Sequence[int], pad_id: int, mixing: str = "union", forget_batch_size: int | None = None,
                 pad_labels: str = "ignore", padding: str = "bucket", length_grouping: str = "shuffled",
                 group_batches: int = 1):
        if padding not in ("bucket", "longest"):
            raise DataError(f"padding: expected 'bucket' or 'longest', got {padding!r}")
        if length_grouping not in ("shuffled", "hf"):
            raise DataError(f"length_grouping: expected 'shuffled' or 'hf', got {length_grouping!r}")
        if length_grouping == "hf" and mixing != "union":
            raise DataError("length_grouping 'hf': HF's sampler orders one pool of rows (data.mixing: union)")
        self.length_grouping, self.group_batches = length_grouping, int(group_batches)
        if not forget and not retain:
            raise DataError("no training examples: the forget and retain sets are both empty")
        self.forget, self.retain = list(forget), list(retain)
        self.batch_size, self.seed, self.buckets = batch_size, seed, list(buckets)
        self.pad_id, self.mixing, self.pad_labels, self.padding = pad_id, mixing, pad_labels, padding
        # Preference objectives need the alt_* arrays in every batch (the compiled step reads them),
        # also in a batch that happens to hold only retain rows.
        self.has_alt = any(e.alt_input_ids is not None for e in self.forget + self.retain)
        if mixing == "union":
            self.pool = self.forget + self.retain
            if len(self.pool) < batch_size:
                raise DataError(f"batch_size={batch_size} exceeds the {len(self.pool)} training examples")
            self.steps_per_epoch = len(self.pool) // batch_size
            self._lengths = lengths(self.pool)
        else:
            if not self.forget or not self.retain:
                raise DataError("data.mixing=paired needs non-empty forget and retain sets")
            self.fb = int(forget_batch_size)
            self.rb = batch_size - self.fb
            if len(self.forget) < self.fb:
                raise DataError(f"forget_batch_size={self.fb} exceeds the {len(self.forget)} forget examples")
            self.steps_per_epoch = len(self.forget) // self.fb

    def _order(self, n: int, epoch: int, salt: int, lens: np.ndarray | None, bs: int) -> np.ndarray:
        rng = np.random.default_rng([self.seed, salt, epoch])
        perm = rng.permutation(n)
        if lens is None:
            return perm
        if self.length_grouping == "hf":
            return hf_length_grouped(perm, lens, bs * self.group_batches)
        # Sort by length inside mega-batches, then shuffle the batches: little padding, random order.
        groups = [perm[i: i + MEGA_BATCH * bs] for i in range(0, n, MEGA_BATCH * bs)]
        perm = np.concatenate([g[np.argsort(-lens[g], kind="stable")] for g in groups])
        nb = n // bs
        batches = perm[: nb * bs].reshape(nb, bs)
        return batches[rng.permutation(nb)].reshape(-1)

    def indices(self, step: int) -> tuple[np.ndarray, np.ndarray]:
        """(pool or forget indices, retain indices) of micro-step `step`."""
        epoch, i = divmod(step, self.steps_per_epoch)
        if self.mixing == "union":
            order = self._order(len(self.pool), epoch, 0, self._lengths, self.batch_size)
            return order[i * self.batch_size:(i + 1) * self.batch_size], np.zeros(0, np.int64)
        f_order = self._order(len(self.forget), epoch, 1, None, self.fb)
        f_idx = f_order[i * self.fb:(i + 1) * self.fb]
        r_pos = step * self.rb
        r_epoch, r_off = divmod(r_pos, len(self.retain))
        r_idx = []
        while len(r_idx) < self.rb:
            r_order = self._order(len(self.retain), r_epoch, 2, None, 1)
            take = r_order[r_off: r_off + self.rb - len(r_idx)]
            r_idx.extend(take.tolist())
            r_epoch, r_off = r_epoch + 1, 0
        return f_idx, np.asarray(r_idx, np.int64)

    def batch(self, step: int) -> Batch:
        """The global micro-batch of micro-step `step`, padded to its bucket (or its longest row)."""
        a, b = self.indices(step)
        rows = [self.pool[j] for j in a] if self.mixing == "union" else (
            [self.forget[j] for j in a] + [self.retain[j] for j in b])
        longest = int(lengths(rows).max())
        T = bucket_for(longest, self.buckets)  # also refuses a row beyond the largest bucket
        if self.padding == "longest":
            T = longest
        ids, maskable, attn = pad_rows([r.input_ids for r in rows], [r.prompt_len for r in rows], T,
                                       self.pad_id, self.pad_labels)
        is_forget = np.array([r.is_forget for r in rows], bool)
        alt_ids = alt_mask = alt_attn = None
        if self.has_alt:
            alts = [r.alt_input_ids if r.alt_input_ids is not None else r.input_ids for r in rows]
            alt_plens = [r.alt_prompt_len if r.alt_input_ids is not None else r.prompt_len for r in rows]
            alt_ids, alt_mask, alt_attn = pad_rows(alts, alt_plens, T, self.pad_id, self.pad_labels)
        return Batch(ids, maskable, attn, is_forget, alt_ids, alt_mask, alt_attn)
