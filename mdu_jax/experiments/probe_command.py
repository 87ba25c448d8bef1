"""``python -m mdu_jax.evaluate --probes ...``: the leakage probes from the command line.

``add_probe_arguments`` adds the probe flags to the evaluation parser; ``run_probe_command``
resolves the models (``--model`` / ``--baseline`` / ``--before``, or ``--demo-dir``) and the rows
(TOFU-layout splits, or an RWKU target's probes: ``eval.probes.rwku_rows``), checks
every input before any model runs, runs ``experiments.probes.run_probes``, prints the table and
writes the JSON in one piece (temporary file + rename), so a bad input leaves nothing on disk;
the infilling and relearning curves go beside it as PNGs (``eval.probes.plots``).
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import os
from typing import Any

from mdu_jax.checkpoints import CheckpointError, load_pretrained, write_text
from mdu_jax.data.sources import load_tofu
from mdu_jax.eval.probes.knowledge import SamplerSettings
from mdu_jax.eval.probes.plots import write_probe_plots
from mdu_jax.eval.probes.rwku_rows import FORGET_SETS, NEIGHBOR_SETS, rwku_rows
from mdu_jax.eval.probes.table import format_probe_table
from mdu_jax.eval.tofu import eval_split_name, sampler_settings
from mdu_jax.experiments.probe_targets import DEMO_LABELS, ProbeTargets, from_demo_dir
from mdu_jax.experiments.probes import PROBES, ProbeSettings, run_probes
from mdu_jax.models.config import ModelConfig

EPILOG = """\
Probes (--probes all, or a comma-separated subset of quantization,relearn,infilling,generation):
quantization: forget (and retain) knowledge after int8 / int4 round-to-nearest per-channel weights;
relearn: fine-tune k steps on part of the forget rows, knowledge of the held-out part before/after;
infilling: reveal a fraction r of each forget answer's tokens, share of the hidden ones recovered;
generation: sample each forget question N times at temperature T, best-of-N and mean key-fact hits;
the same for the rows' paraphrased questions where they have them (TOFU, the demo world).
Knowledge = key-fact recall of greedy answers (ROUGE-L recall where rows have no 'fact'), answer
probability. --benchmark rwku --subject NAME: the target's forget probes (levels 1-3) are the forget
rows and its neighbour probes the retain rows, scored by ROUGE-L recall. --demo-dir takes a demo output folder (python -m mdu_jax.train): its unlearned run(s),
the retain-only twin and the SFT model, its data, sampler and unlearning learning rate.
"""


def _floats(text: str) -> tuple[float, ...]:
    return tuple(float(x) for x in text.split(",") if x.strip())


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in text.split(",") if x.strip())


def _names(text: str) -> tuple[str, ...]:
    return tuple(x.strip() for x in text.split(",") if x.strip())


def add_probe_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``probes`` argument group of ``python -m mdu_jax.evaluate``."""
    g = parser.add_argument_group("leakage probes (--probes)")
    g.add_argument("--probes", help=f"run probes instead of the benchmark: 'all' or some of {','.join(PROBES)}")
    g.add_argument("--demo-dir", help="a demo output folder: its unlearned run(s), retain-only twin, SFT model, data")
    g.add_argument("--demo-run", help="with --demo-dir: only this unlearning run (e.g. mdu_tau1)")
    g.add_argument("--baseline", action="append", default=[], metavar="[LABEL=]PATH",
                   help="a reference checkpoint (retain-only model, another method), optionally labelled "
                        "(npo=runs/npo/final); repeatable, also beside --demo-dir's models")
    g.add_argument("--before", help="the checkpoint before unlearning (the SFT model)")
    g.add_argument("--quant-bits", default="int8,int4", help="quantisation widths (default int8,int4)")
    g.add_argument("--reveal-ratios", default="0.25,0.5,0.75,0.9", help="infilling reveal ratios in [0, 1)")
    g.add_argument("--reveal-orders", default="random", help="infilling orders: random, prefix, least_informative")
    g.add_argument("--relearn-steps", default="10", help="relearning step counts, e.g. 5,20 (default 10)")
    g.add_argument("--relearn-lr", type=float, help="relearning learning rate (default: the demo's unlearning rate, else 1e-5)")
    g.add_argument("--relearn-fraction", type=float, default=0.5, help="share of forget rows fine-tuned on")
    g.add_argument("--relearn-batch-size", type=int, default=8, help="rows per relearning step")
    g.add_argument("--leak-samples", type=int, default=8, help="samples per forget question (default 8)")
    g.add_argument("--leak-temperature", type=float, default=1.0, help="sampling temperature (> 0)")
    g.add_argument("--leak-algorithms", help="remasking algorithms, e.g. low_confidence,random (default: the family's)")
    g.add_argument("--no-leak-paraphrased", action="store_true",
                   help="skip sampling the forget rows' paraphrased questions (run where the rows have them)")


