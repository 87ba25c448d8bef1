"""Run folders written before checkpoints were named by optimiser step (mdu-jax up to commit 541a937).

Those folders name each checkpoint ``checkpoints/<micro-step>/`` (micro-steps = optimiser steps
x ``optim.grad_accum``), their checkpoint meta has ``micro_step`` but no ``optimizer_step``, and
``metrics.jsonl`` counts ``step`` in micro-steps. ``convert`` brings such a folder to the current
layout so the run resumes where it stopped: each checkpoint is renamed to its optimiser step
and its meta gains the current fields; ``metrics.jsonl`` keeps the rows logged at the end of an
optimiser step, renumbered, with ``micro_step`` beside them (the original file is kept as
``metrics.micro_steps.jsonl``). Every part is idempotent, so an interrupted conversion finishes
on the next start. A checkpoint saved in the middle of an optimiser step has no optimiser-step
name and is refused with a message saying what to do.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any

from mdu_jax.checkpoints.atomic_write import write_text
from mdu_jax.training.checkpointing import STEP_UNIT, checkpoint_dir, committed_steps, meta_path, read_meta

log = logging.getLogger(__name__)

LEGACY_METRICS = "metrics.micro_steps.jsonl"


class LegacyCheckpointError(ValueError):
    """An old checkpoint that cannot be expressed in optimiser steps."""


def _grad_accum(meta: dict[str, Any]) -> int:
    optim = (meta.get("config") or {}).get("optim") or {}
    return int(meta.get("grad_accum") or optim.get("grad_accum") or 1)


def _target(output_dir: str, folder: int, meta: dict[str, Any]) -> int:
    if "optimizer_step" in meta:
        return int(meta["optimizer_step"])
    micro, accum = int(meta.get("micro_step", folder)), _grad_accum(meta)
    if micro % accum:
        raise LegacyCheckpointError(
            f"{os.path.join(checkpoint_dir(output_dir), str(folder))} was saved by an earlier mdu-jax in the middle "
            f"of an optimiser step (micro-step {micro}, optim.grad_accum={accum}), so it has no optimiser-step "
            "name. Move it out of checkpoints/ to resume from the checkpoint before it, or start over with "
            "--overwrite")
    return micro // accum


def pending(output_dir: str) -> list[int]:
    """Checkpoint folders still named by micro-step (their meta has no ``optimizer_step`` or another number)."""
    out = []
    for folder in committed_steps(output_dir):
        meta = read_meta(output_dir, folder)
        if meta is not None and ("optimizer_step" not in meta or int(meta["optimizer_step"]) != folder):
            out.append(folder)
    return out


def optimizer_step_of(output_dir: str, folder: int, meta: dict[str, Any]) -> int:
    """The optimiser step checkpoint `folder` holds, whichever layout wrote it."""
    return _target(output_dir, folder, meta)


def convert(output_dir: str) -> list[tuple[int, int]]:
    """Renames micro-step checkpoint folders to optimiser steps and rewrites metrics.jsonl;
    returns the (old, new) folder numbers. Run on one process only."""
    renamed = []
    # Ascending: a target k = m / grad_accum <= m can only collide with an older legacy folder,
    # which has already moved to its own smaller number.
    for folder in pending(output_dir):
        meta = read_meta(output_dir, folder)
        target = _target(output_dir, folder, meta)
        accum = _grad_accum(meta)
        if "optimizer_step" not in meta:
            meta = {**meta, "step_unit": STEP_UNIT, "optimizer_step": target, "micro_step": target * accum,
                    "grad_accum": accum}
            write_text(meta_path(output_dir, folder), json.dumps(meta))
        if folder != target:
            dst = os.path.join(checkpoint_dir(output_dir), str(target))
            if os.path.exists(dst):
                raise LegacyCheckpointError(f"cannot rename {folder} to {dst}: it exists")
            os.rename(os.path.join(checkpoint_dir(output_dir), str(folder)), dst)
        renamed.append((folder, target))
    if renamed:
        _convert_metrics(output_dir, _grad_accum(read_meta(output_dir, renamed[-1][1]) or {}))
    return renamed


def _convert_metrics(output_dir: str, accum: int) -> None:
    path = os.path.join(output_dir, "metrics.jsonl")
    if not os.path.isfile(path):
        return
    with open(path) as f:
        lines = [line for line in f if line.strip()]
    rows = [json.loads(line) for line in lines]
    if all("micro_step" in r for r in rows):
        return
    backup = os.path.join(output_dir, LEGACY_METRICS)
    if not os.path.exists(backup):
        write_text(backup, "".join(lines))
    out = []
    for r in rows:
        if "micro_step" in r:
            out.append(r)
        elif int(r["step"]) % accum == 0:
            out.append({**r, "step": int(r["step"]) // accum, "micro_step": int(r["step"])})
    write_text(path, "".join(json.dumps(r) + "\n" for r in out))
    log.info("metrics.jsonl renumbered in optimiser steps (the micro-step original: %s)", backup)
