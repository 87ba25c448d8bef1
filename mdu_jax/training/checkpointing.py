"""Orbax checkpoints of a training run: the train state every N steps, the anchor once.

``<output_dir>/checkpoints/<step>/`` holds the state (params, optimiser state, micro-step,
RNG key data) and a JSON with the run config; orbax writes each into a temporary folder and
renames it when complete, so a run killed mid-save leaves the previous checkpoint intact.
``<output_dir>/anchor/`` holds the frozen anchor, written once before the first step.
"""

from __future__ import annotations

import os
from typing import Any

import shutil

import jax
import orbax.checkpoint as ocp

from mdu_jax.checkpoints.orbax_params import restore_params, save_params


class RunCheckpointer:
    """A CheckpointManager keeping the last `keep` states; saves are async when asked."""

    def __init__(self, output_dir: str, *, keep: int = 2, async_save: bool = True):
        self.directory = os.path.abspath(os.path.join(output_dir, "checkpoints"))
        options = ocp.CheckpointManagerOptions(max_to_keep=max(1, keep), create=True,
                                               enable_async_checkpointing=async_save)
        self.manager = ocp.CheckpointManager(self.directory, options=options,
                                             item_names=("state", "meta"))

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def save(self, step: int, state: Any, meta: dict[str, Any], *, force: bool = True) -> bool:
        return self.manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                               meta=ocp.args.JsonSave(meta)), force=force)

    def restore(self, step: int, abstract_state: Any) -> tuple[Any, dict[str, Any]]:
        """(state, meta) of `step`; `abstract_state` leaves carry the target shardings."""
        out = self.manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract_state),
                                                                 meta=ocp.args.JsonRestore()))
        return out["state"], out["meta"]

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()


def anchor_dir(output_dir: str) -> str:
    return os.path.abspath(os.path.join(output_dir, "anchor"))


def save_anchor(output_dir: str, anchor: Any) -> None:
    """Writes the anchor once (atomically: a temporary name renamed when complete)."""
    final = anchor_dir(output_dir)
    if os.path.isdir(final):
        return
    tmp = final + ".tmp"
    if os.path.isdir(tmp):
        shutil.rmtree(tmp)
    save_params(tmp, anchor)
    if jax.process_index() == 0:
        os.replace(tmp, final)


def restore_anchor(output_dir: str, abstract: Any) -> Any:
    return restore_params(anchor_dir(output_dir), abstract)
