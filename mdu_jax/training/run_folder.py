"""An output folder belongs to one run: what it holds, whether a config may continue it, config.yaml.

A run writes ``config.yaml``, ``anchor/``, ``checkpoints/``, ``metrics.jsonl``, ``final/`` and
``run_summary.json`` into its ``output_dir`` (plus ``tensorboard/``, ``damaged_checkpoints/``,
``metrics.micro_steps.jsonl`` and ``config.before-step-<k>.yaml`` when they apply). Before a
run touches the folder, ``inspect`` compares the config that produced what is there (the newest
checkpoint's, else ``config.yaml``) with the requested one, key by key:

- every key that changes the trained weights must agree; otherwise the run is refused with the
  differing keys named, unless ``overwrite`` (delete the old run's files and start over) or
  ``resume_anyway`` (continue the old weights with the new values: ``config.yaml`` then says
  which steps ran with which values, the old config kept beside it);
- the keys of ``RESULT_NEUTRAL`` may differ (each with the reason it leaves the weights as they
  are); the folder then continues under the new values.

A finished run (``run_summary.json``) whose result keys agree is not trained again: the caller
reports where its result is. ``config.yaml`` is written atomically, only after these checks.
"""

from __future__ import annotations

import dataclasses
import glob
import json
import os
import shutil
from typing import Any

import yaml

from mdu_jax import typed_config
from mdu_jax.checkpoints.atomic_write import write_text
from mdu_jax.training.checkpointing import DAMAGED, committed_steps, read_meta
from mdu_jax.training.config import TrainConfig, to_yaml
from mdu_jax.training.legacy_checkpoints import LEGACY_METRICS, optimizer_step_of

CONFIG_FILE = "config.yaml"
SUMMARY_FILE = "run_summary.json"
# Everything a run writes into its folder; --overwrite deletes exactly these (and config history).
RUN_ENTRIES = (CONFIG_FILE, "anchor", "checkpoints", "metrics.jsonl", "final", SUMMARY_FILE, "tensorboard",
               DAMAGED, LEGACY_METRICS)
HISTORY_GLOB = "config.before-step-*.yaml"

# Config keys (a key or a whole section) that may change between invocations on one folder,
# and why the weights do not depend on them.
RESULT_NEUTRAL = {
    "output_dir": "the folder itself: a moved or renamed run folder stays valid",
    "log_every": "logging only",
    "tensorboard": "logging only",
    "export_hf": "an extra copy of the final weights",
    "checkpoint": "cadence and retention: a resumed run ends bit-identical to an uninterrupted one",
    "parallel": "device layout and step flavour: every layout computes the same numbers up to float "
                "rounding (tests/training/test_layouts.py), so a run may resume on other hardware",
    "model.remat_policy": "memory / speed only (same math)",
    "model.attention_impl": "kernel choice only (same math)",
    "model.scan_layers": "compilation only (same math)",
    "model.fuse_anchor_pass": "one layer scan for both MDU passes (same math)",
    "objective.chunk_size": "memory only (the loss summed over chunks)",
    "optim.max_update_ratio": "the divergence guard: it decides whether a run stops, not what it computes",
}


class RunFolderError(ValueError):
    """The output folder holds another run (or unreadable leftovers); the message says what to do."""


@dataclasses.dataclass
class FolderState:
    """What `inspect` found in an output folder.

    recorded: the config that produced the folder's contents (None: no run there);
    recorded_from: where it was read; differences: (dotted key, recorded value, requested value)
    for each result key that differs; latest_step: the newest checkpoint's optimiser step;
    legacy: checkpoints named by micro-step (``legacy_checkpoints``); summary: the finished
    run's ``run_summary.json``; leftovers: run entries present without any recorded config.
    """

    output_dir: str
    recorded: dict[str, Any] | None = None
    recorded_from: str | None = None
    differences: list[tuple[str, Any, Any]] = dataclasses.field(default_factory=list)
    latest_step: int | None = None
    legacy: bool = False
    summary: dict[str, Any] | None = None
    leftovers: list[str] = dataclasses.field(default_factory=list)

    @property
    def finished(self) -> bool:
        return self.summary is not None and not self.differences


def is_neutral(key: str) -> bool:
    return any(key == k or key.startswith(k + ".") for k in RESULT_NEUTRAL)


def flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    """{'optim': {'lr': 1e-5}} -> {'optim.lr': 1e-5}; lists stay values."""
    if not isinstance(data, dict) or (prefix and not data):
        return {prefix: data}
    out: dict[str, Any] = {}
    for k, v in data.items():
        out.update(flatten(v, f"{prefix}.{k}" if prefix else str(k)))
    return out


def _normalised(recorded: dict[str, Any]) -> dict[str, Any]:
    # Through the current schema when it still validates (fills keys added since with their
    # defaults); as written otherwise.
    try:
        return typed_config.to_dict(typed_config.from_dict(TrainConfig, recorded))
    except ValueError:
        return recorded


