"""The embedded default run: ``python -m mdu_jax.train`` with no arguments.

Offline, on a CPU, in minutes: generate a TOFU-style world of fictitious authors, fit a
tokenizer, fine-tune a tiny LLaDA on every fact until it knows them (and a retain-only twin for
forget quality), unlearn the forget authors (MDU by default, any method with
``objective.method=...``), evaluate before and after with the real TOFU evaluation code, probe
where the MDU anchor points, print the table, and write checkpoints, result JSONs, a plot and
``summary.json``. SFT models and their evaluations are cached under ``<output_dir>/cache``, keyed
by everything that determines them, so a second run goes straight to unlearning.

    python -m mdu_jax.train                                        # the demo, default sizes
    python -m mdu_jax.train demo.size=ci objective.tau=0.5         # overrides, dotted
    python -m mdu_jax.train objective.method=npo unlearn.lr=1e-3   # a baseline instead of MDU
    python -m mdu_jax.train --config configs/demo_tau_sweep.yaml   # the tau sweep + trade-off plot
    python -m mdu_jax.train --config configs/demo_t_bands.yaml     # the timestep-band sweep

A sweep (``taus`` or ``t_bands``) runs the unlearning stage once per value from the same cached
SFT model and twin, each in its own folder, then writes the sweep's table (``sweep_<key>.csv``,
printed too) and its privacy-utility plot beside ``summary.json``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import shutil
import sys
import time
from typing import Any, Callable, Optional

import jax

import mdu_jax as mj
from mdu_jax import typed_config as structured
from mdu_jax.demo import report
from mdu_jax.demo.assets import DemoAssets, DemoConfig, prepare_demo
from mdu_jax.demo.machine import machine_info
from mdu_jax.demo.stages import StageSection, sft_rows, train_config, unlearning_rows, write_json
from mdu_jax.demo.world import demo_pairs, fact_chance
from mdu_jax.diffusion import check_t_range
from mdu_jax.eval import results
from mdu_jax.eval import sweep as sweep_plot
from mdu_jax.eval.anchor_probe import anchor_probe
from mdu_jax.eval.tofu import evaluate_tofu
from mdu_jax.training import parse_sweep
from mdu_jax.training import run as train_run
from mdu_jax.training.config import ObjectiveSection
from mdu_jax.typed_config import ConfigKeyError

log = logging.getLogger("mdu_jax.demo")

# Part of every cached evaluation's key: bump it when the evaluation adds or changes metrics.
EVAL_VERSION = 2

METHOD_LABELS = {"mdu": "MDU", "sft": "retain-only fine-tuning", "ga": "GA", "graddiff": "GradDiff", "npo": "NPO",
                 "simnpo": "SimNPO", "me_gd": "ME+GD", "idkpo": "IdkPO", "dpo": "DPO (IdK)"}


@dataclasses.dataclass
class DemoSection:
    size: str = "default"                # "default" or "ci" (the reduced demo the tests run)
    seed: int = 0                        # the world (names, facts, splits), the initial model and the runs
    family: str = "llada"
    paraphrases: Optional[bool] = None   # SFT on paraphrased answers too (see stages.sft_rows); None: the size's

    def validate(self):
        if self.size not in SIZES:
            raise ConfigKeyError(f"demo.size: expected one of {sorted(SIZES)}, got {self.size!r}")
        if self.family not in ("llada", "dream"):
            raise ConfigKeyError(f"demo.family: expected 'llada' or 'dream', got {self.family!r}")


@dataclasses.dataclass
class EvalSection:
    mc_samples: int = 32
    # The generation window must lie inside the response windows SFT trained (row length minus
    # prompt, padded with EOS): a model trained on 34-token rows fills a 24-token window badly.
    gen_length: int = 12
    steps: int = 12
    max_examples: Optional[int] = None
    # Masking ratios of the response at which the anchor probe reads the forget answers.
    anchor_ratios: list[float] = dataclasses.field(default_factory=lambda: [1.0, 0.5, 0.15])

    def validate(self):
        bad = [r for r in self.anchor_ratios if not 0.0 < r <= 1.0]
        if bad:
            raise ConfigKeyError(f"eval.anchor_ratios: expected values in (0, 1], got {bad}")


def _default_objective() -> ObjectiveSection:
    # lambda = 8: the forget and retain answers share their templates, so a tiny model forgets
    # the forget authors without losing the retain ones only with a strong retain term.
    return ObjectiveSection(method="mdu", tau=1.0, retain_weight=8.0)


@dataclasses.dataclass
class DemoRunConfig:
    """The demo's knobs; everything else comes from the shipped training stack's defaults.

    ``objective`` is the training stack's objective section (any method of
    ``mdu_jax.training.config.METHODS`` and its options); ``sft`` / ``unlearn`` hold the two stages' step
    counts, learning rates, batch sizes and padding rules (unset: the demo size's recipe).
    """

    demo: DemoSection = dataclasses.field(default_factory=DemoSection)
    sft: StageSection = dataclasses.field(default_factory=StageSection)
    unlearn: StageSection = dataclasses.field(default_factory=StageSection)
    objective: ObjectiveSection = dataclasses.field(default_factory=_default_objective)
    eval: EvalSection = dataclasses.field(default_factory=EvalSection)
    taus: Optional[list[float]] = None   # set: run MDU once per tau and draw the trade-off plot
    # set: the timestep ablation, once per band [lo, hi] of diffusion times (masking ratios) the
    # forget rows are trained at (objective.t_range); [time_eps, 1] is the unbanded objective.
    t_bands: Optional[list[list[float]]] = None
    output_dir: str = "runs/demo"
    max_length: Optional[int] = None     # tokens per row; None: the demo size's

    def validate(self):
        if self.taus is not None and self.objective.method != "mdu":
            raise ConfigKeyError(f"taus: the tau sweep runs MDU; objective.method is {self.objective.method!r}")
        if self.taus is not None and self.t_bands is not None:
            raise ConfigKeyError("taus and t_bands: a demo run sweeps one of them, not both")
        if self.t_bands is not None:
            if not self.t_bands:
                raise ConfigKeyError("t_bands: expected at least one band [lo, hi]")
            for i, band in enumerate(self.t_bands):
                try:
                    check_t_range(band)
                except ValueError:
                    raise ConfigKeyError(f"t_bands[{i}]: {band} is not a band of diffusion times (masking "
                                         "ratios): expected [lo, hi] with 0 < lo < hi <= 1 (at t = 0 nothing is "
                                         "masked: start a band at objective.time_eps, 0.001)") from None
            if len({tuple(b) for b in self.t_bands}) != len(self.t_bands):
                raise ConfigKeyError(f"t_bands: expected distinct bands, got {self.t_bands}")


SIZES = {
    "default": lambda seed, family: DemoConfig(seed=seed, family=family),
    "ci": lambda seed, family: DemoConfig.ci(seed=seed, family=family),
}


def demo_config(run: DemoRunConfig) -> DemoConfig:
    return SIZES[run.demo.size](run.demo.seed, run.demo.family)


def paraphrases(run: DemoRunConfig, demo: DemoConfig) -> bool:
    """Whether SFT also teaches the paraphrased answers (``demo.paraphrases``, else the size's)."""
    return demo.sft_paraphrases if run.demo.paraphrases is None else bool(run.demo.paraphrases)


def row_length(run: DemoRunConfig, demo: DemoConfig) -> int:
    """Tokens per training row (``max_length``, else the demo size's)."""
    return run.max_length or demo.max_length


def _filled(stage: StageSection, **defaults) -> StageSection:
    return dataclasses.replace(stage, **{k: v if getattr(stage, k) is None else getattr(stage, k)
                                         for k, v in defaults.items()})


def sft_stage(run: DemoRunConfig, demo: DemoConfig) -> StageSection:
    """The SFT stage with the demo size's measured recipe filled in where unset."""
    return _filled(run.sft, steps=demo.sft_steps, lr=demo.sft_lr, batch_size=demo.sft_batch_size,
                   warmup_ratio=demo.sft_warmup_ratio, loss_weight=demo.sft_loss_weight,
                   prompt_dropout=demo.sft_prompt_dropout)


def unlearn_stage(run: DemoRunConfig, demo: DemoConfig) -> StageSection:
    """The unlearning stage with the demo size's step count, learning rate and batch filled in."""
    return _filled(run.unlearn, steps=demo.unlearn_steps, lr=demo.unlearn_lr, batch_size=demo.unlearn_batch_size,
                   warmup_ratio=0.0)


def _band(objective: ObjectiveSection) -> Optional[tuple[float, float]]:
    return None if objective.t_range is None else check_t_range(objective.t_range)


def run_label(objective: ObjectiveSection) -> str:
    """The column name of an unlearned model: 'after MDU (tau=1)', 'after NPO', 'after MDU (tau=1,
    t in [0.33, 0.67])' (trained at diffusion times in a band)."""
    band = _band(objective)
    parts = [f"tau={objective.tau:g}"] if objective.method == "mdu" else []
    parts += [f"t in [{band[0]:g}, {band[1]:g}]"] if band else []
    return f"after {METHOD_LABELS[objective.method]}" + (f" ({', '.join(parts)})" if parts else "")


def run_folder(objective: ObjectiveSection) -> str:
    """The folder name of an unlearning run: 'mdu_tau1', 'npo', 'mdu_tau1_t0.33-0.67'."""
    band = _band(objective)
    name = f"mdu_tau{objective.tau:g}" if objective.method == "mdu" else objective.method
    return name + (f"_t{band[0]:g}-{band[1]:g}" if band else "")


# The aggregates of a demo sweep's table (sweep_<key>.csv), after the swept value.
SWEEP_COLUMNS = ("model_utility", "forget_fact_recall", "forget_Q_A_Prob", "forget_Q_A_ROUGE", "forget_ks_statistic",
                 "forget_quality", "forget_short_rate", "retain_fact_recall", "retain_Q_A_Prob")


def sweep_objectives(run: DemoRunConfig) -> tuple[Optional[str], list[tuple[Any, ObjectiveSection]]]:
    """(swept key or None, [(value, objective)]) of a demo run: one objective per tau of ``taus``
    ('tau') or per band of ``t_bands`` ('t_range'); no sweep: [(None, run.objective)]."""
    if run.taus is not None:
        return "tau", [(float(tau), dataclasses.replace(run.objective, tau=float(tau))) for tau in run.taus]
    if run.t_bands is not None:
        return "t_range", [(list(band), dataclasses.replace(run.objective, t_range=list(band))) for band in run.t_bands]
    return None, [(None, run.objective)]


def _key(*parts: Any) -> str:
    blob = json.dumps([p if not dataclasses.is_dataclass(p) else dataclasses.asdict(p) for p in parts],
                      sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:12]


def twin_stage(run: DemoRunConfig, demo: DemoConfig, world) -> StageSection:
    """The retain-only twin's SFT stage: the SFT recipe with as many passes over its (smaller)
    data as the SFT model makes over all of it (steps scaled by the ratio of row counts)."""
    stage = sft_stage(run, demo)
    with_para = paraphrases(run, demo)
    ratio = len(sft_rows(world, "sft_retain", with_para)) / len(sft_rows(world, "sft", with_para))
    return dataclasses.replace(stage, steps=max(1, round(stage.steps * ratio)))


def _sft(run: DemoRunConfig, assets: DemoAssets, split: str, cache: str, progress: bool) -> tuple[str, float]:
    """Fine-tunes the initial model on `split` ('sft' or 'sft_retain'); cached by its config."""
    stage = sft_stage(run, assets.config) if split == "sft" else twin_stage(run, assets.config, assets.world)
    key = _key(assets.config, stage, row_length(run, assets.config), split, paraphrases(run, assets.config))
    out = os.path.join(cache, f"{split}-{key}")
    final = os.path.join(out, "final")
    if os.path.isdir(final):
        log.info("%s: cached (%s)", split, final)
        return final, 0.0
    shutil.rmtree(out, ignore_errors=True)  # an interrupted run's leftovers: start the stage afresh
    rows = write_json(os.path.join(cache, f"{split}-{key}.json"),
                      sft_rows(assets.world, split, paraphrases(run, assets.config)))
    objective = ObjectiveSection(method="sft", retain_loss_weight=stage.loss_weight, prompt_dropout=stage.prompt_dropout)
    cfg = train_config(stage, "sft", model_path=assets.model_dir, objective=objective,
                       forget_file=rows, retain_file=None, output_dir=out,
                       max_length=row_length(run, assets.config), seed=run.demo.seed)
    started = time.time()
    train_run(cfg, progress=progress)
    return final, time.time() - started


def _load(model_dir: str):
    return mj.load_pretrained(model_dir)


def _evaluate(run: DemoRunConfig, assets: DemoAssets, model_dir: str, name: str, out_path: str,
              reference: Optional[str], judge, progress: bool) -> dict:
    if os.path.isfile(out_path):
        with open(out_path) as f:
            return json.load(f)
    cfg, params, tok = _load(model_dir)
    result = evaluate_tofu(cfg, params, tok, data_dir=assets.data_dir, forget_split=assets.split_names["forget"],
                           retain_split="retain_perturbed", retain_reference=reference,
                           max_examples=run.eval.max_examples, mc_samples=run.eval.mc_samples,
                           gen_length=run.eval.gen_length, steps=run.eval.steps, block_length=run.eval.gen_length,
                           privacy=False, fluency_judge=judge if judge is not None else (cfg, params),
                           model_name=name, progress=progress)
    results.write_result(result, out_path)
    return result


def _probe(run: DemoRunConfig, assets: DemoAssets, model_dir: str, out_path: str) -> dict:
    """The anchor probe of `model_dir` on the forget rows (``eval.anchor_probe``), cached at `out_path`."""
    if os.path.isfile(out_path):
        with open(out_path) as f:
            return json.load(f)
    cfg, params, tok = _load(model_dir)
    probe = anchor_probe(cfg, params, tok, demo_pairs(assets.world, "forget"), ratios=run.eval.anchor_ratios,
                         seed=run.demo.seed)
    write_json(out_path, probe)
    return probe


def _unlearn(run: DemoRunConfig, assets: DemoAssets, start_dir: str, out: str, cache: str, progress: bool,
             forget_people: Optional[list[int]] = None) -> str:
    """Trains the unlearning stage of ``run.objective`` from `start_dir` (the SFT model, or the
    previous round's model; MDU's anchor is this starting model) into `out`, forgetting the
    authors `forget_people` (None: the whole forget split)."""
    method = run.objective.method
    forget, retain = unlearning_rows(assets.world, method, forget_people)
    tag = "" if forget_people is None else "-people" + "_".join(map(str, forget_people))
    forget_file = write_json(os.path.join(cache, f"unlearn-{method}-forget{tag}.json"), forget)
    retain_file = write_json(os.path.join(cache, f"unlearn-{method}-retain.json"), retain) if retain else None
    objective = run.objective
    shutil.rmtree(out, ignore_errors=True)  # unlearning is what the demo shows: run it afresh
    stage = unlearn_stage(run, assets.config)
    if stage.batch_size > len(forget) + len(retain):
        # A method without a retain term on a small world (GA on the CI world's 10 forget rows):
        # every row in each batch rather than an error.
        stage = dataclasses.replace(stage, batch_size=len(forget) + len(retain))
    cfg = train_config(stage, "unlearn", model_path=start_dir, objective=objective,
                       forget_file=forget_file, retain_file=retain_file, output_dir=out,
                       max_length=row_length(run, assets.config), seed=run.demo.seed,
                       idk_file=os.path.join(assets.data_dir, "idontknow.json"))
    train_run(cfg, progress=progress)
    return os.path.join(out, "final")


def use_compilation_cache(folder: str) -> None:
    """Keeps XLA's compiled programs in `folder` (JAX's persistent compilation cache) unless the
    user already chose a cache: compilation is most of a rerun's time on a CPU, and the runs of
    a comparison compile the same programs again (seeds and models are arguments, not constants).
    A process-wide setting, so only the command-line entry points call it."""
    if not jax.config.jax_compilation_cache_dir:
        jax.config.update("jax_compilation_cache_dir", folder)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)


@dataclasses.dataclass
class Prepared:
    """What every unlearning run of a demo starts from: the assets, the SFT model, the twin, the
    twin's evaluation (the forget-quality reference) and the judge (the twin's config and params)."""

    assets: DemoAssets
    cache: str
    sft_dir: str
    twin_dir: str
    twin_path: str
    judge: Any
    before: dict
    twin: dict
    probe_before: dict
    timings: dict


def prepare(run: DemoRunConfig, *, progress: bool = True) -> Prepared:
    """Assets, SFT model and twin (cached), their evaluations and the SFT model's anchor probe."""
    out = os.path.abspath(run.output_dir)
    cache = os.path.join(out, "cache")
    os.makedirs(cache, exist_ok=True)
    assets = prepare_demo(demo_config(run), os.path.join(out, "assets"))
    timings: dict[str, float] = {}
    sft_dir, timings["sft_s"] = _sft(run, assets, "sft", cache, progress)
    twin_dir, timings["sft_retain_twin_s"] = _sft(run, assets, "sft_retain", cache, progress)
    eval_key = _key(EVAL_VERSION, run.eval, sft_stage(run, assets.config), assets.config,
                    row_length(run, assets.config), paraphrases(run, assets.config))
    t = time.time()
    twin_path = os.path.join(cache, f"eval-twin-{eval_key}.json")
    twin_cfg, twin_params, _ = _load(twin_dir)
    judge = (twin_cfg, twin_params)
    twin = _evaluate(run, assets, twin_dir, "retain-only twin", twin_path, None, judge, progress)
    before = _evaluate(run, assets, sft_dir, "before (SFT)", os.path.join(cache, f"eval-sft-{eval_key}.json"),
                       twin_path, judge, progress)
    probe = _probe(run, assets, sft_dir, os.path.join(cache, f"probe-sft-{eval_key}.json"))
    timings["eval_before_s"] = time.time() - t
    return Prepared(assets, cache, sft_dir, twin_dir, twin_path, judge, before, twin, probe, timings)


def unlearn_and_evaluate(run: DemoRunConfig, prep: Prepared, folder: str, label: str, *,
                         start_dir: Optional[str] = None, forget_people: Optional[list[int]] = None,
                         progress: bool = True) -> tuple[dict, dict, dict[str, float]]:
    """One unlearning run of ``run.objective`` from `start_dir` (default: the SFT model) into
    `folder`, forgetting `forget_people` (default: every forget author), evaluated on the whole
    forget split against the twin: (result, anchor probe, {'train_s', 'eval_s'})."""
    t = time.time()
    final = _unlearn(run, prep.assets, start_dir or prep.sft_dir, folder, prep.cache, progress, forget_people)
    train_s = time.time() - t
    t = time.time()
    result = evaluate_model(run, prep, final, label, os.path.join(folder, "eval.json"), progress=progress)
    probe = _probe(run, prep.assets, final, os.path.join(folder, "anchor_probe.json"))
    return result, probe, {"train_s": train_s, "eval_s": time.time() - t}


def evaluate_model(run: DemoRunConfig, prep: Prepared, model_dir: str, label: str, out_path: str, *,
                   progress: bool = True) -> dict:
    """The demo's TOFU evaluation of `model_dir` against the twin, cached at `out_path` (read back
    when the file is there)."""
    return _evaluate(run, prep.assets, model_dir, label, out_path, prep.twin_path, prep.judge, progress)


def run_key(run: DemoRunConfig, prep: Prepared) -> str:
    """A key of everything that determines one unlearning run and its evaluation: the world and
    model, the SFT recipe, the unlearning stage, the objective and the evaluation settings."""
    demo = prep.assets.config
    return _key(EVAL_VERSION, demo, sft_stage(run, demo), unlearn_stage(run, demo), run.objective, run.eval,
                row_length(run, demo), paraphrases(run, demo))


def _probe_line(name: str, probe: dict) -> str:
    full = probe["prompt_masked"].get("1")
    cond = probe["conditional"].get("1")
    if full is None or cond is None:
        return ""
    return (f"{name}: fully masked forget answers: prompt-masked p(true) {full['p_true']:.3f}, p(EOS) "
            f"{full['p_eos']:.3f}; with the prompt p(true) {cond['p_true']:.3f}, p(EOS) {cond['p_eos']:.3f}")


def run_demo(run: DemoRunConfig, *, progress: bool = True) -> dict[str, Any]:
    """The whole demo (or the sweep over ``run.taus`` / ``run.t_bands``); returns what it printed and wrote."""
    started = time.time()
    out = os.path.abspath(run.output_dir)
    prep = prepare(run, progress=progress)
    assets, timings = prep.assets, dict(prep.timings)
    method = run.objective.method
    swept, variants = sweep_objectives(run)
    results: dict[str, dict] = {"before (SFT)": prep.before}
    probes = {"before (SFT)": prep.probe_before}
    swept_results, models = [], {"sft": prep.sft_dir, "retain_twin": prep.twin_dir}
    for value, objective in variants:
        label, folder = run_label(objective), run_folder(objective)
        result, probes[label], t = unlearn_and_evaluate(dataclasses.replace(run, objective=objective), prep,
                                                        os.path.join(out, folder), label, progress=progress)
        results[label] = result
        timings[f"{folder}_s"], timings[f"eval_{folder}_s"] = t["train_s"], t["eval_s"]
        models[folder] = os.path.join(out, folder, "final")
        swept_results.append((value, result))
    results["retain-only twin"] = prep.twin
    timings["total_s"] = time.time() - started
    table = report.summary_table(results)
    world = assets.world
    summary = {"output_dir": out, "table": table, "method": method,
               "objective": dataclasses.asdict(run.objective),
               "world": {"seed": world.seed, "people": {s: len(getattr(world, s)) for s in ("forget", "retain", "holdout")},
                         "questions": {s: len(world.facts_of(s)) for s in ("forget", "retain", "holdout")},
                         "forget_fact_chance": fact_chance(world, "forget")},
               "model": {"family": assets.model_config.family, "params": assets.model_config.num_params()},
               "stages": {"sft": dataclasses.asdict(sft_stage(run, assets.config)),
                          "sft_retain_twin": dataclasses.asdict(twin_stage(run, assets.config, world)),
                          "unlearn": dataclasses.asdict(unlearn_stage(run, assets.config))},
               "timings_s": {k: round(v, 1) for k, v in timings.items()}, "machine": machine_info(),
               "models": models, "aggregates": {name: r["aggregates"] for name, r in results.items()},
               "anchor_probe": probes}
    if swept is not None:
        summary.update(_write_sweep(swept, swept_results, prep.before, out))
    summary["plot"] = report.plot_bars(results, os.path.join(out, "before_after.png"),
                                       f"{METHOD_LABELS[method]} on the generated demo world: before vs after")
    write_json(os.path.join(out, "summary.json"), summary)
    print(f"\nDemo: {len(world.facts_of('forget'))} forget questions ({len(world.forget)} authors), "
          f"{len(world.facts_of('retain'))} retain questions ({len(world.retain)} authors), tiny "
          f"{assets.model_config.family} ({assets.model_config.num_params() / 1e6:.2f}M params); "
          f"forget fact recall by chance ~{summary['world']['forget_fact_chance']:.3f}")
    print(table)
    for name, probe in probes.items():
        line = _probe_line(name, probe)
        if line:
            print(line)
    print(f"\ntimes (s): {summary['timings_s']}")
    if swept is not None:
        print("\n" + summary["sweep_table"])
    print(f"wrote {out}/summary.json, {summary['plot']}"
          + (f", {summary['sweep_csv']}, {summary['sweep_plot']}" if swept is not None else ""))
    return summary


SWEEP_PLOTS = {"tau": "tau_tradeoff.png", "t_range": "t_band_tradeoff.png"}
SWEEP_TITLES = {"tau": "MDU privacy-utility trade-off over τ",
                "t_range": "timestep bands: unlearning only at masking ratios t in [lo, hi]"}


def _write_sweep(swept: str, pairs: list[tuple[Any, dict]], before: dict, out: str) -> dict[str, Any]:
    """The sweep's rows, table (``sweep_<key>.csv``) and trade-off plot: {'sweep', 'sweep_table',
    'sweep_csv', 'sweep_plot'} for ``summary.json``."""
    rows = sweep_plot.sweep_rows(pairs, param=swept, columns=SWEEP_COLUMNS)
    csv_path = sweep_plot.write_table(rows, os.path.join(out, f"sweep_{swept}.csv"), param=swept,
                                      columns=SWEEP_COLUMNS)
    base = {k: before["aggregates"].get(k) for k in SWEEP_COLUMNS}
    png = sweep_plot.plot_rows(rows, os.path.join(out, SWEEP_PLOTS[swept]), title=SWEEP_TITLES[swept],
                               baseline=base, param=swept)
    return {"sweep": rows, "sweep_table": sweep_plot.table_text(rows, param=swept, columns=SWEEP_COLUMNS),
            "sweep_csv": csv_path, "sweep_plot": png}


def load_demo_config(path: Optional[str], overrides: list[str], cls: type = DemoRunConfig) -> DemoRunConfig:
    """The demo config from a YAML file with a top-level ``demo:`` section (or the defaults);
    `cls`: ``DemoRunConfig`` or a subclass with a section of its own (``compare``, ``sequential``)."""
    data = structured.load_yaml(path) if path else {}
    data = structured.apply_overrides(data, overrides, cls)
    return structured.from_dict(cls, data)


def has_section(path: str, section: str) -> bool:
    """Whether the YAML file at `path` has a top-level `section` (False when it is not YAML)."""
    try:
        return section in structured.load_yaml(path)
    except ConfigKeyError:
        return False


def is_demo_config(path: str) -> bool:
    return has_section(path, "demo")


def command(load: Callable[[], DemoRunConfig], work: Callable[[Any], Any]) -> int:
    """Runs a demo command: `load` the config (and check it: nothing is written before), keep
    XLA's compiled programs under its output folder, then `work` on it. A bad config or input
    prints ``error: ...`` and returns 2; else returns 0."""
    try:
        run = load()
        use_compilation_cache(os.path.join(os.path.abspath(run.output_dir), "cache", "xla"))
        work(run)
    except (ConfigKeyError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


def _with_sweep(run: DemoRunConfig, sweep: Optional[str]) -> DemoRunConfig:
    if sweep:
        key, values = parse_sweep(sweep)
        if key not in ("taus", "objective.tau"):
            raise ConfigKeyError(f"--sweep {key}: the demo sweeps tau only (--sweep objective.tau=0,0.5,1)")
        run.taus = [float(v) for v in values]
        run.validate()
    return run


def main(overrides: list[str], *, config: Optional[str] = None, sweep: Optional[str] = None,
         progress: bool = True) -> int:
    """Entry point used by ``python -m mdu_jax.train`` without a training config."""
    return command(lambda: _with_sweep(load_demo_config(config, overrides), sweep),
                   lambda run: run_demo(run, progress=progress))
