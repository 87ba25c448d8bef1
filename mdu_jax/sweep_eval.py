"""``python -m mdu_jax.sweep_eval``: MDU for a list of tau values, a TOFU evaluation of each, and
the privacy-utility trade-off (PNG + table).

    python -m mdu_jax.sweep_eval --config configs/tofu_llada8b.yaml --taus 0,0.25,0.5,0.75,1 \\
        --retain-reference runs/retain90/eval_tofu.json
    python -m mdu_jax.sweep_eval --results 0=runs/a/eval_tofu.json 1=runs/b/eval_tofu.json --out-dir runs/plot

Each run trains into ``<output_dir>/tau=<v>/`` (``mdu_jax.train.run``; an interrupted sweep
resumes) and writes ``eval_tofu.json`` there; the sweep writes ``sweep_tau.csv`` and
``sweep_tau.png`` in ``output_dir`` and prints the table.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

log = logging.getLogger("mdu_jax.sweep_eval")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m mdu_jax.sweep_eval",
                                description="Train MDU for each tau, evaluate each on TOFU, plot forget quality "
                                            "(or forget ROUGE) against model utility.")
    p.add_argument("--config", help="training YAML (as for python -m mdu_jax.train)")
    p.add_argument("overrides", nargs="*", help="key=value overrides of the training config")
    p.add_argument("--taus", default="0,0.25,0.5,0.75,1", help="comma-separated tau values")
    p.add_argument("--results", nargs="+", metavar="TAU=JSON", help="plot existing result files instead of training")
    p.add_argument("--baseline", metavar="JSON", help="result of the model before unlearning (drawn as a star)")
    p.add_argument("--out-dir", help="where the table and PNG go (default: the config's output_dir)")
    p.add_argument("--y", choices=("forget_quality", "forget_Q_A_ROUGE"),
                   help="y axis (default: forget quality when available, else forget ROUGE)")
    g = p.add_argument_group("evaluation (see python -m mdu_jax.evaluate --help)")
    g.add_argument("--data-dir", help="TOFU data folder (default: the training config's data.data_dir)")
    g.add_argument("--forget-split", help="default: the training config's data.forget_split")
    g.add_argument("--retain-reference", help="the retain-only model's result JSON (forget quality)")
    g.add_argument("--max-examples", type=int)
    g.add_argument("--mc-samples", type=int, default=128)
    g.add_argument("--gen-length", type=int)
    g.add_argument("--steps", type=int)
    g.add_argument("--buckets", help="comma-separated padded lengths of the compiled programs")
    g.add_argument("--no-real-authors", action="store_true")
    g.add_argument("--no-world-facts", action="store_true")
    g.add_argument("--no-privacy", action="store_true")
    g.add_argument("--no-progress", action="store_true")
    return p


def _plot(pairs, out_dir: str, y, baseline: str | None) -> int:
    from mdu_jax.eval.results import read_result
    from mdu_jax.eval.sweep import plot_tradeoff, sweep_rows, table_text, write_table

    rows = sweep_rows(pairs)
    csv_path = write_table(rows, os.path.join(out_dir, "sweep_tau.csv"))
    png_path = plot_tradeoff([r for _, r in pairs], [t for t, _ in pairs], os.path.join(out_dir, "sweep_tau.png"),
                             baseline=read_result(baseline) if baseline else None, y=y)
    print(table_text(rows))
    print(f"wrote {csv_path}\nwrote {png_path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger("mdu_jax").setLevel(logging.INFO)  # not absl/orbax INFO chatter
    args = build_parser().parse_args(argv)
    from mdu_jax.data.encoding import DataError
    from mdu_jax.eval.results import ResultError, read_result, write_result
    from mdu_jax.structured import ConfigKeyError

    try:
        if args.results:
            pairs = []
            for item in args.results:
                tau, sep, path = item.partition("=")
                if not sep:
                    raise ValueError(f"--results {item!r}: expected TAU=PATH")
                pairs.append((float(tau), read_result(path)))
            return _plot(pairs, args.out_dir or ".", args.y, args.baseline)
        if not args.config:
            raise ValueError("--config is required to train (or pass --results)")
        from mdu_jax.config import load_config
        from mdu_jax.eval.tofu import evaluate_tofu
        from mdu_jax.sweep import sweep_values
        from mdu_jax.train import run

        cfg = load_config(args.config, list(args.overrides))
        if cfg.objective.method != "mdu":
            raise ValueError(f"objective.method is {cfg.objective.method!r}; the tau sweep needs 'mdu'")
        if cfg.data.benchmark != "tofu" and not args.data_dir:
            raise ValueError("the sweep evaluates on TOFU: train on data.benchmark=tofu or pass --data-dir")
        data_dir = args.data_dir or cfg.data.data_dir
        forget_split = args.forget_split or cfg.data.forget_split
        pairs = []
        for tau, sub in sweep_values(cfg, f"objective.tau={args.taus}"):
            log.info("tau=%s: training into %s", tau, sub.output_dir)
            res = run(sub, progress=not args.no_progress)
            log.info("tau=%s: evaluating", tau)
            result = evaluate_tofu(res.model_cfg, res.params, res.tokenizer, data_dir=data_dir,
                                   forget_split=forget_split, retain_reference=args.retain_reference,
                                   max_examples=args.max_examples, mc_samples=args.mc_samples,
                                   gen_length=args.gen_length, steps=args.steps,
                                   include_real_authors=not args.no_real_authors,
                                   include_world_facts=not args.no_world_facts, privacy=not args.no_privacy,
                                   model_name=res.final_dir, progress=not args.no_progress,
                                   buckets=[int(b) for b in args.buckets.split(",")] if args.buckets else None)
            result["tau"] = float(tau)
            write_result(result, os.path.join(sub.output_dir, "eval_tofu.json"))
            pairs.append((float(tau), result))
        return _plot(pairs, args.out_dir or cfg.output_dir, args.y, args.baseline)
    except (ConfigKeyError, DataError, ResultError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
