"""Every unlearning method side by side on the demo world, tuned with the same budget and chosen
by a rule declared before running: ``python -m mdu_jax.train --config configs/demo_compare.yaml``.

The config is a demo config (``pipeline.DemoRunConfig``: world, SFT recipe, evaluation) plus a
``compare:`` section (``CompareSection``): the methods (each an objective: method, tau, options),
one lr x steps grid shared by every method, the seeds, and the selection rule. For each method,
grid cell and seed, the unlearning stage runs from the same cached SFT model (seed s: the same
data order and masking in every method) and is evaluated against the same retain-only twin. The
rule picks one cell per method from the seed means; the report gives mean ± sd over seeds at that
cell and paired tests against the reference method (t-test over seeds, Wilcoxon over forget
questions x seeds), as ``compare.md`` (table), ``compare.png`` (privacy-utility plot) and
``compare.json`` (everything, with every cell's numbers) under ``<output_dir>/<compare.folder>``.
Finished runs are kept (``cell.json`` beside each run's evaluation), so an interrupted
comparison resumes where it stopped.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import time
from typing import Any, Optional

from mdu_jax import typed_config
from mdu_jax.demo import compare_report, compare_stats, pipeline
from mdu_jax.demo.machine import machine_info
from mdu_jax.demo.stages import write_json
from mdu_jax.training.config import ObjectiveSection
from mdu_jax.typed_config import ConfigKeyError

log = logging.getLogger("mdu_jax.demo")

REPORTED = [k for _, k in compare_report.COLUMNS]


@dataclasses.dataclass
class MethodEntry:
    """One compared method: a display name and the objective it trains (``options``: other
    objective fields, e.g. ``{npo_beta: 0.2}``); ``tau`` None keeps the objective's."""

    name: str = ""
    method: str = "mdu"
    tau: Optional[float] = None
    options: dict[str, float] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class CompareSection:
    """The methods, the shared tuning grid, the seeds and the selection rule (see the module docstring)."""

    methods: list[MethodEntry] = dataclasses.field(default_factory=list)
    lrs: list[float] = dataclasses.field(default_factory=lambda: [5e-4])
    steps: list[int] = dataclasses.field(default_factory=lambda: [150])
    seeds: list[int] = dataclasses.field(default_factory=lambda: [0, 1, 2])
    reference: str = ""                  # the method the paired tests compare against (a name above)
    select_metric: str = "forget_ks_statistic"
    utility_fraction: float = 0.9        # a cell must keep mean model utility >= this x the SFT model's
    folder: str = "compare"

    def validate(self):
        names = [m.name for m in self.methods]
        if not self.methods:
            raise ConfigKeyError("compare.methods: expected at least one method")
        if any(not n for n in names) or len(set(names)) != len(names):
            raise ConfigKeyError(f"compare.methods: every method needs a distinct name, got {names}")
        for i, m in enumerate(self.methods):
            objective_of(ObjectiveSection(), m, f"compare.methods[{i}]")
        if self.reference not in names:
            raise ConfigKeyError(f"compare.reference: {self.reference!r} is not one of the methods {names}")
        if self.select_metric not in compare_stats.DIRECTION:
            raise ConfigKeyError(f"compare.select_metric: expected one of {sorted(compare_stats.DIRECTION)}, "
                                 f"got {self.select_metric!r}")
        if not self.lrs or not self.steps or not self.seeds:
            raise ConfigKeyError("compare.lrs / steps / seeds: expected non-empty lists")
        if any(lr <= 0 for lr in self.lrs) or any(s < 1 for s in self.steps):
            raise ConfigKeyError(f"compare.lrs / steps: expected positive values, got {self.lrs} / {self.steps}")
        if len(set(self.seeds)) != len(self.seeds):
            raise ConfigKeyError(f"compare.seeds: expected distinct seeds, got {self.seeds}")
        if not 0.0 <= self.utility_fraction <= 1.5:
            raise ConfigKeyError(f"compare.utility_fraction: expected in [0, 1.5], got {self.utility_fraction}")


@dataclasses.dataclass
class CompareRunConfig(pipeline.DemoRunConfig):
    """A demo config with a ``compare`` section."""

    compare: CompareSection = dataclasses.field(default_factory=CompareSection)


