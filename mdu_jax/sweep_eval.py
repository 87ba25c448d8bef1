"""``python -m mdu_jax.sweep_eval``: MDU for a list of tau values, a TOFU evaluation of each, and
the privacy-utility trade-off (PNG + table).

    python -m mdu_jax.sweep_eval --config configs/tofu_llada8b.yaml --taus 0,0.25,0.5,0.75,1 \\
        --retain-reference runs/retain90/eval_tofu.json
    python -m mdu_jax.sweep_eval --results 0=runs/a/eval_tofu.json 1=runs/b/eval_tofu.json --out-dir runs/plot

The work is ``mdu_jax.experiments.tau_sweep``.
"""

from __future__ import annotations

import argparse
import logging
import sys

from mdu_jax.data.encoding import DataError
from mdu_jax.eval.results import ResultError
from mdu_jax.experiments import tau_sweep
from mdu_jax.training import load_config
from mdu_jax.typed_config import ConfigKeyError


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


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger("mdu_jax").setLevel(logging.INFO)  # not absl/orbax INFO chatter
    args = build_parser().parse_args(argv)
    try:
        if args.results:
            pairs, out_dir = tau_sweep.read_pairs(args.results), args.out_dir or "."
        else:
            if not args.config:
                raise ValueError("--config is required to train (or pass --results)")
            cfg = load_config(args.config, list(args.overrides))
            pairs = tau_sweep.train_and_evaluate(
                cfg, args.taus, data_dir=args.data_dir, forget_split=args.forget_split,
                progress=not args.no_progress, retain_reference=args.retain_reference,
                max_examples=args.max_examples, mc_samples=args.mc_samples, gen_length=args.gen_length,
                steps=args.steps, include_real_authors=not args.no_real_authors,
                include_world_facts=not args.no_world_facts, privacy=not args.no_privacy,
                buckets=[int(b) for b in args.buckets.split(",")] if args.buckets else None)
            out_dir = args.out_dir or cfg.output_dir
        csv_path, png_path, table = tau_sweep.write_tradeoff(pairs, out_dir, args.y, args.baseline)
    except (ConfigKeyError, DataError, ResultError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(table)
    print(f"wrote {csv_path}\nwrote {png_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
