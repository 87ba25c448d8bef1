"""``python -m mdu_jax.train``: MDU unlearning, masked-diffusion SFT, or a baseline.

    python -m mdu_jax.train                                   # the embedded offline demo
    python -m mdu_jax.train --config configs/tofu_llada8b.yaml objective.tau=0.5 optim.lr=8e-6
    python -m mdu_jax.train --config configs/tofu_llada8b.yaml --sweep objective.tau=0,0.25,0.5,0.75,1
    python -m mdu_jax.train --config configs/demo_sequential.yaml   # demo: forget groups one round each

The run itself is ``mdu_jax.training.run`` (a Python API); the demo is ``mdu_jax.demo.pipeline``.
"""

from __future__ import annotations

import argparse
import logging
import sys
import textwrap

from mdu_jax.demo import compare as demo_compare
from mdu_jax.demo import pipeline as demo
from mdu_jax.demo import sequential as demo_sequential
from mdu_jax.training import (RESULT_NEUTRAL, CheckpointDamagedError, UpdateRejectedError, load_config, run,
                              sweep_values, to_yaml)

log = logging.getLogger("mdu_jax.train")

EPILOG = f"""\
Overrides are dotted key=value pairs, anywhere on the command line, e.g. objective.tau=0.5
optim.lr=8e-6 parallel.mesh.fsdp=-1 model.path=/ckpt/llada-tofu. A sweep runs one training per
value, each in <output_dir>/<key>=<value>: --sweep objective.tau=0,0.25,0.5

Steps: max_steps, checkpoint.every_steps, log_every, the progress bar, the "step" of
metrics.jsonl, checkpoint folder names and every message count optimiser steps; one optimiser
step is optim.grad_accum micro-batches of batch_size rows (micro_step is a separate field).

An output folder belongs to one run. Run again with the same config, a stopped run resumes from
its newest intact checkpoint (an unreadable one is named and moved to damaged_checkpoints/), and
a finished one is reported, not retrained. A config that differs in a key that changes the
weights is refused with the keys named: --overwrite deletes that run and starts over,
--resume-anyway continues its weights with the new values (config.yaml then records both).
{textwrap.fill("These keys may change freely (they do not change the weights): " + ", ".join(RESULT_NEUTRAL) + ".", 96)}

Updates: a step whose loss, gradient norm or updated parameters are not finite, or whose update
norm exceeds optim.max_update_ratio (default 1) x the parameters' norm, is not applied and the
run stops, naming the newest checkpoint if there is one (0 switches the ratio guard off).

At the end a one-paragraph summary (rows, optimiser steps, tokens, time, where each output
went) is printed and saved as <output_dir>/run_summary.json.
"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m mdu_jax.train", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Masked-diffusion unlearning (MDU), SFT and baselines for LLaDA/Dream in JAX. "
                    "With no arguments: the embedded offline demo (generated data, tiny LLaDA, CPU).",
        epilog=EPILOG)
    p.add_argument("--config", help="YAML run config (see configs/); default: the embedded demo")
    p.add_argument("overrides", nargs="*", help="key=value overrides of config fields (dotted keys)")
    p.add_argument("--sweep", help="KEY=V1,V2,...: run once per value (each in its own output_dir)")
    p.add_argument("--export-hf", dest="export_hf", help="write the final params as an HF folder here")
    p.add_argument("--output-dir", dest="output_dir", help="shorthand for output_dir=...")
    p.add_argument("--overwrite", action="store_true",
                   help="delete the run already in output_dir (checkpoints, anchor, final, metrics, config) "
                        "and start over")
    p.add_argument("--resume-anyway", dest="resume_anyway", action="store_true",
                   help="continue the run in output_dir although the config differs in keys that change the "
                        "weights (config.yaml records both)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (the summary is still printed)")
    p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    return p


def main(argv: list[str] | None = None) -> int:
    # Our own progress at INFO; third-party libraries (orbax/absl) only when they warn.
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s: %(message)s", force=True)
    logging.getLogger("mdu_jax").setLevel(logging.INFO)
    # Intermixed: key=value overrides may come before, between or after the flags.
    args = build_parser().parse_intermixed_args(argv)
    if args.config is not None and demo_compare.is_compare_config(args.config):
        # Every method side by side on the demo world (see mdu_jax/demo/compare.py).
        overrides = list(args.overrides) + ([f"output_dir={args.output_dir}"] if args.output_dir else [])
        return demo_compare.main(overrides, config=args.config, progress=not args.no_progress)
    if args.config is not None and demo_sequential.is_sequential_config(args.config):
        # The forget authors unlearned group by group (see mdu_jax/demo/sequential.py).
        overrides = list(args.overrides) + ([f"output_dir={args.output_dir}"] if args.output_dir else [])
        return demo_sequential.main(overrides, config=args.config, progress=not args.no_progress)
    if args.config is None or demo.is_demo_config(args.config):
        # The embedded demo: generated data, a tiny model, offline (see mdu_jax/demo/pipeline.py).
        overrides = list(args.overrides) + ([f"output_dir={args.output_dir}"] if args.output_dir else [])
        return demo.main(overrides, config=args.config, sweep=args.sweep, progress=not args.no_progress)
    overrides = list(args.overrides)
    if args.export_hf:
        overrides.append(f"export_hf={args.export_hf}")
    if args.output_dir:
        overrides.append(f"output_dir={args.output_dir}")
    flags = dict(progress=not args.no_progress, overwrite=args.overwrite, resume_anyway=args.resume_anyway,
                 reload_finished=False)
    try:
        cfg = load_config(args.config, overrides)
        if args.print_config:
            print(to_yaml(cfg))
            return 0
        runs = list(sweep_values(cfg, args.sweep)) if args.sweep else [(None, cfg)]
        for value, sub in runs:
            if value is not None:
                log.info("sweep %s: output_dir=%s", value, sub.output_dir)
            result = run(sub, **flags)
            print(result.summary, flush=True)
    except (ValueError, UpdateRejectedError, CheckpointDamagedError) as e:  # ConfigKeyError is a ValueError
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