def objective_of(base: ObjectiveSection, entry: MethodEntry, where: str = "compare.methods") -> ObjectiveSection:
    """`base` with `entry`'s method, tau and options, validated like any objective section."""
    data = {**typed_config.to_dict(base), "method": entry.method, **dict(entry.options)}
    if entry.tau is not None:
        data["tau"] = entry.tau
    try:
        return typed_config.from_dict(ObjectiveSection, data)
    except ConfigKeyError as e:
        raise ConfigKeyError(f"{where} ({entry.name!r}): {e}") from None


def slug(name: str) -> str:
    """A folder name for a method's display name ('MDU tau=1' -> 'mdu_tau_1')."""
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")


def load_compare_config(path: str, overrides: list[str]) -> CompareRunConfig:
    """The comparison config from a YAML file with ``demo:`` and ``compare:`` sections."""
    return pipeline.load_demo_config(path, overrides, CompareRunConfig)


def is_compare_config(path: str) -> bool:
    return pipeline.has_section(path, "compare")


def cell_run(run: CompareRunConfig, entry: MethodEntry, lr: float, steps: int, seed: int) -> pipeline.DemoRunConfig:
    """The demo run of one (method, lr, steps, seed): the entry's objective, the cell's lr and
    steps, and `seed` for the unlearning stage's data order and masking."""
    unlearn = dataclasses.replace(run.unlearn, lr=lr, steps=steps, seed=seed)
    fields = {f.name: getattr(run, f.name) for f in dataclasses.fields(pipeline.DemoRunConfig)}
    return pipeline.DemoRunConfig(**{**fields, "unlearn": unlearn, "objective": objective_of(run.objective, entry),
                                     "taus": None, "t_bands": None})


def _run_cell(run: CompareRunConfig, prep: pipeline.Prepared, entry: MethodEntry, lr: float, steps: int, seed: int,
              folder: str, progress: bool) -> dict:
    """One unlearning run + evaluation, or its kept result when `folder` holds the same one."""
    sub = cell_run(run, entry, lr, steps, seed)
    key = pipeline.run_key(sub, prep)
    marker = os.path.join(folder, "cell.json")
    if os.path.isfile(marker):
        with open(marker) as f:
            kept = json.load(f)
        if kept.get("key") == key:
            return kept
    result, _probe, t = pipeline.unlearn_and_evaluate(sub, prep, folder, entry.name, progress=progress)
    forget = result["per_example"]["forget"]
    cell = {"key": key, "method": entry.name, "lr": lr, "steps": steps, "seed": seed, "timings_s": t,
            "aggregates": result["aggregates"], "forget_prob": [r["prob"] for r in forget],
            "forget_fact_hit": [bool(r.get("fact_hit")) for r in forget]}
    write_json(marker, cell)
    return cell


