"""Orbax checkpoints of a training run: the train state every N optimiser steps, the anchor once.

``<output_dir>/checkpoints/<k>/`` holds the state after optimiser step k (params, optimiser
state, the micro-step counter, RNG key data) and a JSON ``meta`` item: ``step_unit``
("optimizer"), ``optimizer_step``, ``micro_step``, ``grad_accum``, the method, the data summary
and the run config. Orbax writes each checkpoint into a temporary folder and renames it when
complete, so a run killed mid-save leaves the previous checkpoint intact. A checkpoint that
cannot be read (a truncated file after a full disk or a crashed copy) is named in one line and
moved to ``<output_dir>/damaged_checkpoints/``, and the run resumes from the newest intact one.
``<output_dir>/anchor/`` holds the frozen anchor, written once before the first step.
"""

from __future__ import annotations

import contextlib
import gc
import json
import logging
import os
import shutil
from typing import Any, Iterator

import jax
import orbax.checkpoint as ocp
from jax.experimental import multihost_utils

from mdu_jax.checkpoints.orbax_params import restore_params, save_params

log = logging.getLogger(__name__)

STEP_UNIT = "optimizer"
DAMAGED = "damaged_checkpoints"


class CheckpointDamagedError(RuntimeError):
    """No checkpoint of the run could be read; the message names each one and why."""


def checkpoint_dir(output_dir: str) -> str:
    return os.path.abspath(os.path.join(output_dir, "checkpoints"))


def committed_steps(output_dir: str) -> list[int]:
    """The folder numbers of the complete checkpoints under ``<output_dir>/checkpoints``, ascending.

    Orbax writes into ``<k>.orbax-checkpoint-tmp-*`` and renames when done, so a plain integer
    name is a committed checkpoint.
    """
    folder = checkpoint_dir(output_dir)
    if not os.path.isdir(folder):
        return []
    return sorted(int(d) for d in os.listdir(folder) if d.isdigit() and os.path.isdir(os.path.join(folder, d)))


def meta_path(output_dir: str, step: int) -> str:
    """The JSON file of checkpoint `step`'s ``meta`` item (orbax's JsonSave layout)."""
    return os.path.join(checkpoint_dir(output_dir), str(step), "meta", "metadata")


def read_meta(output_dir: str, step: int) -> dict[str, Any] | None:
    """Checkpoint `step`'s meta dict, or None when it is missing or not valid JSON."""
    try:
        with open(meta_path(output_dir, step)) as f:
            meta = json.load(f)
    except (OSError, ValueError):
        return None
    return meta if isinstance(meta, dict) else None


def make_meta(*, optimizer_step: int, grad_accum: int, method: str, data: dict, config: dict) -> dict[str, Any]:
    """The meta item saved with each checkpoint (``config``: the plain dict of the run config)."""
    return {"step_unit": STEP_UNIT, "optimizer_step": int(optimizer_step),
            "micro_step": int(optimizer_step) * int(grad_accum), "grad_accum": int(grad_accum),
            "method": method, "data": data, "config": config}


def root_cause(error: BaseException) -> str:
    """The first line of the innermost cause of `error` (tensorstore's reason, not orbax's wrapper)."""
    while error.__cause__ is not None:
        error = error.__cause__
    text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return text if len(text) <= 300 else text[:297] + "..."


class _DropUnretrievedFutures(logging.Filter):
    # Orbax reads every array concurrently; when one read fails, the others' failed futures are
    # garbage-collected unread and asyncio logs each with a traceback. The failure is reported once.
    def filter(self, record: logging.LogRecord) -> bool:
        return "exception was never retrieved" not in record.getMessage()


@contextlib.contextmanager
def _quiet_asyncio() -> Iterator[None]:
    logger = logging.getLogger("asyncio")
    flt = _DropUnretrievedFutures()
    logger.addFilter(flt)
    try:
        yield
    finally:
        gc.collect()
        logger.removeFilter(flt)


