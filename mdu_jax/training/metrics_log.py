"""Run metrics: JSONL always, TensorBoard when tensorboardX is installed; process 0 only."""

from __future__ import annotations

import json
import logging
import os
import time
from typing import Any

import jax

try:  # optional: TensorBoard scalars when tensorboardX is installed (the `tensorboard` extra)
    from tensorboardX import SummaryWriter
except ImportError:
    SummaryWriter = None

log = logging.getLogger(__name__)


class MetricsWriter:
    """Appends one JSON object per logged step to ``metrics.jsonl`` (and TensorBoard scalars)."""

    def __init__(self, directory: str, tensorboard: bool = True):
        self.active = jax.process_index() == 0
        self.path = os.path.join(directory, "metrics.jsonl")
        self._tb = None
        if not self.active:
            return
        os.makedirs(directory, exist_ok=True)
        self._f = open(self.path, "a", buffering=1)
        if tensorboard and SummaryWriter is not None:
            self._tb = SummaryWriter(os.path.join(directory, "tensorboard"))

    def write(self, step: int, values: dict[str, Any]) -> None:
        if not self.active:
            return
        row = {"step": int(step), "time": time.time(), **{k: _plain(v) for k, v in values.items()}}
        self._f.write(json.dumps(row) + "\n")
        if self._tb is not None:
            for k, v in row.items():
                if isinstance(v, (int, float)) and k not in ("step", "time"):
                    self._tb.add_scalar(k, v, step)

    def close(self) -> None:
        if self.active:
            self._f.close()
            if self._tb is not None:
                self._tb.close()


def _plain(v):
    try:
        return float(v)
    except (TypeError, ValueError):
        return v


def read_metrics(path: str) -> list[dict[str, Any]]:
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]