def run_compare(run: CompareRunConfig, *, progress: bool = True) -> dict[str, Any]:
    """Runs every (method, lr, steps, seed), applies the selection rule, writes and prints the
    table, the plot and ``compare.json``; returns what it wrote."""
    started = time.time()
    spec = run.compare
    prep = pipeline.prepare(run, progress=progress)
    out = os.path.join(os.path.abspath(run.output_dir), spec.folder)
    os.makedirs(out, exist_ok=True)
    floor = spec.utility_fraction * prep.before["aggregates"]["model_utility"]
    cells: dict[str, dict[tuple[float, int], dict[int, dict]]] = {}
    n_runs, done = len(spec.methods) * len(spec.lrs) * len(spec.steps) * len(spec.seeds), 0
    for entry in spec.methods:
        for lr in spec.lrs:
            for steps in spec.steps:
                for seed in spec.seeds:
                    folder = os.path.join(out, slug(entry.name), f"lr{lr:g}_steps{steps}_seed{seed}")
                    cells.setdefault(entry.name, {}).setdefault((lr, steps), {})[seed] = _run_cell(
                        run, prep, entry, lr, steps, seed, folder, progress)
                    done += 1
                    log.info("compare: %d/%d runs (%s lr=%g steps=%d seed=%d), %.0f s", done, n_runs, entry.name,
                             lr, steps, seed, time.time() - started)
    rows = []
    for entry in spec.methods:
        aggs = {c: {s: cell["aggregates"] for s, cell in by_seed.items()} for c, by_seed in cells[entry.name].items()}
        chosen, kept = compare_stats.select_cell(aggs, metric=spec.select_metric, utility_key="model_utility",
                                                 utility_floor=floor)
        rows.append({"name": entry.name, "method": entry.method, "tau": entry.tau, "lr": chosen[0],
                     "steps": chosen[1], "kept_floor": kept, "seeds": len(aggs[chosen]),
                     "summary": compare_stats.cell_summary(aggs[chosen], REPORTED), "cell": cells[entry.name][chosen]})
    ref = next(r for r in rows if r["name"] == spec.reference)
    ref_aggs = {s: c["aggregates"] for s, c in ref["cell"].items()}
    for r in rows:
        mine = {s: c["aggregates"] for s, c in r["cell"].items()}
        r["tests"] = {k: compare_stats.paired_test(mine, ref_aggs, k) for k in REPORTED}
        seeds = sorted(set(r["cell"]) & set(ref["cell"]))
        r["tests"]["forget_prob_per_question"] = compare_stats.paired_question_test(
            [p for s in seeds for p in r["cell"][s]["forget_prob"]],
            [p for s in seeds for p in ref["cell"][s]["forget_prob"]])
    best = "lowest" if compare_stats.DIRECTION[spec.select_metric] < 0 else "highest"
    rule = (f"per method, the lr x steps cell with the {best} mean {spec.select_metric} over seeds among cells "
            f"whose mean model utility is >= {spec.utility_fraction:g} x the SFT model's ({floor:.4f}); if none, "
            f"the cell with the highest mean utility (marked NO)")
    table = compare_report.markdown_table(rows, spec.reference)
    before, twin = prep.before["aggregates"], prep.twin["aggregates"]
    world = prep.assets.world
    plot = compare_report.plot_comparison(
        rows, os.path.join(out, "compare.png"), before=before, twin=twin, utility_floor=floor,
        title=f"demo world seed {world.seed}: {len(world.facts_of('forget'))} forget questions, "
              f"{len(spec.seeds)} seeds per method, lr x steps grid {spec.lrs} x {spec.steps}")
    header = (f"SFT model: forget fact recall {before.get('forget_fact_recall', float('nan')):.3f}, retain "
              f"{before.get('retain_fact_recall', float('nan')):.3f}, model utility {before['model_utility']:.4f}, "
              f"forget KS stat {before.get('forget_ks_statistic', float('nan')):.3f}; twin: forget fact recall "
              f"{twin.get('forget_fact_recall', float('nan')):.3f}, model utility {twin['model_utility']:.4f}\n"
              f"grid: lr {spec.lrs} x steps {spec.steps}, seeds {spec.seeds}\nselection rule: {rule}\n"
              f"ME+GD is MDU at tau 0 (a uniform anchor target) by construction.\n")
    with open(os.path.join(out, "compare.md"), "w") as f:
        f.write(header + "\n" + table + "\n")
    summary = {"rule": rule, "grid": {"lrs": spec.lrs, "steps": spec.steps, "seeds": spec.seeds},
               "utility_floor": floor, "reference": spec.reference, "before": before, "twin": twin,
               "world_seed": world.seed, "machine": machine_info(), "total_s": round(time.time() - started, 1),
               "rows": [{k: v for k, v in r.items() if k != "cell"} for r in rows],
               "cells": {name: {f"lr={c[0]:g},steps={c[1]}": by_seed for c, by_seed in by_cell.items()}
                         for name, by_cell in cells.items()},
               "table": table, "plot": plot}
    write_json(os.path.join(out, "compare.json"), summary)
    print("\n" + header + "\n" + table)
    print(f"\nwrote {out}/compare.md, compare.png, compare.json ({summary['total_s']:.0f} s)")
    return summary


def main(overrides: list[str], *, config: str, progress: bool = True) -> int:
    """Entry point used by ``python -m mdu_jax.train --config <a config with compare:>``."""
    return pipeline.command(lambda: load_compare_config(config, overrides),
                            lambda run: run_compare(run, progress=progress))
