"""``python -m mdu_jax.evaluate``: TOFU and RWKU metrics of a LLaDA / Dream checkpoint.

    python -m mdu_jax.evaluate --model runs/mdu/final --benchmark tofu --forget-split forget10 \\
        --retain-reference runs/retain90_eval.json --output runs/mdu/eval_tofu.json
    python -m mdu_jax.evaluate --model runs/mdu/final --benchmark rwku --subject "Stephen King"
    python -m mdu_jax.evaluate --probes all --demo-dir runs/demo          # leakage probes (issue 18)

Writes a JSON of every per-example value and the aggregates, and prints a table. With --probes:
the leakage probes of ``mdu_jax.experiments.probes`` on the unlearned model and its references.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from mdu_jax.checkpoints import CheckpointError, load_pretrained
from mdu_jax.data.encoding import DataError
from mdu_jax.eval.report import print_table
from mdu_jax.eval.results import ResultError, write_result
from mdu_jax.eval.rwku import evaluate_rwku
from mdu_jax.eval.tofu import evaluate_tofu
from mdu_jax.experiments import probe_command
from mdu_jax.models.config import ConfigError

EPILOG = """\
TOFU (open-unlearning profile): ROUGE-L recall of greedy generations, answer probability
(per-token geometric mean from LLaDA's Monte Carlo likelihood estimator), truth ratio, normalised
probability (real authors / world facts), model utility (harmonic mean), forget quality (KS
p-value against --retain-reference: the JSON this command wrote for the retain-only model with
the same --forget-split and --max-examples), extraction strength, exact memorisation and
Min-K% privleak (forget vs holdout; teacher forcing = left-to-right masked predictions).
--profile mdu: the MDU paper's numbers (Eq. 14 probability, raw truth ratio over the first 3
perturbed answers, its sampler settings, every generated token decoded, bfloat16 weights unless
--dtype is given), plus forget quality and model utility from those estimators: forget quality =
KS p-value of the per-example forget truth ratios R = exp(nll_gt - mean nll_perturbed[:3])
against --retain-reference (the retain-only model's JSON under --profile mdu); model utility =
harmonic mean of retain mean probability, ROUGE-L and mean max(0, 1 - R), and on real authors
and world facts of the normalised probability p_gt / (p_gt + sum p_perturbed), ROUGE-L and
mean max(0, 1 - R).
RWKU: forget levels 1-3 and neighbour levels 1-2 (ROUGE-L recall), MIA loss on forget vs
retain passages, utility (MMLU, TruthfulQA MC1, TriviaQA, BBH, fluency).
Data come from the Hub (locuslab/TOFU, jinzhuoran/RWKU) unless --data-dir gives a local copy.
"""
EPILOG += "\n" + probe_command.EPILOG


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m mdu_jax.evaluate", epilog=EPILOG,
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                description="Evaluate a masked diffusion LM (LLaDA / Dream) on TOFU or RWKU.")
    p.add_argument("--model", help="HF checkpoint folder or converted mdu_jax checkpoint (required unless "
                                   "--probes with --demo-dir)")
    p.add_argument("--benchmark", choices=("tofu", "rwku"), default="tofu")
    p.add_argument("--profile", choices=("open-unlearning", "mdu", "rwku"),
                   help="metric definitions: tofu: open-unlearning (default) or mdu; rwku: rwku (default) or mdu")
    p.add_argument("--data-dir", help="local data folder (TOFU: <split>.json files; RWKU: per-target folders)")
    p.add_argument("--output", help="result JSON path (default: <model>/eval_<benchmark>[_<profile>].json)")
    g = p.add_argument_group("TOFU")
    g.add_argument("--forget-split", help="forget01/05/10, read from <split>_perturbed (default forget10; "
                                          "--demo-dir: the demo world's)")
    g.add_argument("--retain-split", default="retain_perturbed", help="retain evaluation split")
    g.add_argument("--holdout-split", help="MIA non-members (default: holdoutXX matching the forget split; "
                                           "'none' skips MIA/privleak)")
    g.add_argument("--retain-reference", help="the retain-only model's result JSON (forget quality, privleak)")
    g.add_argument("--no-real-authors", action="store_true", help="skip real_authors_perturbed")
    g.add_argument("--no-world-facts", action="store_true", help="skip world_facts_perturbed")
    g.add_argument("--no-privacy", action="store_true", help="skip EM / ES / MIA / privleak")
    g = p.add_argument_group("RWKU")
    g.add_argument("--subject", help="RWKU target, e.g. 'Stephen King' (a local folder may hold one target)")
    g.add_argument("--utility", default="mmlu,truthfulqa,triviaqa,bbh,fluency",
                   help="comma-separated RWKU utility sets ('' for none)")
    g.add_argument("--long-gen-length", type=int, help="new tokens for BBH and fluency (default 256)")
    g = p.add_argument_group("sampling and likelihood")
    g.add_argument("--max-examples", type=int, help="use the first N rows of every split")
    g.add_argument("--mc-samples", type=int, help="Monte Carlo samples per likelihood (default 128; probes 32)")
    g.add_argument("--gen-length", type=int, help="new tokens per generation (profile default)")
    g.add_argument("--steps", type=int, help="sampler steps (profile default)")
    g.add_argument("--block-length", type=int, help="LLaDA block length (profile default)")
    g.add_argument("--batch-size", type=int, default=32, help="prompts per generation batch")
    g.add_argument("--rows-per-forward", type=int, default=64, help="likelihood rows per compiled forward")
    g.add_argument("--buckets", help="comma-separated padded lengths of the compiled programs, e.g. 128,256,512 "
                                    "(default: 16, 24, 32, 48, 64, 96, ...; fewer buckets compile fewer programs)")
    g.add_argument("--seed", type=int, help="likelihood seed (default 0; mdu profile 42)")
    g.add_argument("--dtype", help="compute dtype override, e.g. float32 or bfloat16 (default: the checkpoint's; "
                                  "--profile mdu: bfloat16 weights and compute, as MDU's scripts load them)")
    g.add_argument("--decode", choices=("cut", "all"),
                   help="TOFU generations: cut at EOS / end of turn (open-unlearning default) or decode every "
                        "generated token with special tokens skipped (mdu default, MDU's scripts)")
    g.add_argument("--no-progress", action="store_true", help="no progress bars")
    probe_command.add_probe_arguments(p)
    return p


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger("mdu_jax").setLevel(logging.INFO)  # not absl/orbax INFO chatter
    args = build_parser().parse_args(argv)
    profile = args.profile or ("open-unlearning" if args.benchmark == "tofu" else "rwku")
    try:
        if args.probes:
            return probe_command.run_probe_command(args)
        if not args.model:
            raise ValueError("--model: required (the checkpoint to evaluate)")
        if args.benchmark == "tofu" and profile == "rwku":
            raise ValueError("--profile rwku is for --benchmark rwku")
        if args.benchmark == "rwku" and profile == "open-unlearning":
            raise ValueError("--profile open-unlearning is for --benchmark tofu (rwku: rwku or mdu)")
        if args.retain_reference and not os.path.isfile(args.retain_reference):
            raise ResultError(f"--retain-reference {args.retain_reference}: no such file")
        # MDU's scripts load the checkpoint with torch_dtype=bfloat16: weights and compute in bf16.
        dtypes = (dict(dtype="bfloat16", param_dtype="bfloat16") if profile == "mdu" and args.dtype is None
                  else dict(dtype=args.dtype))
        cfg, params, tok = load_pretrained(args.model, **dtypes)
        common = dict(data_dir=args.data_dir, max_examples=args.max_examples, mc_samples=128 if args.mc_samples is None else args.mc_samples,
                      gen_length=args.gen_length, steps=args.steps, block_length=args.block_length, profile=profile,
                      seed=args.seed, batch_size=args.batch_size, rows_per_forward=args.rows_per_forward,
                      model_name=os.path.abspath(args.model), progress=not args.no_progress,
                      buckets=[int(b) for b in args.buckets.split(",")] if args.buckets else None)
        if args.benchmark == "tofu":
            result = evaluate_tofu(cfg, params, tok, forget_split=args.forget_split or "forget10",
                                   retain_split=args.retain_split,
                                   holdout_split=args.holdout_split, include_real_authors=not args.no_real_authors,
                                   include_world_facts=not args.no_world_facts,
                                   retain_reference=args.retain_reference, privacy=not args.no_privacy,
                                   decode=args.decode, **common)
        else:
            if args.decode:
                raise ValueError("--decode is a TOFU option (RWKU's profiles fix their own decoding)")
            utility = [u.strip() for u in args.utility.split(",") if u.strip()]
            result = evaluate_rwku(cfg, params, tok, subject=args.subject, utility=utility,
                                   long_gen_length=args.long_gen_length, **common)
        result.setdefault("settings", {}).update(dtype=cfg.dtype, param_dtype=cfg.param_dtype)
    except (DataError, CheckpointError, ConfigError, ResultError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    suffix = "" if profile in ("open-unlearning", "rwku") else f"_{profile}"
    out = args.output or os.path.join(args.model, f"eval_{args.benchmark}{suffix}.json")
    write_result(result, out)
    print_table(result)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
