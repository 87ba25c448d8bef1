"""Prompts in, canvases out; tokens in, text out.

A canvas is the [B, T] sequence the model sees while denoising: prompt tokens, ``gen_length``
generation slots (mask tokens at the start) and padding. Its shapes are bucketed (the canvas
length, prompt plus slots, to a few sizes; the rows to ``batch_bucket``) so that a compiled
sampler serves many batches; ``plan_batches`` decides which prompts share a batch.

Layouts (reference-mdlm 4.2, 4.3):

- LLaDA, dllm's layout: each row's prompt is left-aligned, its generation slots follow it
  directly, and the tail is right-padded with EOS (attention 0). LLaDA's positions are always
  0..T-1, so a row gives the same result alone or in a batch.
- Dream, ``diffusion_generate``'s layout: prompts are left-padded (attention 0, position 1),
  the generation slots are the last ``gen_length`` positions, and positions are
  ``cumsum(attention) - 1``.
"""

from __future__ import annotations

import dataclasses
from typing import Mapping, Sequence

import numpy as np

from mdu_jax.models.config import ModelConfig


def default_buckets(limit: int = 1 << 20) -> tuple[int, ...]:
    """16, 24, 32, 48, 64, 96, ...: powers of two and their 1.5x, so padding stays under 50%."""
    out, p = [], 16
    while p <= limit:
        out += [p, p * 3 // 2]
        p *= 2
    return tuple(out)


def bucket_length(n: int, buckets: Sequence[int] | None = None) -> int:
    """The smallest bucket >= n (buckets: increasing sizes; default ``default_buckets()``)."""
    buckets = default_buckets() if buckets is None else tuple(buckets)
    for b in buckets:
        if b >= n:
            return int(b)
    raise ValueError(f"length {n} exceeds the largest bucket {buckets[-1]}; pass larger buckets")


def _row_ladder():
    """1, 2, 3, 4, 6, 8, 12, 16, ...: powers of two and their 1.5x."""
    yield 1
    p = 2
    while True:
        yield p
        yield p * 3 // 2
        p *= 2


def batch_bucket(n: int, batch_size: int) -> int:
    """Rows of a padded batch of n rows: the smallest of 1, 2, 3, 4, 6, 8, 12, 16, ... that holds
    n (padding rows stay under a third), at most ``batch_size``."""
    return min(int(batch_size), next(r for r in _row_ladder() if r >= n))


# A batch never holds prompts whose canvases fall in buckets this many times apart: the short
# ones would pay for the long one's attention (quadratic in the length) at every step. Closer
# buckets share a batch (and a compiled program) rather than compile one more.
SPLIT_RATIO = 2


def shared_buckets(lengths: Sequence[int]) -> dict[int, int]:
    """{bucket length: the length its program uses}: the distinct ``lengths`` sorted, grouped as
    ``plan_batches`` groups prompts (a group ends before the first length ``SPLIT_RATIO`` or more
    times its shortest), each group padded to its longest. One program per group instead of
    one per bucket, for scorers whose passes are independent of the padding (masked out)."""
    out: dict[int, int] = {}
    group: list[int] = []
    for n in sorted(set(int(x) for x in lengths)) + [None]:
        if group and (n is None or n >= SPLIT_RATIO * group[0]):
            out.update({g: group[-1] for g in group})
            group = []
        if n is not None:
            group.append(n)
    return out


@dataclasses.dataclass(frozen=True)
class BatchPlan:
    """One batch of ``generate``: ``indices`` (positions in the caller's prompt list, shortest
    first), padded to ``rows`` rows and a canvas of ``length`` tokens (prompt + slots + padding)."""

    indices: tuple[int, ...]
    rows: int
    length: int


def plan_batches(prompt_lengths: Sequence[int], gen_length: int, batch_size: int,
                 buckets: Sequence[int] | None = None) -> list[BatchPlan]:
    """How ``generate`` batches prompts of these lengths: sorted by length (stable), at most
    ``batch_size`` per batch, a new batch also when a prompt's canvas bucket is ``SPLIT_RATIO``
    or more times the bucket of the batch's shortest prompt. Each batch is padded to the canvas
    bucket of its longest prompt (``bucket_length(len + gen_length)``) and to
    ``batch_bucket`` rows."""
    if batch_size < 1:
        raise ValueError(f"batch_size: expected >= 1, got {batch_size!r}")
    order = sorted(range(len(prompt_lengths)), key=lambda i: prompt_lengths[i])
    groups: list[list[int]] = []
    for i in order:
        length = bucket_length(prompt_lengths[i] + gen_length, buckets)
        if (not groups or len(groups[-1]) == batch_size
                or length >= SPLIT_RATIO * bucket_length(prompt_lengths[groups[-1][0]] + gen_length, buckets)):
            groups.append([])
        groups[-1].append(i)
    return [BatchPlan(tuple(g), batch_bucket(len(g), batch_size),
                      bucket_length(prompt_lengths[g[-1]] + gen_length, buckets)) for g in groups]


def _id_array(value, where: str) -> np.ndarray:
    """`value` (a list, numpy / jax / torch array) as a numpy array of integer ids."""
    try:
        ids = np.asarray(value)
    except (TypeError, ValueError) as e:
        raise TypeError(f"{where}: expected token ids (a list or an array of integers), got "
                        f"{type(value).__name__} ({e})") from None
    if ids.dtype == object:
        raise TypeError(f"{where}: expected token ids (integers), got a ragged or mixed {type(value).__name__}")
    if ids.size and not np.issubdtype(ids.dtype, np.integer):
        raise TypeError(f"{where}: expected integer token ids, got dtype {ids.dtype}")
    return ids


def _is_id(x) -> bool:
    return isinstance(x, (int, np.integer)) and not isinstance(x, bool)


def _from_encoding(encoding: Mapping) -> list[list[int]]:
    """Rows of a tokenizer output (``BatchEncoding`` or a dict with ``input_ids`` and optionally
    ``attention_mask``): one row per sequence, padding (attention 0, left or right) removed."""
    if "input_ids" not in encoding:
        raise TypeError(f"prompts: a mapping must hold 'input_ids' (a tokenizer's output); got keys {sorted(encoding)}")
    ids, mask = encoding["input_ids"], encoding.get("attention_mask")
    single = _is_id(ids[0]) if isinstance(ids, Sequence) and len(ids) else np.ndim(ids) == 1
    rows = [ids] if single else list(ids)
    masks = None if mask is None else ([mask] if single else list(mask))
    out = []
    for i, row in enumerate(rows):
        r = _id_array(row, f"prompts['input_ids'][{i}]").reshape(-1)
        if masks is not None:
            m = np.asarray(masks[i]).reshape(-1)
            if m.shape != r.shape:
                raise ValueError(f"prompts['attention_mask'][{i}]: {m.shape[0]} entries for {r.shape[0]} token ids")
            r = r[m.astype(bool)]
        out.append([int(t) for t in r])
    return out


def encode_prompts(prompts, tokenizer=None) -> list[list[int]]:
    """Token-id lists from what users pass as prompts.

    Accepted: a string or a list of strings (encoded with `tokenizer`, without adding special
    tokens: a chat template already rendered BOS and headers); one token-id list or a list of
    them; a 1-D (one prompt) or 2-D (one per row) numpy / jax / torch array; a tokenizer output
    (``BatchEncoding`` from ``tokenizer(...)`` or ``apply_chat_template(..., return_dict=True)``,
    or a dict with ``input_ids``), whose ``attention_mask`` removes padding. Anything else is a
    TypeError naming what was given.
    """
    if isinstance(prompts, Mapping):
        return _from_encoding(prompts)
    if isinstance(prompts, (str, bytes)):
        prompts = [prompts]
    elif not isinstance(prompts, Sequence):
        if not hasattr(prompts, "__array__") and not hasattr(prompts, "shape"):
            raise TypeError(f"prompts: expected a string, a list of strings or token-id lists, an array of ids, or "
                            f"a tokenizer's BatchEncoding; got {type(prompts).__name__}")
        ids = _id_array(prompts, "prompts")
        if ids.ndim not in (1, 2):
            raise TypeError(f"prompts: expected a 1-D (one prompt) or 2-D (one per row) array, got shape {ids.shape}")
        prompts = [ids] if ids.ndim == 1 else list(ids)
    elif len(prompts) and all(_is_id(t) for t in prompts):
        prompts = [list(prompts)]  # one prompt's token ids
    out = []
    for i, p in enumerate(prompts):
        if isinstance(p, bytes):
            raise TypeError(f"prompts[{i}]: bytes; pass a str")
        if isinstance(p, str):
            if tokenizer is None:
                raise ValueError(f"prompts[{i}] is a string: pass tokenizer= or token ids")
            p = tokenizer(p, add_special_tokens=False)["input_ids"]
        elif _is_id(p):
            raise TypeError(f"prompts[{i}]: a single id among lists; pass one list of ids or a list of lists")
        ids = _id_array(p, f"prompts[{i}]")
        if ids.ndim > 1:
            raise TypeError(f"prompts[{i}]: expected a 1-D list of token ids, got shape {ids.shape}")
        out.append([int(t) for t in ids.reshape(-1)])
    return out


def check_prompts(cfg: ModelConfig, prompts: list[list[int]]) -> None:
    """Raises if a prompt holds an id outside the vocabulary or the mask token, or (Dream) is
    empty: Dream predicts position i from position i-1, so the first token must be given."""
    for i, p in enumerate(prompts):
        if cfg.mask_token_id in p:
            raise ValueError(f"prompts[{i}] contains the mask token id {cfg.mask_token_id}; the "
                             "samplers only fill the generation slots")
        bad = [t for t in p if not 0 <= t < cfg.vocab_size]
        if bad:
            raise ValueError(f"prompts[{i}]: token id {bad[0]} outside [0, vocab_size={cfg.vocab_size})")
        if cfg.family == "dream" and not p:
            raise ValueError(f"prompts[{i}] is empty: Dream needs at least one prompt token (e.g. BOS)")


@dataclasses.dataclass(frozen=True)
class Canvas:
    """Host arrays of one padded batch (numpy).

    input_ids int32 [B, T] (generation slots hold the mask id); uncond_ids int32 [B, T] (the same
    with every prompt token replaced by the mask id, for classifier-free guidance);
    attention_mask int32 [B, T]; position_ids int32 [B, T]; gen_index int32 [B, G] (canvas
    position of each generation slot); row_ids int32 [B] (the prompt's index in the caller's
    list, which seeds its random stream); valid bool [B] (False on filler rows).
    """

    input_ids: np.ndarray
    uncond_ids: np.ndarray
    attention_mask: np.ndarray
    position_ids: np.ndarray
    gen_index: np.ndarray
    row_ids: np.ndarray
    valid: np.ndarray


def build_canvas(cfg: ModelConfig, prompts: list[list[int]], row_ids: Sequence[int], gen_length: int,
                 length: int, batch_rows: int) -> Canvas:
    """Lays out ``prompts`` (at most ``batch_rows``, each at most ``length - gen_length`` long) on
    canvases of ``length`` tokens in the family's layout; filler rows repeat the first prompt and
    are marked invalid."""
    n = len(prompts)
    if not 0 < n <= batch_rows:
        raise ValueError(f"build_canvas: {n} prompts for {batch_rows} rows")
    T, G = int(length), int(gen_length)
    P = T - G
    rows = list(prompts) + [prompts[0]] * (batch_rows - n)
    ids = np.full((batch_rows, T), cfg.pad_token_id, dtype=np.int32)
    prompt_mask = np.zeros((batch_rows, T), dtype=bool)
    attn = np.zeros((batch_rows, T), dtype=np.int32)
    gen_index = np.zeros((batch_rows, G), dtype=np.int32)
    for r, p in enumerate(rows):
        if len(p) > P:
            raise ValueError(f"prompt of length {len(p)} and {G} slots exceed the canvas of {T}")
        lo = 0 if cfg.family == "llada" else P - len(p)  # first prompt position
        first_gen = lo + len(p)
        ids[r, lo:first_gen] = p
        ids[r, first_gen:first_gen + G] = cfg.mask_token_id
        prompt_mask[r, lo:first_gen] = True
        attn[r, lo:first_gen + G] = 1
        gen_index[r] = first_gen + np.arange(G)
    if cfg.family == "llada":
        # dllm pads the tail with EOS; it is invisible (attention 0) either way.
        ids = np.where((attn == 0), cfg.eos_token_id, ids).astype(np.int32)
        positions = np.broadcast_to(np.arange(T, dtype=np.int32), (batch_rows, T)).copy()
    else:
        positions = (np.cumsum(attn, axis=1) - 1).astype(np.int32)
        positions[attn == 0] = 1  # Dream's convention for pad positions
    uncond = np.where(prompt_mask, cfg.mask_token_id, ids).astype(np.int32)
    row_ids = np.asarray(list(row_ids) + [row_ids[0]] * (batch_rows - n), dtype=np.int32)
    valid = np.arange(batch_rows) < n
    return Canvas(ids, uncond, attn, positions, gen_index, row_ids, valid)


def trim_at_stop(tokens: Sequence[int], stop_ids: Sequence[int]) -> list[int]:
    """The tokens before the first stop id (the stop id itself removed)."""
    stop = set(int(s) for s in stop_ids)
    out = []
    for t in tokens:
        if int(t) in stop:
            break
        out.append(int(t))
    return out


def decode(tokenizer, tokens: np.ndarray, stop_ids: Sequence[int], skip_special_tokens: bool = True) -> list[str]:
    """Text of each row of ``tokens`` [N, G], cut at the first stop id, special tokens skipped."""
    return [tokenizer.decode(trim_at_stop(row, stop_ids), skip_special_tokens=skip_special_tokens)
            for row in np.asarray(tokens)]


def pack_rows(sequences: Sequence[Sequence[int]], rows: int, length: int, pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    """(ids, attention_mask), both int32 [rows, length]: ``sequences[r]`` left-aligned in row r,
    `pad_id` and mask 0 after it. Rows past ``len(sequences)`` repeat ``sequences[0]``, because an
    all-padding Dream row would mask every query; callers read only the first ``len(sequences)``."""
    ids = np.full((rows, length), pad_id, dtype=np.int32)
    mask = np.zeros((rows, length), dtype=np.int32)
    for r in range(rows):
        seq = sequences[r] if r < len(sequences) else sequences[0]
        ids[r, :len(seq)] = seq
        mask[r, :len(seq)] = 1
    return ids, mask
