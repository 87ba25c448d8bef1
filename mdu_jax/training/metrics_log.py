"""Run metrics: JSONL always, TensorBoard when tensorboardX is installed; process 0 only.

One row per logged optimiser step: ``step`` (optimiser steps, the unit of ``max_steps``,
checkpoint folders and the progress bar), ``micro_step`` (``step`` x ``optim.grad_accum``), and
the step metrics averaged over the micro-steps since the previous row (``tokens``: their sum;
``update_ratio``: their maximum). A resumed run first drops the rows after the step it resumes
from, so every step appears once.
"""

from __future__ import annotations

import json
import logging
import os
import time
from typing import Any

import jax

from mdu_jax.checkpoints.atomic_write import write_text


def summary_writer_class():
    """tensorboardX's ``SummaryWriter``, or None when that optional package (the `tensorboard`
    extra) is not installed. Imported when a run first writes metrics, not with this module:
    tensorboardX imports torch when torch is installed, about 4 s of every command's start-up."""
    try:
        from tensorboardX import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter

log = logging.getLogger(__name__)

METRICS_FILE = "metrics.jsonl"
# Step metrics that are not averaged over a logging window: flags, and the ones summed or maxed.
_NOT_AVERAGED = ("finite", "applied", "tokens", "update_ratio")


class MetricsWindow:
    """Accumulates per-micro-step metrics (host floats) until the next logged optimiser step."""

    def __init__(self):
        self.reset()

    def reset(self) -> None:
        self._sums: dict[str, float] = {}
        self._count = 0
        self.tokens = 0.0
        self.update_ratio = 0.0

    def add(self, metrics: dict[str, Any]) -> None:
        self._count += 1
        self.tokens += float(metrics.get("tokens", 0.0))
        self.update_ratio = max(self.update_ratio, float(metrics.get("update_ratio", 0.0)))
        for k, v in metrics.items():
            if k not in _NOT_AVERAGED:
                self._sums[k] = self._sums.get(k, 0.0) + float(v)

    def row(self) -> dict[str, float]:
        """The window's means (and summed tokens, max update ratio); resets the window."""
        out = {k: v / max(self._count, 1) for k, v in sorted(self._sums.items())}
        out["tokens"] = self.tokens
        out["update_ratio"] = self.update_ratio
        self.reset()
        return out


def truncate_metrics(directory: str, last_step: int) -> int:
    """Drops the rows of ``metrics.jsonl`` whose step is after `last_step` (an atomic rewrite);
    returns how many were dropped. Rows of a run that was stopped after its last checkpoint
    would otherwise appear twice once it resumes."""
    path = os.path.join(directory, METRICS_FILE)
    if not os.path.isfile(path):
        return 0
    rows = read_metrics(path)
    keep = [r for r in rows if int(r.get("step", 0)) <= last_step]
    if len(keep) != len(rows):
        write_text(path, "".join(json.dumps(r) + "\n" for r in keep))
    return len(rows) - len(keep)


class MetricsWriter:
    """Appends one JSON object per logged step to ``metrics.jsonl`` (and TensorBoard scalars).

    `resume_step`: the optimiser step the run continues from; later rows on disk are dropped
    (and TensorBoard events from later steps purged).
    """

    def __init__(self, directory: str, tensorboard: bool = True, resume_step: int = 0):
        self.active = jax.process_index() == 0
        self.path = os.path.join(directory, METRICS_FILE)
        self._tb = None
        if not self.active:
            return
        os.makedirs(directory, exist_ok=True)
        dropped = truncate_metrics(directory, resume_step)
        if dropped:
            log.info("metrics.jsonl: dropped %d row(s) logged after optimiser step %d, which is rerun", dropped,
                     resume_step)
        self._f = open(self.path, "a", buffering=1)
        writer_class = summary_writer_class() if tensorboard else None
        if writer_class is not None:
            self._tb = writer_class(os.path.join(directory, "tensorboard"), purge_step=resume_step + 1)

    def write(self, step: int, values: dict[str, Any]) -> None:
        if not self.active:
            return
        row = {"step": int(step), "time": time.time(), **{k: _plain(v) for k, v in values.items()}}
        self._f.write(json.dumps(row) + "\n")
        if self._tb is not None:
            for k, v in row.items():
                if isinstance(v, (int, float)) and k not in ("step", "time", "micro_step"):
                    self._tb.add_scalar(k, v, step)

    def close(self) -> None:
        if self.active:
            self._f.close()
            if self._tb is not None:
                self._tb.close()


def _plain(v):
    if isinstance(v, int):
        return v
    try:
        return float(v)
    except (TypeError, ValueError):
        return v


def read_metrics(path: str) -> list[dict[str, Any]]:
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]