class RunCheckpointer:
    """A CheckpointManager keeping the last `keep` states, named by optimiser step; async saves when asked."""

    def __init__(self, output_dir: str, *, keep: int = 2, async_save: bool = True):
        self.output_dir = os.path.abspath(output_dir)
        self.directory = checkpoint_dir(output_dir)
        options = ocp.CheckpointManagerOptions(max_to_keep=max(1, keep), create=True,
                                               enable_async_checkpointing=async_save)
        self.manager = ocp.CheckpointManager(self.directory, options=options,
                                             item_names=("state", "meta"))

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def path(self, step: int) -> str:
        return os.path.join(self.directory, str(step))

    def save(self, step: int, state: Any, meta: dict[str, Any], *, force: bool = True) -> bool:
        return self.manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                               meta=ocp.args.JsonSave(meta)), force=force)

    def restore(self, step: int, abstract_state: Any) -> tuple[Any, dict[str, Any]]:
        """(state, meta) of `step`; `abstract_state` leaves carry the target shardings."""
        out = self.manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract_state),
                                                                 meta=ocp.args.JsonRestore()))
        return out["state"], out["meta"]

    def restore_newest_intact(self, abstract_state: Any) -> tuple[int, Any, dict[str, Any], list[int]] | None:
        """(step, state, meta, damaged steps) of the newest checkpoint that reads back, or None
        without checkpoints.

        Each newer checkpoint that fails to read is named in one warning line (with the
        underlying reason) and moved to ``<output_dir>/damaged_checkpoints/<step>``, so that later
        saves can reuse its step number. Raises CheckpointDamagedError when checkpoints exist but
        none reads.
        """
        steps = sorted(self.manager.all_steps(), reverse=True)
        if not steps:
            return None
        damaged: list[tuple[int, str]] = []
        for step in steps:
            try:
                with _quiet_asyncio():
                    state, meta = self.restore(step, abstract_state)
            except Exception as e:  # noqa: BLE001 - any read failure marks this checkpoint unusable
                damaged.append((step, root_cause(e)))
                continue
            for bad, reason in damaged:
                moved = self._set_aside(bad)
                log.warning("checkpoint %s cannot be read (%s); moved it to %s", self.path(bad), reason, moved)
            if damaged:
                if jax.process_count() > 1:
                    multihost_utils.sync_global_devices("damaged checkpoints set aside")
                self.manager.reload()
            return step, state, meta, [s for s, _ in damaged]
        listing = "; ".join(f"{self.path(s)}: {r}" for s, r in damaged)
        raise CheckpointDamagedError(
            f"no checkpoint of {self.output_dir} can be read ({listing}). Start the run over with "
            "--overwrite (run(..., overwrite=True)), which deletes them, or restore a copy of the folder")

    def _set_aside(self, step: int) -> str:
        target = os.path.join(self.output_dir, DAMAGED, str(step))
        if jax.process_index() == 0:
            os.makedirs(os.path.dirname(target), exist_ok=True)
            if os.path.exists(target):
                shutil.rmtree(target)
            os.replace(self.path(step), target)
        return target

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()


def anchor_dir(output_dir: str) -> str:
    return os.path.abspath(os.path.join(output_dir, "anchor"))


def save_anchor(output_dir: str, anchor: Any, *, replace: bool = False) -> None:
    """Writes the anchor once (atomically: a temporary name renamed when complete); `replace`
    writes it again over an existing one (a fresh start must not reuse another run's anchor)."""
    final = anchor_dir(output_dir)
    if os.path.isdir(final) and not replace:
        return
    tmp = final + ".tmp"
    if os.path.isdir(tmp):
        shutil.rmtree(tmp)
    save_params(tmp, anchor)
    if jax.process_index() == 0:
        if os.path.isdir(final):
            shutil.rmtree(final)
        os.replace(tmp, final)


def restore_anchor(output_dir: str, abstract: Any) -> Any:
    """The saved anchor; CheckpointDamagedError in one line when it cannot be read."""
    try:
        with _quiet_asyncio():
            return restore_params(anchor_dir(output_dir), abstract)
    except Exception as e:  # noqa: BLE001 - reported as one line naming the folder
        raise CheckpointDamagedError(
            f"the frozen anchor {anchor_dir(output_dir)} cannot be read ({root_cause(e)}). Start the run over "
            "with --overwrite (run(..., overwrite=True))") from None