def _baselines(values: list[str]) -> dict[str, str]:
    """``--baseline [LABEL=]PATH`` values as {column label: path}; unlabelled ones are 'baseline'
    (or 'baseline i' when there are several)."""
    out: dict[str, str] = {}
    for i, value in enumerate(values):
        label, sep, path = value.partition("=")
        if not sep or os.sep in label:
            label, path = ("baseline" if len(values) == 1 else f"baseline {i + 1}"), value
        if not label.strip() or not path:
            raise ValueError(f"--baseline {value!r}: expected PATH or LABEL=PATH")
        if label in out:
            raise ValueError(f"--baseline: the label {label!r} is given twice")
        out[label] = path
    return out


def _targets(args: argparse.Namespace) -> ProbeTargets:
    baselines = _baselines(args.baseline)
    if args.demo_dir:
        targets = from_demo_dir(args.demo_dir, unlearned=args.demo_run)
        if args.model or args.before:
            raise ValueError("--demo-dir names its own unlearned and SFT models; leave out --model / --before "
                             "(or leave out --demo-dir)")
        clash = set(baselines) & set(targets.models)
        if clash:
            raise ValueError(f"--baseline: the label(s) {sorted(clash)} name a model of --demo-dir already")
        # The other methods sit between the demo's unlearned run(s) and its two references.
        runs = {k: v for k, v in targets.models.items() if k not in DEMO_LABELS.values()}
        refs = {k: v for k, v in targets.models.items() if k in DEMO_LABELS.values()}
        models = {**runs, **baselines, **refs}
        _distinct(models)
        return dataclasses.replace(targets, models=models)
    if args.demo_run:
        raise ValueError("--demo-run is a --demo-dir option")
    if not args.model:
        raise ValueError("--probes needs --model (the unlearned checkpoint) or --demo-dir")
    models = {"unlearned": args.model, **baselines}
    if args.before:
        models["before"] = args.before
    _distinct(models)
    return ProbeTargets(models=models)


def _distinct(models: dict[str, str]) -> None:
    if len(set(map(os.path.abspath, models.values()))) < len(models):
        raise ValueError(f"the same checkpoint is named twice: {models}")


def _settings(args: argparse.Namespace, targets: ProbeTargets, cfg: ModelConfig | None) -> ProbeSettings:
    """The probe settings of the flags; the sampler is the open-unlearning profile's for `cfg`'s
    family, then the demo's, then the flags' (no `cfg`: the defaults, for validating the rest)."""
    probes = PROBES if args.probes.strip() == "all" else _names(args.probes)
    sampler: dict[str, Any] = {}
    if cfg is not None:
        flags = dict(gen_length=args.gen_length, steps=args.steps, block_length=args.block_length)
        chosen = {**targets.sampler, **{k: v for k, v in flags.items() if v is not None}}
        sampler = {k: v for k, v in sampler_settings(cfg, "open-unlearning", **chosen).items()
                   if k in SamplerSettings.__dataclass_fields__}
    lr = args.relearn_lr if args.relearn_lr is not None else targets.relearn_lr or 1e-5
    return ProbeSettings(probes=probes, bits=_names(args.quant_bits), ratios=_floats(args.reveal_ratios),
                         orders=_names(args.reveal_orders), relearn_steps=_ints(args.relearn_steps),
                         relearn_fraction=args.relearn_fraction, relearn_lr=lr,
                         relearn_batch_size=args.relearn_batch_size, leak_samples=args.leak_samples,
                         leak_temperature=args.leak_temperature,
                         leak_algorithms=_names(args.leak_algorithms) if args.leak_algorithms else None,
                         leak_paraphrased=not args.no_leak_paraphrased,
                         sampler=SamplerSettings(**sampler), mc_samples=32 if args.mc_samples is None else args.mc_samples,
                         seed=args.seed or 0, batch_size=args.batch_size)


