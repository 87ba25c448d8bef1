"""Which models and rows a probe run uses: named one by one, or read off a demo output folder.

A demo run (``python -m mdu_jax.train``, ``mdu_jax.demo.pipeline``) writes ``summary.json`` whose
``models`` maps run names to checkpoint folders: ``sft`` (the model before unlearning),
``retain_twin`` (the retain-only twin) and one folder per unlearning run (``mdu_tau1``,
``npo``, ...), plus its TOFU-layout data under ``assets/data`` (``world.json`` names the splits)
and one ``eval.json`` per unlearning run whose ``settings`` hold the sampler it generated with.
``from_demo_dir`` turns that into ``ProbeTargets``: the unlearned model(s), the twin as the
reference, the SFT model, the data, the demo's sampler and its unlearning learning rate (the
relearning attack's default: the rate at which unlearning moved the weights away; on the CI
world the SFT rate, 3e-3 at a constant schedule, made the SFT model itself lose 4 of its 5
held-out facts in 10 steps: an attack that overwrites rather than recalls).
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

from mdu_jax.data.encoding import DataError

DEMO_LABELS = {"sft": "before (SFT)", "retain_twin": "retain-only twin"}


@dataclasses.dataclass
class ProbeTargets:
    """models: {column label: checkpoint folder}, in table order; the rest as ``--data-dir``,
    ``--forget-split``; ``sampler`` / ``relearn_lr``: defaults a demo folder supplies (or empty)."""

    models: dict[str, str]
    data_dir: str | None = None
    forget_split: str | None = None
    sampler: dict[str, Any] = dataclasses.field(default_factory=dict)
    relearn_lr: float | None = None


def _read_json(path: str, what: str) -> dict:
    if not os.path.isfile(path):
        raise DataError(f"{path}: no such file ({what})")
    try:
        with open(path) as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise DataError(f"{path}: not valid JSON ({e.msg})") from None


def _moved(path: str, recorded_root: str | None, folder: str) -> str:
    """`path` as recorded by the demo, re-rooted at `folder` when the output folder was moved."""
    if os.path.isdir(path) or not recorded_root:
        return path
    rel = os.path.relpath(path, recorded_root)
    return path if rel.startswith("..") else os.path.join(folder, rel)


def from_demo_dir(folder: str, *, unlearned: str | None = None) -> ProbeTargets:
    """The probe targets of a demo output folder: every unlearning run in it (or only
    `unlearned`, a run name such as ``mdu_tau1``), then the retain-only twin, then the SFT model."""
    folder = os.path.abspath(folder)
    if not os.path.isdir(folder):
        raise DataError(f"--demo-dir {folder}: no such folder")
    summary = _read_json(os.path.join(folder, "summary.json"), "a finished demo run writes it")
    recorded = summary.get("models")
    if not isinstance(recorded, dict) or not {"sft", "retain_twin"} <= set(recorded):
        raise DataError(f"{folder}/summary.json: no 'models' with 'sft' and 'retain_twin' (not a demo output folder?)")
    runs = [name for name in recorded if name not in DEMO_LABELS]
    if unlearned is not None:
        if unlearned not in runs:
            raise DataError(f"--demo-run {unlearned!r}: not a run of {folder}; its runs: {runs}")
        runs = [unlearned]
    if not runs:
        raise DataError(f"{folder}/summary.json: no unlearning run in 'models'")
    paths = {name: _moved(recorded[name], summary.get("output_dir"), folder) for name in runs + list(DEMO_LABELS)}
    models = {name: paths[name] for name in runs}
    models.update({DEMO_LABELS[name]: paths[name] for name in ("retain_twin", "sft")})
    data_dir = os.path.join(folder, "assets", "data")
    world = _read_json(os.path.join(data_dir, "world.json"), "the demo world's split names")
    eval_path = os.path.join(os.path.dirname(paths[runs[0]]), "eval.json")
    settings = _read_json(eval_path, "the demo's evaluation of the run").get("settings", {})
    sampler = {k: settings[k] for k in ("gen_length", "steps", "block_length", "algorithm") if k in settings}
    lr = summary.get("stages", {}).get("unlearn", {}).get("lr")
    return ProbeTargets(models=models, data_dir=data_dir, forget_split=world["split_names"]["forget"],
                        sampler=sampler, relearn_lr=float(lr) if lr else None)


__all__ = ["DEMO_LABELS", "ProbeTargets", "from_demo_dir"]
