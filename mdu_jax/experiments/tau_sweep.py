"""The tau sweep: MDU for a list of tau values, a TOFU evaluation of each, and the
privacy-utility trade-off (PNG + table). ``python -m mdu_jax.sweep_eval`` is its command line.

Each run trains into ``<output_dir>/tau=<v>/`` (``mdu_jax.training.run``; an interrupted sweep
resumes) and writes ``eval_tofu.json`` there; the sweep writes ``sweep_tau.csv`` and
``sweep_tau.png`` in its output folder and prints the table.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from mdu_jax.eval.results import read_result, write_result
from mdu_jax.eval.sweep import plot_tradeoff, sweep_rows, table_text, write_table
from mdu_jax.eval.tofu import evaluate_tofu
from mdu_jax.training import TrainConfig, run, sweep_values

log = logging.getLogger("mdu_jax.sweep_eval")


def train_and_evaluate(cfg: TrainConfig, taus: str, *, data_dir: str | None, forget_split: str,
                       progress: bool = True, **eval_options: Any) -> list[tuple[float, dict]]:
    """(tau, TOFU result) per tau of the comma-separated `taus`, training each MDU run first.

    `eval_options` are ``evaluate_tofu`` keywords (retain_reference, max_examples, mc_samples, ...).
    """
    if cfg.objective.method != "mdu":
        raise ValueError(f"objective.method is {cfg.objective.method!r}; the tau sweep needs 'mdu'")
    if cfg.data.benchmark != "tofu" and not data_dir:
        raise ValueError("the sweep evaluates on TOFU: train on data.benchmark=tofu or pass --data-dir")
    pairs = []
    for tau, sub in sweep_values(cfg, f"objective.tau={taus}"):
        log.info("tau=%s: training into %s", tau, sub.output_dir)
        res = run(sub, progress=progress)
        log.info("tau=%s: evaluating", tau)
        result = evaluate_tofu(res.model_cfg, res.params, res.tokenizer, data_dir=data_dir or cfg.data.data_dir,
                               forget_split=forget_split or cfg.data.forget_split, model_name=res.final_dir,
                               progress=progress, **eval_options)
        result["tau"] = float(tau)
        write_result(result, os.path.join(sub.output_dir, "eval_tofu.json"))
        pairs.append((float(tau), result))
    return pairs


def read_pairs(items: list[str]) -> list[tuple[float, dict]]:
    """(tau, result) from 'TAU=PATH' strings naming result JSONs."""
    pairs = []
    for item in items:
        tau, sep, path = item.partition("=")
        if not sep:
            raise ValueError(f"--results {item!r}: expected TAU=PATH")
        pairs.append((float(tau), read_result(path)))
    return pairs


def write_tradeoff(pairs: list[tuple[float, dict]], out_dir: str, y: str | None = None,
                   baseline: str | None = None) -> tuple[str, str, str]:
    """Writes ``sweep_tau.csv`` and ``sweep_tau.png`` into `out_dir`; returns (csv, png, table text).
    `baseline` is the result JSON of the model before unlearning (drawn as a star)."""
    rows = sweep_rows(pairs)
    csv_path = write_table(rows, os.path.join(out_dir, "sweep_tau.csv"))
    png_path = plot_tradeoff([r for _, r in pairs], [t for t, _ in pairs], os.path.join(out_dir, "sweep_tau.png"),
                             baseline=read_result(baseline) if baseline else None, y=y)
    return csv_path, png_path, table_text(rows)