def _load(path: str, dtype: str | None):
    cfg, params, _ = load_pretrained(path, dtype=dtype, tokenizer=False)
    return cfg, params


def output_path(args: argparse.Namespace, targets: ProbeTargets) -> str:
    """--output, else probes.json in the demo folder, else beside the unlearned checkpoint."""
    if args.output:
        return args.output
    return os.path.join(args.demo_dir or next(iter(targets.models.values())), "probes.json")


def run_probe_command(args: argparse.Namespace) -> int:
    """Runs the probes the parsed flags ask for; raises ValueError / DataError / CheckpointError on
    bad input (before writing anything). Returns 0."""
    rwku = args.benchmark == "rwku"
    if rwku and (args.demo_dir or args.forget_split):
        raise ValueError("--benchmark rwku: the probes read the --subject's RWKU forget probes; leave out "
                         "--demo-dir / --forget-split (TOFU-layout flags)")
    targets = _targets(args)
    for flag, value in (("--reveal-ratios", args.reveal_ratios), ("--relearn-steps", args.relearn_steps)):
        try:
            (_floats if flag == "--reveal-ratios" else _ints)(value)
        except ValueError:
            raise ValueError(f"{flag}: expected comma-separated numbers, got {value!r}") from None
    out = output_path(args, targets)
    if os.path.isdir(out):
        raise ValueError(f"--output {out}: is a folder; give a file path")
    _settings(args, targets, None).validate()  # bad probe flags fail before any model loads
    data_dir = args.data_dir or targets.data_dir
    if rwku:
        keep_retain = args.retain_split != "none"
        forget_split = "+".join(FORGET_SETS)
        retain_split = "+".join(NEIGHBOR_SETS) if keep_retain else "none"
        forget_rows = rwku_rows(args.subject, data_dir, FORGET_SETS)
        retain_rows = rwku_rows(args.subject, data_dir, NEIGHBOR_SETS) if keep_retain else []
    else:
        forget_split = eval_split_name(args.forget_split or targets.forget_split or "forget10")
        retain_split = args.retain_split
        forget_rows = load_tofu(forget_split, data_dir)
        retain_rows = load_tofu(args.retain_split, data_dir) if args.retain_split != "none" else []
    if args.max_examples:
        forget_rows, retain_rows = forget_rows[: args.max_examples], retain_rows[: args.max_examples]
    # The tokenizer and config of the first model now (a bad folder fails before any probe runs);
    # every model's weights only when its turn comes (run_probes holds one model at a time).
    for path in targets.models.values():
        if not os.path.isdir(path):
            raise CheckpointError(f"{path}: no such checkpoint folder")
    first_label, first = next(iter(targets.models.items()))
    cfg, params, tokenizer = load_pretrained(first, dtype=args.dtype)
    if tokenizer is None:
        raise ValueError(f"{first}: no tokenizer in the checkpoint folder")
    settings = _settings(args, targets, cfg)
    loaders = {label: functools.partial(_load, path, args.dtype) for label, path in targets.models.items()}
    first_model = [(cfg, params)]
    del params
    loaders[first_label] = first_model.pop  # handed over once, then only run_probes holds it
    result = run_probes(loaders, tokenizer, forget_rows, settings, retain_rows=retain_rows,
                        model_paths={label: os.path.abspath(p) for label, p in targets.models.items()})
    result["data"] = {"benchmark": args.benchmark, "subject": args.subject if rwku else None,
                      "data_dir": os.path.abspath(data_dir) if data_dir else None,
                      "forget_split": forget_split, "retain_split": retain_split}
    table = format_probe_table(result)
    result["table"] = table
    result["plots"] = write_probe_plots(result, out)
    write_text(out, json.dumps(result, indent=1) + "\n")
    print(table)
    print(f"wrote {out}" + "".join(f", {p}" for p in result["plots"].values()))
    return 0


__all__ = ["EPILOG", "add_probe_arguments", "output_path", "run_probe_command"]
