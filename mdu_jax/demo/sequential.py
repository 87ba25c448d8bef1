"""Sequential unlearning on the demo world: the forget authors split into k disjoint groups,
unlearned one group per round, each round starting from the previous round's model:
``python -m mdu_jax.train --config configs/demo_sequential.yaml``.

The config is a demo config (``pipeline.DemoRunConfig``: world, SFT recipe, unlearning stage,
objective, evaluation) plus a ``sequential:`` section (``SequentialSection``). Round 1 unlearns
group 1 from the cached SFT model, round j group j from round j-1's model (for MDU the anchor is
that round's starting model); every round keeps the demo's retain rows (retain authors and
background facts). After each round the model is evaluated once on the whole forget split, and
every group's numbers are read off that evaluation (``eval.subsets.forget_subset``): the groups
unlearned in earlier rounds (does their forgetting hold?), the current one, and the later ones
(what unlearning one group does to the others before their turn), beside model utility. The
round loop itself is ``eval.sequential_rounds.run_rounds`` (its known-answer tests run a tiny
model in memory).

The reference for every group is the demo's one retain-only twin, which never saw any forget
author. For group j the ideal reference would be a model that never saw groups 1..j but saw the
later groups; the twin also never saw the later groups, so it is the floor for each group (what a
model that never knew the group's authors answers), not a per-round retrained reference: that
would cost one SFT run per round and is not done here.

Under ``<output_dir>/<sequential.folder>``: ``round<j>/`` per round (the checkpoint, its
evaluation and ``round.json``), and ``sequential.json`` (everything), ``sequential.md`` (the
tables) and ``sequential.png`` (metrics vs round, one line per group). A round whose
``round.json`` matches the config and the rounds before it is kept, so an interrupted run resumes.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import time
from typing import Any

from mdu_jax.checkpoints import write_text
from mdu_jax.demo import pipeline, sequential_report
from mdu_jax.demo.machine import machine_info
from mdu_jax.demo.stages import write_json
from mdu_jax.demo.world import World, build_world
from mdu_jax.eval.sequential_rounds import run_rounds
from mdu_jax.eval.subsets import forget_subset
from mdu_jax.typed_config import ConfigKeyError

log = logging.getLogger("mdu_jax.demo")

ROUND_FILE = "round.json"


@dataclasses.dataclass
class SequentialSection:
    """``groups``: how many disjoint groups the forget authors are split into (one per round, in
    the order of the world's forget split, sizes differing by at most one author)."""

    groups: int = 2
    folder: str = "sequential"

    def validate(self):
        if self.groups < 2:
            raise ConfigKeyError(f"sequential.groups: expected >= 2 rounds (one is the plain demo), got {self.groups}")
        if not self.folder or os.sep in self.folder or self.folder in (".", ".."):
            raise ConfigKeyError(f"sequential.folder: expected a folder name inside output_dir, got {self.folder!r}")


@dataclasses.dataclass
class SequentialRunConfig(pipeline.DemoRunConfig):
    """A demo config with a ``sequential`` section."""

    sequential: SequentialSection = dataclasses.field(default_factory=SequentialSection)

    def validate(self):
        super().validate()
        if self.taus is not None or self.t_bands is not None:
            raise ConfigKeyError("taus / t_bands: sequential unlearning runs one objective; leave the sweeps out")


def load_sequential_config(path: str, overrides: list[str]) -> SequentialRunConfig:
    """The sequential config from a YAML file with ``demo:`` and ``sequential:`` sections."""
    return pipeline.load_demo_config(path, overrides, SequentialRunConfig)


def is_sequential_config(path: str) -> bool:
    return pipeline.has_section(path, "sequential")


def forget_groups(world: World, k: int) -> list[list[int]]:
    """The forget authors (indices into ``world.people``) in `k` disjoint, contiguous groups of
    sizes differing by at most one, in the forget split's order."""
    authors = list(world.forget)
    if not 1 <= k <= len(authors):
        raise ConfigKeyError(f"sequential.groups: {k} groups of the world's {len(authors)} forget authors; "
                             f"expected 2..{len(authors)} (every group needs an author)")
    size, extra = divmod(len(authors), k)
    groups, start = [], 0
    for j in range(k):
        end = start + size + (j < extra)
        groups.append(authors[start:end])
        start = end
    return groups


def plan(run: SequentialRunConfig) -> tuple[World, list[list[int]]]:
    """The world and its forget groups, checked before anything is written: every group has an
    author, and the evaluation covers every forget question (``eval.max_examples``)."""
    world = build_world(**pipeline.demo_config(run).world_kwargs())
    groups = forget_groups(world, run.sequential.groups)
    n_forget = len(world.facts_of("forget"))
    if run.eval.max_examples is not None and run.eval.max_examples < n_forget:
        raise ConfigKeyError(f"eval.max_examples: {run.eval.max_examples} leaves some of the {n_forget} forget "
                             "questions unevaluated; sequential unlearning reports every group (leave it unset)")
    return world, groups


def _round_key(previous: str, j: int, group: list[int]) -> str:
    blob = json.dumps([previous, j, group]).encode()
    return hashlib.sha256(blob).hexdigest()[:12]


def _kept(folder: str, key: str) -> dict | None:
    """The finished round in `folder` when it is the same round (key) and its checkpoint is there."""
    path = os.path.join(folder, ROUND_FILE)
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        kept = json.load(f)
    return kept if kept.get("key") == key and os.path.isdir(kept.get("model", "")) else None


def run_sequential(run: SequentialRunConfig, *, progress: bool = True) -> dict[str, Any]:
    """Runs (or keeps) every round, writes and prints the tables and the plot; returns what it wrote."""
    started = time.time()
    _, groups = plan(run)
    prep = pipeline.prepare(run, progress=progress)
    world = prep.assets.world
    out = os.path.join(os.path.abspath(run.output_dir), run.sequential.folder)
    os.makedirs(out, exist_ok=True)
    questions = [[f.question for i in g for f in world.people[i].facts] for g in groups]
    method_label = pipeline.run_label(run.objective)
    keys = [pipeline.run_key(run, prep)]
    records: dict[int, dict] = {}

    def step(j: int, group: list[int], start: str) -> tuple[str, dict]:
        """Round j: unlearn `group` from `start` (or keep the finished round), evaluate its model."""
        folder = os.path.join(out, f"round{j}")
        keys.append(_round_key(keys[-1], j, group))
        record = _kept(folder, keys[-1])
        if record is not None:
            log.info("sequential: round %d kept (%s)", j, folder)
            # The kept round's evaluation is its cached eval.json (evaluated again only if missing).
            result = pipeline.evaluate_model(run, prep, record["model"], record["label"],
                                             os.path.join(folder, "eval.json"), progress=progress)
        else:
            label = f"round {j}: {method_label} of group {j}"
            log.info("sequential: round %d of %d, unlearning %s", j, len(groups),
                     ", ".join(world.people[i].name for i in group))
            result, _probe, t = pipeline.unlearn_and_evaluate(run, prep, folder, label, start_dir=start,
                                                              forget_people=group, progress=progress)
            record = {"key": keys[-1], "round": j, "unlearned_group": j, "label": label,
                      "people": list(group), "model": os.path.join(folder, "final"), "timings_s": t}
            write_json(os.path.join(folder, ROUND_FILE), record)
        records[j] = record
        return record["model"], result

    done = run_rounds(prep.sft_dir, prep.before, groups, step,
                      lambda result, i: forget_subset(result, questions[i], reference=prep.twin))
    rounds = [{"round": 0, "unlearned_group": None, "label": "before (SFT)", "model": prep.sft_dir,
               "aggregates": prep.before["aggregates"], "groups": done[0]["groups"]}]
    rounds += [{**records[r["round"]], "aggregates": r["result"]["aggregates"], "groups": r["groups"]}
               for r in done[1:]]
    twin = {"aggregates": prep.twin["aggregates"], "groups": [forget_subset(prep.twin, q) for q in questions]}
    group_info = [{"group": j, "people": [world.people[i].name for i in g], "questions": len(q)}
                  for j, (g, q) in enumerate(zip(groups, questions), 1)]
    tables = sequential_report.markdown_tables(rounds, twin, group_info)
    reference = ("every group's truth-ratio KS statistic and forget quality compare its rows with the same rows of "
                 "the demo's retain-only twin, which never saw any forget author: the floor for each group, not a "
                 "model retrained without groups 1..j for each round")
    header = (f"Sequential unlearning on demo world seed {world.seed}: {method_label}, {len(groups)} rounds, "
              f"one group of forget authors per round, each round from the previous round's model.\n"
              f"Reference: {reference}.\n")
    plot = sequential_report.plot_rounds(rounds, twin, os.path.join(out, "sequential.png"),
                                         title=f"{method_label}, one forget group per round (demo world {world.seed})")
    summary = {"method": dataclasses.asdict(run.objective), "world_seed": world.seed, "groups": group_info,
               "reference": reference, "rounds": rounds, "twin": twin, "tables": tables, "plot": plot,
               "unlearn_stage": dataclasses.asdict(pipeline.unlearn_stage(run, prep.assets.config)),
               "machine": machine_info(), "total_s": round(time.time() - started, 1)}
    write_text(os.path.join(out, "sequential.md"), header + "\n" + tables + "\n")
    write_json(os.path.join(out, "sequential.json"), summary)
    print("\n" + header + "\n" + tables)
    print(f"\nwrote {out}/sequential.md, sequential.png, sequential.json ({summary['total_s']:.0f} s)")
    return summary


def main(overrides: list[str], *, config: str, progress: bool = True) -> int:
    """Entry point used by ``python -m mdu_jax.train --config <a config with sequential:>``."""
    def load() -> SequentialRunConfig:
        run = load_sequential_config(config, overrides)
        plan(run)  # a bad group count fails before anything is written
        return run

    return pipeline.command(load, lambda run: run_sequential(run, progress=progress))
