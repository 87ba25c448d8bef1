"""The embedded default run: ``python -m mdu_jax.train`` with no arguments.

Offline, on a CPU, in minutes: generate a TOFU-style world of fictitious authors, fit a
tokenizer, fine-tune a tiny LLaDA on every fact until it knows them (and a retain-only twin for
forget quality), unlearn the forget authors with MDU, evaluate before and after with the real
TOFU evaluation code, print the table, and write checkpoints, result JSONs and a plot.
SFT results are cached under ``<output_dir>/cache`` keyed by everything that determines them,
so a second run goes straight to unlearning.

    python -m mdu_jax.train                                   # the demo, default sizes
    python -m mdu_jax.train demo.size=ci mdu.tau=0.5          # overrides, dotted
    python -m mdu_jax.train --config configs/demo_tau_sweep.yaml   # the tau sweep + trade-off plot
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
from typing import Any, Optional

import mdu_jax as mj
from mdu_jax import typed_config as structured
from mdu_jax.demo.assets import DemoAssets, DemoConfig, prepare_demo
from mdu_jax.demo.world import demo_pairs
from mdu_jax.eval import results
from mdu_jax.eval import sweep as sweep_plot
from mdu_jax.eval.tofu import evaluate_tofu
from mdu_jax.training import TrainConfig, parse_sweep
from mdu_jax.training import run as train_run
from mdu_jax.typed_config import ConfigKeyError

log = logging.getLogger("mdu_jax.demo")


@dataclasses.dataclass
class DemoSection:
    size: str = "default"                # "default" or "ci" (the reduced demo the tests run)
    seed: int = 0
    family: str = "llada"
    paraphrases: Optional[bool] = None   # SFT on paraphrased answers too (see sft_rows); None: the size's choice

    def validate(self):
        if self.size not in ("default", "ci"):
            raise ConfigKeyError(f"demo.size: expected 'default' or 'ci', got {self.size!r}")
        if self.family not in ("llada", "dream"):
            raise ConfigKeyError(f"demo.family: expected 'llada' or 'dream', got {self.family!r}")


@dataclasses.dataclass
class StageSection:
    """One training stage (SFT or MDU) of the demo; unset SFT values come from the demo size's
    measured suggestions (``DemoConfig.sft_*``)."""

    steps: Optional[int] = None
    lr: Optional[float] = None
    batch_size: Optional[int] = None
    warmup_ratio: float = 0.05
    tau: float = 0.5                     # MDU only
    retain_weight: float = 1.0           # MDU only


@dataclasses.dataclass
class EvalSection:
    mc_samples: int = 32
    gen_length: int = 24
    steps: int = 24
    max_examples: Optional[int] = None


@dataclasses.dataclass
class DemoRunConfig:
    """The demo's knobs; everything else comes from the shipped training stack's defaults."""

    demo: DemoSection = dataclasses.field(default_factory=DemoSection)
    sft: StageSection = dataclasses.field(default_factory=StageSection)
    # lambda = 8: the forget and retain answers share their templates, so a tiny model forgets
    # the forget authors without losing the retain ones only with a strong retain term.
    # steps / lr None: the demo size's (150 / 5e-4 default, 50 / 2.5e-4 ci). tau = 1: the plain
    # prompt-masked anchor. Measured on the default world (150 steps): forget ROUGE-L 0.80 -> 0.31
    # at tau 1, but 0.45 at tau 0.5 / 0.75 (configs/demo_tau_sweep.yaml draws the trade-off).
    mdu: StageSection = dataclasses.field(default_factory=lambda: StageSection(steps=None, lr=None, batch_size=32,
                                                                              warmup_ratio=0.0, tau=1.0,
                                                                              retain_weight=8.0))
    eval: EvalSection = dataclasses.field(default_factory=EvalSection)
    taus: Optional[list[float]] = None   # set: run the tau sweep and draw the trade-off plot
    output_dir: str = "runs/demo"
    max_length: Optional[int] = None     # tokens per row; None: the demo size's (48 default, 32 ci)


SIZES = {
    "default": lambda seed, family: DemoConfig(seed=seed, family=family),
    "ci": lambda seed, family: DemoConfig.ci(seed=seed, family=family),
}


def demo_config(run: DemoRunConfig) -> DemoConfig:
    return SIZES[run.demo.size](run.demo.seed, run.demo.family)


def sft_rows(world, split: str, paraphrases: bool) -> list[dict]:
    """SFT rows of `split`; with `paraphrases`, every author fact also in its paraphrased form
    (paraphrased question -> paraphrased answer).

    TOFU's truth ratio compares the paraphrased answer with perturbed ones. A large model can
    state what it was taught in other words from its pre-training; a 0.3M-parameter model cannot,
    so the demo teaches the fact in both phrasings (each with its own question, so no question
    has two targets). Then the fine-tuned model prefers the true paraphrase and the retain-only
    twin does not, and forget quality measures unlearning as it does on TOFU.
    """
    rows = demo_pairs(world, split)
    if paraphrases:
        people = ("retain", "forget") if split == "sft" else ("retain",)
        rows += [{"question": f.paraphrased_question, "answer": f.paraphrased_answer}
                 for part in people for f in world.facts_of(part)]
    return rows


def paraphrases(run: DemoRunConfig, demo: DemoConfig) -> bool:
    """Whether SFT also teaches the paraphrased answers (``demo.paraphrases``, else the size's)."""
    return demo.sft_paraphrases if run.demo.paraphrases is None else bool(run.demo.paraphrases)


def row_length(run: DemoRunConfig, demo: DemoConfig) -> int:
    """Tokens per training row (``max_length``, else the demo size's)."""
    return run.max_length or demo.max_length


def mdu_stage(run: DemoRunConfig, demo: DemoConfig) -> StageSection:
    """The MDU stage with the demo size's step count and learning rate filled in when unset."""
    return dataclasses.replace(run.mdu, steps=run.mdu.steps or demo.mdu_steps, lr=run.mdu.lr or demo.mdu_lr)


def sft_stage(run: DemoRunConfig, demo: DemoConfig) -> StageSection:
    """The SFT stage with the demo size's measured defaults filled in."""
    s = run.sft
    return dataclasses.replace(s, steps=s.steps or demo.sft_steps, lr=s.lr or demo.sft_lr,
                               batch_size=s.batch_size or demo.sft_batch_size)


def _key(*parts: Any) -> str:
    blob = json.dumps([p if not dataclasses.is_dataclass(p) else dataclasses.asdict(p) for p in parts],
                      sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:12]


def _write_rows(path: str, rows: list[dict]) -> str:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(rows, f)
    os.replace(tmp, path)
    return path


def _train_config(run: DemoRunConfig, stage: StageSection, *, model_path: str, method: str, forget: str,
                  retain: Optional[str], output_dir: str, max_length: int, tau: float | None = None) -> TrainConfig:
    # SFT trains on visible EOS padding (LLaDA's SFT recipe) so the model learns where answers
    # end; MDU follows the MDU reference (padding never a target).
    sft = method == "sft"
    data = {
        "model": {"path": model_path, "dtype": "float32", "param_dtype": "float32", "anchor_dtype": "float32"},
        "data": {"benchmark": "files", "forget_files": [forget], "retain_files": [retain] if retain else [],
                 "max_length": max_length, "buckets": [max_length // 2, max_length],
                 "truncation": "error", "pad_labels": "eos" if sft else "ignore", "attend_padding": sft},
        "objective": {"method": method, "tau": stage.tau if tau is None else tau,
                      "retain_weight": stage.retain_weight},
        "optim": {"lr": stage.lr, "warmup_ratio": stage.warmup_ratio, "schedule": "cosine"},
        "parallel": {"mesh": {"data": 1, "fsdp": 1, "tensor": 1}, "num_devices": 1},
        "checkpoint": {"every_steps": 0, "keep": 1},
        "batch_size": stage.batch_size, "max_steps": stage.steps, "seed": run.demo.seed,
        "log_every": max(1, stage.steps // 20), "tensorboard": False, "output_dir": output_dir,
    }
    return structured.from_dict(TrainConfig, data)


def _sft(run: DemoRunConfig, assets: DemoAssets, split: str, cache: str, progress: bool) -> tuple[str, float]:
    """Fine-tunes the initial model on `split` ('sft' or 'sft_retain'); cached by its config."""
    stage = sft_stage(run, assets.config)
    key = _key(assets.config, stage, row_length(run, assets.config), split, paraphrases(run, assets.config))
    out = os.path.join(cache, f"{split}-{key}")
    final = os.path.join(out, "final")
    if os.path.isdir(final):
        log.info("%s: cached (%s)", split, final)
        return final, 0.0
    rows = _write_rows(os.path.join(cache, f"{split}-{key}.json"),
                       sft_rows(assets.world, split, paraphrases(run, assets.config)))
    cfg = _train_config(run, stage, model_path=assets.model_dir, method="sft", forget=rows, retain=None,
                        max_length=row_length(run, assets.config),
                        output_dir=out)
    started = time.time()
    train_run(cfg, progress=progress)
    return final, time.time() - started


def _evaluate(run: DemoRunConfig, assets: DemoAssets, model_dir: str, name: str, out_path: str,
              reference: Optional[str], progress: bool) -> dict:
    if os.path.isfile(out_path):
        with open(out_path) as f:
            return json.load(f)
    cfg, params, tok = mj.load_pretrained(model_dir)
    result = evaluate_tofu(cfg, params, tok, data_dir=assets.data_dir, forget_split=assets.split_names["forget"],
                           retain_split="retain_perturbed", retain_reference=reference,
                           max_examples=run.eval.max_examples, mc_samples=run.eval.mc_samples,
                           gen_length=run.eval.gen_length, steps=run.eval.steps, block_length=run.eval.gen_length,
                           privacy=False, model_name=name, progress=progress)
    results.write_result(result, out_path)
    return result


ROWS = [("forget ROUGE-L recall", "forget_Q_A_ROUGE"), ("retain ROUGE-L recall", "retain_Q_A_ROUGE"),
        ("forget answer probability", "forget_Q_A_Prob"), ("retain answer probability", "retain_Q_A_Prob"),
        ("forget truth ratio", "forget_truth_ratio"), ("forget quality (KS p)", "forget_quality"),
        ("model utility", "model_utility")]


def summary_table(results_by_name: dict[str, dict]) -> str:
    """A plain-text table of the headline metrics of each evaluated model (columns)."""
    names = list(results_by_name)
    width = max(len(label) for label, _ in ROWS) + 2
    col = max(14, max(len(n) for n in names) + 2)
    lines = [f"{'metric':<{width}}" + "".join(f"{n:>{col}}" for n in names)]
    for label, key in ROWS:
        cells = []
        for n in names:
            v = results_by_name[n]["aggregates"].get(key)
            cells.append(f"{v:>{col}.4g}" if isinstance(v, (int, float)) else f"{'-':>{col}}")
        lines.append(f"{label:<{width}}" + "".join(cells))
    return "\n".join(lines)


def _plot(results_by_name: dict[str, dict], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = [k for _, k in ROWS if all(isinstance(r["aggregates"].get(k), (int, float))
                                      for r in results_by_name.values())]
    fig, ax = plt.subplots(figsize=(8, 3.6))
    width = 0.8 / len(results_by_name)
    for i, (name, res) in enumerate(results_by_name.items()):
        ax.bar([j + i * width for j in range(len(keys))], [res["aggregates"][k] for k in keys], width, label=name)
    ax.set_xticks([j + width * (len(results_by_name) - 1) / 2 for j in range(len(keys))])
    ax.set_xticklabels([k.replace("_", "\n") for k in keys], fontsize=8)
    ax.set_ylim(0, 1.05)
    ax.set_title("MDU on the generated demo world: before vs after unlearning")
    ax.legend(fontsize=8)
    fig.tight_layout()
    tmp = path + ".tmp.png"
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    os.replace(tmp, path)


def run_demo(run: DemoRunConfig, *, progress: bool = True) -> dict[str, Any]:
    """The whole demo (or the tau sweep when ``run.taus`` is set); returns what it printed and wrote."""
    started = time.time()
    out = os.path.abspath(run.output_dir)
    os.makedirs(out, exist_ok=True)
    cache = os.path.join(out, "cache")
    os.makedirs(cache, exist_ok=True)
    assets = prepare_demo(demo_config(run), os.path.join(out, "assets"))
    timings: dict[str, float] = {}
    sft_dir, timings["sft_s"] = _sft(run, assets, "sft", cache, progress)
    twin_dir, timings["sft_retain_twin_s"] = _sft(run, assets, "sft_retain", cache, progress)
    eval_key = _key(run.eval, sft_stage(run, assets.config), assets.config, row_length(run, assets.config),
                    paraphrases(run, assets.config))
    t = time.time()
    twin = _evaluate(run, assets, twin_dir, "retain-only twin", os.path.join(cache, f"eval-twin-{eval_key}.json"),
                     None, progress)
    twin_path = os.path.join(cache, f"eval-twin-{eval_key}.json")
    before = _evaluate(run, assets, sft_dir, "before (SFT)", os.path.join(cache, f"eval-sft-{eval_key}.json"),
                       twin_path, progress)
    timings["eval_before_s"] = time.time() - t
    forget_rows = _write_rows(os.path.join(cache, "forget.json"), demo_pairs(assets.world, "forget"))
    # The retain term also covers the background facts (the famous authors and towns), so that
    # unlearning the forget authors keeps the general knowledge model utility measures.
    retain_rows = _write_rows(os.path.join(cache, "retain.json"),
                              demo_pairs(assets.world, "retain") + demo_pairs(assets.world, "background"))
    taus = run.taus if run.taus is not None else [run.mdu.tau]
    results: dict[str, dict] = {"before (SFT)": before}
    sweep_rows = []
    for tau in taus:
        mdu_out = os.path.join(out, f"mdu_tau{tau:g}")
        shutil.rmtree(mdu_out, ignore_errors=True)  # unlearning is what the demo shows: run it afresh
        cfg = _train_config(run, mdu_stage(run, assets.config), model_path=sft_dir, method="mdu",
                            forget=forget_rows, retain=retain_rows, output_dir=mdu_out,
                            max_length=row_length(run, assets.config), tau=tau)
        t = time.time()
        train_run(cfg, progress=progress)
        timings[f"mdu_tau{tau:g}_s"] = time.time() - t
        t = time.time()
        after = _evaluate(run, assets, os.path.join(mdu_out, "final"), f"after MDU (tau={tau:g})",
                          os.path.join(mdu_out, "eval.json"), twin_path, progress)
        timings[f"eval_tau{tau:g}_s"] = time.time() - t
        results[f"after (tau={tau:g})"] = after
        sweep_rows.append({"tau": tau, **{k: after["aggregates"].get(k) for _, k in ROWS}})
    results["retain-only twin"] = twin
    timings["total_s"] = time.time() - started
    table = summary_table(results)
    summary = {"output_dir": out, "table": table, "timings_s": {k: round(v, 1) for k, v in timings.items()},
               "models": {"sft": sft_dir, "retain_twin": twin_dir,
                          **{f"mdu_tau{tau:g}": os.path.join(out, f"mdu_tau{tau:g}", "final") for tau in taus}},
               "aggregates": {name: r["aggregates"] for name, r in results.items()}}
    if run.taus is not None:
        summary["sweep"] = sweep_rows
        summary["sweep_plot"] = sweep_plot.plot_tradeoff(
            [results[f"after (tau={tau:g})"] for tau in taus], taus, os.path.join(out, "tau_tradeoff.png"),
            baseline=before)
    plot_path = os.path.join(out, "before_after.png")
    _plot({k: v for k, v in results.items()}, plot_path)
    summary["plot"] = plot_path
    with open(os.path.join(out, "summary.json"), "w") as f:
        json.dump(summary, f, indent=2)
    print(f"\nMDU demo: {len(assets.world.forget)} forget / {len(assets.world.retain)} retain authors, "
          f"tiny {assets.model_config.family} ({assets.model_config.num_params() / 1e6:.2f}M params)")
    print(table)
    print(f"\ntimes (s): {summary['timings_s']}")
    print(f"wrote {out}/summary.json, {plot_path}" + (f", {summary.get('sweep_plot')}" if run.taus else ""))
    return summary


def load_demo_config(path: Optional[str], overrides: list[str]) -> DemoRunConfig:
    """The demo config from a YAML file with a top-level ``demo:`` section (or the defaults)."""
    data = structured.load_yaml(path) if path else {}
    data = structured.apply_overrides(data, overrides, DemoRunConfig)
    return structured.from_dict(DemoRunConfig, data)


def is_demo_config(path: str) -> bool:
    try:
        return "demo" in structured.load_yaml(path)
    except ConfigKeyError:
        return False


def main(overrides: list[str], *, config: Optional[str] = None, sweep: Optional[str] = None,
         progress: bool = True) -> int:
    """Entry point used by ``python -m mdu_jax.train`` without a training config."""
    try:
        run = load_demo_config(config, overrides)
        if sweep:
            key, values = parse_sweep(sweep)
            if key not in ("mdu.tau", "taus", "objective.tau"):
                raise ConfigKeyError(f"--sweep {key}: the demo sweeps tau only (--sweep mdu.tau=0,0.5,1)")
            run.taus = [float(v) for v in values]
        run_demo(run, progress=progress)
    except (ConfigKeyError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0