def result_differences(recorded: dict[str, Any], cfg: TrainConfig) -> list[tuple[str, Any, Any]]:
    """(key, recorded, requested) for every result-changing key whose values differ."""
    old, new = flatten(_normalised(recorded)), flatten(typed_config.to_dict(cfg))
    missing = object()
    out = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key, missing), new.get(key, missing)
        if a != b and not is_neutral(key):
            out.append((key, "(absent)" if a is missing else a, "(absent)" if b is missing else b))
    return out


def read_summary(output_dir: str) -> dict[str, Any] | None:
    try:
        with open(os.path.join(output_dir, SUMMARY_FILE)) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def write_summary(output_dir: str, summary: dict[str, Any]) -> str:
    return write_text(os.path.join(output_dir, SUMMARY_FILE), json.dumps(summary, indent=2) + "\n")


def _read_config_file(output_dir: str) -> dict[str, Any] | None:
    try:
        with open(os.path.join(output_dir, CONFIG_FILE)) as f:
            data = yaml.safe_load(f)
    except (OSError, yaml.YAMLError):
        return None
    return data if isinstance(data, dict) else None


def inspect(cfg: TrainConfig) -> FolderState:
    """Reads (never writes) what `cfg.output_dir` holds and compares it with `cfg`."""
    out = os.path.abspath(cfg.output_dir)
    state = FolderState(out)
    for step in reversed(committed_steps(out)):
        meta = read_meta(out, step)
        if meta is None:
            continue  # an unreadable meta: the restore will report this checkpoint
        state.latest_step = optimizer_step_of(out, step, meta)
        state.legacy = "optimizer_step" not in meta or int(meta["optimizer_step"]) != step
        if isinstance(meta.get("config"), dict):
            state.recorded, state.recorded_from = meta["config"], os.path.join(out, "checkpoints", str(step))
        break
    if state.recorded is None:
        recorded = _read_config_file(out)
        if recorded is not None:
            state.recorded, state.recorded_from = recorded, os.path.join(out, CONFIG_FILE)
    if state.recorded is None:
        state.leftovers = [e for e in RUN_ENTRIES if os.path.lexists(os.path.join(out, e))]
        return state
    state.differences = result_differences(state.recorded, cfg)
    state.summary = read_summary(out)
    return state


def _show(value: Any) -> str:
    return json.dumps(value) if not isinstance(value, str) else value


def describe_differences(differences: list[tuple[str, Any, Any]]) -> str:
    return "; ".join(f"{k}: {_show(a)} in the folder, {_show(b)} now" for k, a, b in differences)


def check(state: FolderState, *, overwrite: bool, resume_anyway: bool) -> None:
    """Raises RunFolderError when `state` may not be continued as asked."""
    if overwrite and resume_anyway:
        raise RunFolderError("--overwrite and --resume-anyway exclude each other: start over, or continue")
    if overwrite:
        return
    if state.leftovers:
        raise RunFolderError(
            f"output_dir {state.output_dir} holds run files ({', '.join(state.leftovers)}) but no config.yaml or "
            "checkpoint saying which run wrote them. Use another output_dir, or --overwrite to delete them")
    if state.differences and not resume_anyway:
        raise RunFolderError(
            f"output_dir {state.output_dir} holds a run with another config ({describe_differences(state.differences)};"
            f" read from {state.recorded_from}): its weights are not this config's. Use another output_dir, "
            "--overwrite to delete that run and start over, or --resume-anyway to continue its weights with "
            "the new values")


def clear(output_dir: str) -> list[str]:
    """Deletes the run entries of `output_dir` (other files stay); returns what was deleted."""
    removed = []
    paths = [os.path.join(output_dir, e) for e in RUN_ENTRIES] + glob.glob(os.path.join(output_dir, HISTORY_GLOB))
    for path in paths:
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path)
        elif os.path.lexists(path):
            os.remove(path)
        else:
            continue
        removed.append(os.path.basename(path))
    return removed


def write_config(cfg: TrainConfig, state: FolderState | None = None, resumed_step: int | None = None) -> str:
    """Writes ``config.yaml`` atomically. When `state` has differences (a --resume-anyway), the
    file starts with comments naming them and the old config is kept as
    ``config.before-step-<resumed_step>.yaml``."""
    out = os.path.abspath(cfg.output_dir)
    text = to_yaml(cfg)
    if state is not None and state.differences:
        step = int(resumed_step or 0)
        old_name = f"config.before-step-{step}.yaml"
        write_text(os.path.join(out, old_name), yaml.safe_dump(_normalised(state.recorded), sort_keys=False))
        lines = [f"# Resumed with --resume-anyway from optimiser step {step}; steps 1-{step} ran with {old_name},",
                 "# whose values differ in:"]
        lines += [f"#   {k}: {_show(a)} -> {_show(b)}" for k, a, b in state.differences]
        lines += [f"# Steps after {step} ran with the values below.", ""]
        text = "\n".join(lines) + text
    return write_text(os.path.join(out, CONFIG_FILE), text)
