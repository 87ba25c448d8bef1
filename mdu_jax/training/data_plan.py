"""From a run config to tokenised forget / retain examples and a resumable batch plan."""

from __future__ import annotations

import json
import logging
from typing import Any

import numpy as np

from mdu_jax.data import sources
from mdu_jax.data.batching import BatchPlan
from mdu_jax.data.encoding import DataError, TruncationReport, encode_rows
from mdu_jax.training.config import TrainConfig

log = logging.getLogger(__name__)

# RWKU ships no QA training pairs for its targets; the forget corpus is passages about the target.
# Each passage becomes a response to this prompt (the MDU scripts convert RWKU to TOFU-style rows).
RWKU_PROMPT = "Please tell me about {subject}."


def _rows_from(source: str, split: str | None, cfg: TrainConfig) -> list[dict[str, Any]]:
    d = cfg.data
    if split is None:
        return []
    if d.benchmark == "tofu":
        rows = sources.load_tofu(split, data_dir=d.data_dir)
    elif d.benchmark == "rwku":
        if source == "retain":
            rows = sources.load_rwku(split, subject=d.rwku_subject, data_dir=d.data_dir)
        else:
            passages = sources.load_rwku(split, subject=d.rwku_subject, data_dir=d.data_dir)
            rows = [{"question": RWKU_PROMPT.format(subject=p.get("subject", d.rwku_subject)),
                     "answer": p["text"]} for p in passages]
        rows = [r for r in rows if "question" in r and "answer" in r] if source == "retain" else rows
    else:
        files = d.forget_files if source == "forget" else d.retain_files
        rows = []
        for path in files:
            rows.extend(sources.load_jsonl_or_json(path))
    if d.max_examples is not None:
        rows = rows[: d.max_examples]
    return rows


def load_rows(cfg: TrainConfig) -> tuple[list[dict], list[dict]]:
    """(forget rows, retain rows) of {question, answer}; an empty forget set is an error."""
    d = cfg.data
    forget = _rows_from("forget", d.forget_split if d.benchmark != "files" else "files", cfg)
    if not forget:
        raise DataError(f"the forget set is empty (data.benchmark={d.benchmark}, "
                        f"data.forget_split={d.forget_split}, data.forget_files={d.forget_files})")
    retain_split = d.retain_split if d.benchmark != "files" else ("files" if d.retain_files else None)
    retain = _rows_from("retain", retain_split, cfg)
    return forget, retain


def load_idk_answers(path: str | None, n: int, seed: int) -> list[str]:
    """`n` "I don't know" answers drawn (with a fixed seed) from a list file."""
    if path is None:
        raise DataError("data.idk_file: objective idkpo/dpo needs a file of 'I don't know' answers "
                        "(TOFU ships idontknow.json)")
    try:
        with open(path) as f:
            text = f.read()
    except OSError as e:
        raise DataError(f"data.idk_file: cannot read {path} ({e})") from e
    try:
        answers = json.loads(text)
    except json.JSONDecodeError:
        answers = [line.strip() for line in text.splitlines() if line.strip()]
    if isinstance(answers, dict):
        answers = list(answers.values())
    answers = [a for a in answers if isinstance(a, str) and a.strip()]
    if not answers:
        raise DataError(f"data.idk_file: {path} holds no answers")
    rng = np.random.default_rng(seed)
    return [answers[i] for i in rng.integers(0, len(answers), size=n)]


def build_plan(cfg: TrainConfig, tokenizer, pad_id: int) -> tuple[BatchPlan, dict[str, Any]]:
    """The batch plan of the run and a summary (row counts kept, rows truncated / dropped in total
    and per split, the longest row in tokens, micro-batches per epoch)."""
    forget_rows, retain_rows = load_rows(cfg)
    d = cfg.data
    needs_idk = cfg.objective.method in ("idkpo", "dpo")
    idk = load_idk_answers(d.idk_file, len(forget_rows), cfg.seed) if needs_idk else None
    report = TruncationReport()
    forget = encode_rows(tokenizer, forget_rows, is_forget=True, max_length=d.max_length,
                         truncation=d.truncation, split="forget", alt_answers=idk, report=report)
    retain = encode_rows(tokenizer, retain_rows, is_forget=False, max_length=d.max_length,
                         truncation=d.truncation, split="retain", report=report)
    if not forget:
        raise DataError("the forget set is empty after truncation (every row was dropped)")
    plan = BatchPlan(forget, retain, batch_size=cfg.batch_size, seed=cfg.seed, buckets=d.buckets, pad_id=pad_id,
                     mixing=d.mixing, forget_batch_size=cfg.forget_batch_size, pad_labels=d.pad_labels,
                     padding=d.padding, length_grouping=d.length_grouping, group_batches=cfg.optim.grad_accum)
    summary = {"forget_rows": len(forget), "retain_rows": len(retain), "truncated": report.truncated,
               "dropped": report.dropped, "truncated_by_split": report.truncated_by_split,
               "dropped_by_split": report.dropped_by_split, "longest": report.longest,
               "steps_per_epoch": plan.steps_per_epoch}
    return plan, summary
