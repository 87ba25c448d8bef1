"""``python -m mdu_jax.train``: MDU unlearning, masked-diffusion SFT, or a baseline.

    python -m mdu_jax.train                                   # the embedded offline demo
    python -m mdu_jax.train --config configs/tofu_llada8b.yaml objective.tau=0.5 optim.lr=8e-6
    python -m mdu_jax.train --config configs/tofu_llada8b.yaml --sweep objective.tau=0,0.25,0.5,0.75,1

The run itself is ``mdu_jax.training.run`` (a Python API); the demo is ``mdu_jax.demo.pipeline``.
"""

from __future__ import annotations

import argparse
import logging
import sys

from mdu_jax.demo import pipeline as demo
from mdu_jax.training import NonFiniteLossError, load_config, run, sweep_values, to_yaml
from mdu_jax.typed_config import ConfigKeyError

log = logging.getLogger("mdu_jax.train")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m mdu_jax.train",
        description="Masked-diffusion unlearning (MDU), SFT and baselines for LLaDA/Dream in JAX. "
                    "With no arguments: the embedded offline demo (generated data, tiny LLaDA, CPU).",
        epilog="Overrides are dotted key=value pairs, e.g. objective.tau=0.5 optim.lr=8e-6 "
               "parallel.mesh.fsdp=-1 model.path=/ckpt/llada-tofu. A sweep runs one training per "
               "value: --sweep objective.tau=0,0.25,0.5")
    p.add_argument("--config", help="YAML run config (see configs/); default: the embedded demo")
    p.add_argument("overrides", nargs="*", help="key=value overrides of config fields (dotted keys)")
    p.add_argument("--sweep", help="KEY=V1,V2,...: run once per value (each in its own output_dir)")
    p.add_argument("--export-hf", dest="export_hf", help="write the final params as an HF folder here")
    p.add_argument("--output-dir", dest="output_dir", help="shorthand for output_dir=...")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    return p


def main(argv: list[str] | None = None) -> int:
    # Our own progress at INFO; third-party libraries (orbax/absl) only when they warn.
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s: %(message)s", force=True)
    logging.getLogger("mdu_jax").setLevel(logging.INFO)
    args = build_parser().parse_args(argv)
    if args.config is None or demo.is_demo_config(args.config):
        # The embedded demo: generated data, a tiny model, offline (see mdu_jax/demo/pipeline.py).
        overrides = list(args.overrides) + ([f"output_dir={args.output_dir}"] if args.output_dir else [])
        return demo.main(overrides, config=args.config, sweep=args.sweep, progress=not args.no_progress)
    overrides = list(args.overrides)
    if args.export_hf:
        overrides.append(f"export_hf={args.export_hf}")
    if args.output_dir:
        overrides.append(f"output_dir={args.output_dir}")
    try:
        cfg = load_config(args.config, overrides)
        if args.print_config:
            print(to_yaml(cfg))
            return 0
        if args.sweep:
            for value, sub in sweep_values(cfg, args.sweep):
                log.info("sweep %s: output_dir=%s", value, sub.output_dir)
                run(sub, progress=not args.no_progress)
            return 0
        run(cfg, progress=not args.no_progress)
    except (ConfigKeyError, ValueError, NonFiniteLossError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
