"""Turning (question, answer) rows into token ids with the model's chat template.

A row becomes ``[prompt | response]`` where the prompt is the chat template of the user turn
with the generation prompt, and the response is what the full two-turn template adds after it
(the answer plus the template's tail: ``<|eot_id|>`` for LLaDA, ``<|im_end|>\\n`` for Dream).
Response positions are "maskable" (the reference's labels != -100); the prompt never is.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Iterable, Sequence

import numpy as np

log = logging.getLogger(__name__)


class DataError(ValueError):
    """Training data is missing, empty, malformed, or does not fit the configured lengths."""


@dataclasses.dataclass(frozen=True)
class Example:
    """One tokenised row: ids [n] and the length of its prompt (positions >= prompt_len are maskable)."""

    input_ids: np.ndarray
    prompt_len: int
    is_forget: bool
    alt_input_ids: np.ndarray | None = None   # the same prompt with another response (IdkPO/DPO)
    alt_prompt_len: int | None = None


def _template_ids(tokenizer, messages, add_generation_prompt: bool) -> list[int]:
    out = tokenizer.apply_chat_template(messages, tokenize=True, add_generation_prompt=add_generation_prompt)
    if isinstance(out, dict) or hasattr(out, "keys"):
        out = out["input_ids"]
    return [int(i) for i in out]


def encode_pair(tokenizer, question: str, answer: str) -> tuple[list[int], int]:
    """(ids, prompt_len) for one (question, answer) row through the chat template."""
    prompt = _template_ids(tokenizer, [{"role": "user", "content": question}], True)
    full = _template_ids(tokenizer, [{"role": "user", "content": question},
                                     {"role": "assistant", "content": answer}], False)
    if full[: len(prompt)] != prompt or len(full) <= len(prompt):
        raise DataError("the chat template's user+assistant rendering does not extend its generation prompt; "
                        "use a template that appends the assistant header only for a generation prompt "
                        "(mdu_jax.data.tokenizer.LLADA_CHAT_TEMPLATE for LLaDA)")
    return full, len(prompt)


@dataclasses.dataclass
class TruncationReport:
    """Over-long rows of one or more splits: totals, and per split (``*_by_split``)."""

    truncated: int = 0
    dropped: int = 0
    longest: int = 0
    truncated_by_split: dict[str, int] = dataclasses.field(default_factory=dict)
    dropped_by_split: dict[str, int] = dataclasses.field(default_factory=dict)


def encode_rows(tokenizer, rows: Sequence[dict], *, is_forget: bool, max_length: int,
                truncation: str = "error", split: str = "data", alt_answers: Sequence[str] | None = None,
                report: TruncationReport | None = None) -> list[Example]:
    """Tokenises rows {question, answer}; over-long rows are an error, dropped, or cut (reported).

    `alt_answers` (one per row) builds the second response of preference objectives. `report`
    (shared across splits) gains this split's counts; the warning states this split's alone.
    """
    report = report if report is not None else TruncationReport()
    out = []
    truncated = dropped = longest = 0
    for i, row in enumerate(rows):
        for key in ("question", "answer"):
            if not isinstance(row.get(key), str) or not row[key].strip():
                raise DataError(f"{split} row {i}: missing or empty {key!r}")
        ids, plen = encode_pair(tokenizer, row["question"], row["answer"])
        alt = alt_plen = None
        if alt_answers is not None:
            alt, alt_plen = encode_pair(tokenizer, row["question"], alt_answers[i])
        length = max(len(ids), len(alt) if alt is not None else 0)
        longest = max(longest, length)
        if length > max_length:
            if truncation == "error":
                raise DataError(f"{split} row {i}: {length} tokens exceed data.max_length={max_length} "
                                "(set data.truncation=drop or right to proceed)")
            if truncation == "drop" or plen >= max_length:
                dropped += 1
                continue
            truncated += 1
            ids = ids[:max_length]
            alt = alt[:max_length] if alt is not None else None
        out.append(Example(np.asarray(ids, np.int32), plen, is_forget,
                           None if alt is None else np.asarray(alt, np.int32), alt_plen))
    report.truncated += truncated
    report.dropped += dropped
    report.longest = max(report.longest, longest)
    report.truncated_by_split[split] = report.truncated_by_split.get(split, 0) + truncated
    report.dropped_by_split[split] = report.dropped_by_split.get(split, 0) + dropped
    if truncated or dropped:
        log.warning("%s: %d row(s) truncated and %d dropped at max_length=%d (longest: %d tokens)",
                    split, truncated, dropped, max_length, longest)
    return out


def lengths(examples: Iterable[Example]) -> np.ndarray:
    return np.array([max(len(e.input_ids), len(e.alt_input_ids) if e.alt_input_ids is not None else 0)
                     for e in examples], np.int64)
