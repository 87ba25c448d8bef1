"""Run-folder helpers for the tests of steps, resumes and damaged or old checkpoints."""

from __future__ import annotations

import json
import logging
import os

import numpy as np
import orbax.checkpoint as ocp
import yaml

from mdu_jax.checkpoints.safetensors_io import CheckpointReader
from tests.training.helpers import setup_run

ONE_DEVICE = {"mesh": {"data": 1, "fsdp": 1, "tensor": 1}, "num_devices": 1}


def one_device_config(root, **changes) -> dict:
    """``setup_run``'s base config on one device (fewer compilations), with `changes` on top."""
    base = setup_run(root)
    base["parallel"] = dict(ONE_DEVICE)
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            base[key] = {**base[key], **value}
        else:
            base[key] = value
    return base


def checkpoint_folders(run_dir) -> list[int]:
    folder = os.path.join(run_dir, "checkpoints")
    return sorted(int(d) for d in os.listdir(folder) if d.isdigit()) if os.path.isdir(folder) else []


def metrics_rows(run_dir) -> list[dict]:
    path = os.path.join(run_dir, "metrics.jsonl")
    if not os.path.isfile(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def final_weights(run_dir) -> dict[str, np.ndarray]:
    reader = CheckpointReader(os.path.join(run_dir, "final"))
    return {name: np.asarray(reader.get(name)) for name in reader.names()}


def checkpoint_params(run_dir, step: int) -> dict:
    """The params saved in checkpoint `step` (host arrays, no target structure needed)."""
    state = ocp.StandardCheckpointer().restore(os.path.join(os.path.abspath(run_dir), "checkpoints", str(step),
                                                            "state"))
    return state["params"]


def damage(run_dir, step: int) -> str:
    """Truncates the largest data file of checkpoint `step` to 1000 bytes (a full disk or a crashed
    copy leaves such files); returns its path."""
    folder = os.path.join(run_dir, "checkpoints", str(step), "state")
    files = [os.path.join(d, f) for d, _, fs in os.walk(folder) for f in fs]
    largest = max(files, key=os.path.getsize)
    with open(largest, "r+b") as f:
        f.truncate(1000)
    return largest


def legacify(run_dir) -> None:
    """Rewrites a run folder in the layout of mdu-jax at commit 541a937 (checked against a folder
    that commit wrote): checkpoint folders named by micro-step, meta without ``optimizer_step`` /
    ``step_unit`` / ``grad_accum``, configs without keys added since, metrics.jsonl ``step`` in
    micro-steps and no ``micro_step`` field."""
    ckpts = os.path.join(run_dir, "checkpoints")
    for step in sorted(checkpoint_folders(run_dir), reverse=True):  # descending: targets are larger
        path = os.path.join(ckpts, str(step), "meta", "metadata")
        with open(path) as f:
            meta = json.load(f)
        micro = meta["micro_step"]
        meta = {"micro_step": micro, "method": meta["method"], "data": meta["data"],
                "config": _old_config(meta["config"])}
        with open(path, "w") as f:
            json.dump(meta, f)
        os.rename(os.path.join(ckpts, str(step)), os.path.join(ckpts, str(micro)))
    rows = metrics_rows(run_dir)
    with open(os.path.join(run_dir, "metrics.jsonl"), "w") as f:
        for r in rows:
            old = {k: v for k, v in r.items() if k not in ("micro_step", "update_ratio")}
            f.write(json.dumps({**old, "step": int(r["micro_step"])}) + "\n")
    cfg_path = os.path.join(run_dir, "config.yaml")
    with open(cfg_path) as f:
        cfg = yaml.safe_load(f)
    with open(cfg_path, "w") as f:
        yaml.safe_dump(_old_config(cfg), f, sort_keys=False)
    for name in ("run_summary.json",):
        if os.path.exists(os.path.join(run_dir, name)):
            os.remove(os.path.join(run_dir, name))


def _old_config(cfg: dict) -> dict:
    cfg = json.loads(json.dumps(cfg))
    cfg["optim"].pop("max_update_ratio", None)
    return cfg


class LogLines(logging.Handler):
    """Collects the messages of the ``mdu_jax`` loggers while attached."""

    def __init__(self):
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record):
        self.lines.append(record.getMessage())

    def __enter__(self):
        logger = logging.getLogger("mdu_jax")
        self._level = logger.level
        logger.setLevel(logging.INFO)
        logger.addHandler(self)
        return self

    def __exit__(self, *exc):
        logger = logging.getLogger("mdu_jax")
        logger.removeHandler(self)
        logger.setLevel(self._level)
