"""RWKU's forget corpus the reference's way: (intro, the model's own biography) pairs.

RWKU ships no training text for its targets; its recipe (jinzhuoran/RWKU
``generation/pair_generation.py``) has the model to be unlearned write it: the system turn is
the target's one-sentence intro plus "You know <target> very well.", the user asks "Please
write a short biography of <target>.", and the sampled reply (temperature 1, top-p 0.9, at most
512 new tokens, cut at EOS / end of turn) is a forget text. MDU trains on these pairs with the
intro as the question and the reply as the answer (its ``scripts/convert_rwku_dream_to_tofu.py``
turns RWKU's Dream pair files into ``forget.jsonl``). This module does the same with the
project's own sampler:

    python -m mdu_jax.experiments.rwku_corpus --model checkpoints/dream-7b-instruct \\
        --data-dir data/rwku --targets "Stephen King,Confucius" --output-dir data/rwku_corpus

For each target it writes ``<output-dir>/<rank>_<Name>/`` (the local RWKU folder's name;
``<Name>`` with the Hub) holding ``forget.jsonl`` (one {question, answer, subject, id} per
non-empty reply), ``retain_placeholder.jsonl`` (the first 10 of them: the reference's Dream
script mixes such a file into the data even with alpha = 0) and ``generation.json`` (the
settings). A target folder appears complete or not at all (written beside, then renamed), and
a target whose folder exists is skipped, so an interrupted command resumes where it stopped.

Differences from RWKU's generation, stated: RWKU opens each reply with one of its stored
response openings (``all_truncated_outputs.json``, not released); ``--openings`` takes such a
JSON list if you have one (sample k starts with opening k mod n, and the opening is part of the
answer). The number of replies per target is ``--samples`` (RWKU: one per opening). Masked
diffusion samplers have no top-p for LLaDA: its replies use temperature only.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import sys
from typing import Any, Sequence

from mdu_jax.checkpoints import CheckpointError, atomic_output_dir, load_pretrained, write_text
from mdu_jax.data.encoding import DataError
from mdu_jax.data.sources import load_rwku, rwku_target_dir
from mdu_jax.eval.scoring import stop_ids
from mdu_jax.models.config import ConfigError, ModelConfig
from mdu_jax.sampling import generate

log = logging.getLogger("mdu_jax.rwku_corpus")

FORGET_FILE = "forget.jsonl"
PLACEHOLDER_FILE = "retain_placeholder.jsonl"
SETTINGS_FILE = "generation.json"
PLACEHOLDER_ROWS = 10
SYSTEM = "{intro} You know {subject} very well."
USER = "Please write a short biography of {subject}."


def target_intro(subject: str, data_dir: str | None) -> str:
    """The target's one-sentence intro: RWKU's ``forget_target`` row without its leading
    'Please forget <subject>.' (the form RWKU's generation prompt and MDU's pairs use)."""
    rows = load_rwku("forget_target", subject, data_dir)
    intro = str(rows[0].get("intro", "")).strip()
    intro = re.sub(r"^Please forget [^.]*\.\s*", "", intro)
    if not intro:
        raise DataError(f"RWKU target {subject!r}: its intro is empty")
    return intro


def folder_name(subject: str, data_dir: str | None) -> str:
    """``<rank>_<Name>`` as in the local RWKU copy, or ``<Name>`` (spaces as underscores) with the Hub."""
    if data_dir is not None:
        return os.path.basename(rwku_target_dir(data_dir, subject))
    return subject.replace(" ", "_")


def prompt_ids(tokenizer, subject: str, intro: str, opening: str = "") -> list[int]:
    """The generation prompt: system intro turn, user request, the assistant header, then `opening`."""
    messages = [{"role": "system", "content": SYSTEM.format(intro=intro, subject=subject)},
                {"role": "user", "content": USER.format(subject=subject)}]
    out = tokenizer.apply_chat_template(messages, tokenize=True, add_generation_prompt=True)
    if isinstance(out, dict) or hasattr(out, "keys"):
        out = out["input_ids"]
    ids = [int(i) for i in out]
    if opening:
        ids += [int(i) for i in tokenizer(opening, add_special_tokens=False)["input_ids"]]
    return ids


def generate_pairs(cfg: ModelConfig, params, tokenizer, subject: str, intro: str, *, samples: int,
                   gen_length: int, steps: int, temperature: float, top_p: float | None, seed: int,
                   batch_size: int, openings: Sequence[str] = ()) -> list[dict[str, Any]]:
    """{question: intro, answer: opening + reply, subject, id} for each non-empty reply of `samples`
    sampled biographies (cut at EOS / end of turn, special tokens skipped, stripped)."""
    chosen = [openings[k % len(openings)] if openings else "" for k in range(samples)]
    prompts = [prompt_ids(tokenizer, subject, intro, o) for o in chosen]
    out = generate(cfg, params, prompts, tokenizer=tokenizer, gen_length=gen_length, steps=steps,
                   temperature=temperature, top_p=top_p if cfg.family == "dream" else None, seed=seed,
                   batch_size=batch_size, stop_token_ids=stop_ids(cfg, tokenizer), stop_early=True)
    rows = []
    for k, (opening, text) in enumerate(zip(chosen, out.texts)):
        answer = (opening + text).strip()
        if answer:
            rows.append({"question": intro, "answer": answer, "subject": subject, "id": f"{subject} {k}"})
    return rows


def _jsonl(rows: Sequence[dict]) -> str:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)


def write_target(folder: str, rows: Sequence[dict], settings: dict[str, Any]) -> None:
    """Writes the target's folder whole or not at all (a temporary folder renamed into place)."""
    if not rows:
        raise DataError(f"{folder}: every generated reply was empty; nothing to train on (try more --samples "
                        "or a longer --gen-length)")
    with atomic_output_dir(folder) as tmp:
        write_text(os.path.join(tmp, FORGET_FILE), _jsonl(rows))
        write_text(os.path.join(tmp, PLACEHOLDER_FILE), _jsonl(rows[:PLACEHOLDER_ROWS]))
        write_text(os.path.join(tmp, SETTINGS_FILE), json.dumps(settings, indent=1, ensure_ascii=False) + "\n")


def build_corpus(model: str, targets: Sequence[str], output_dir: str, *, data_dir: str | None = None,
                 samples: int = 100, gen_length: int = 512, steps: int = 512, temperature: float = 1.0,
                 top_p: float | None = 0.9, seed: int = 0, batch_size: int = 16, openings: Sequence[str] = (),
                 dtype: str | None = None) -> dict[str, str]:
    """Generates and writes the corpus of each target not yet written; returns {target: 'written' or
    'skipped'}. The model is loaded only if some target is missing."""
    if samples < 1:
        raise ValueError(f"samples: expected >= 1, got {samples}")
    todo, status = [], {}
    for subject in targets:
        folder = os.path.join(output_dir, folder_name(subject, data_dir))
        if os.path.isfile(os.path.join(folder, FORGET_FILE)):
            status[subject] = "skipped"
            log.info("%s: %s exists, skipped", subject, os.path.join(folder, FORGET_FILE))
        else:
            todo.append((subject, folder, target_intro(subject, data_dir)))
    if not todo:
        return status
    cfg, params, tok = load_pretrained(model, dtype=dtype)
    if tok is None:
        raise CheckpointError(f"{model}: no tokenizer files; the corpus needs the model's chat template")
    for subject, folder, intro in todo:
        base_seed = seed + sum(ord(c) for c in subject)  # a target's replies do not depend on the others
        rows = generate_pairs(cfg, params, tok, subject, intro, samples=samples, gen_length=gen_length, steps=steps,
                              temperature=temperature, top_p=top_p, seed=base_seed, batch_size=batch_size,
                              openings=openings)
        settings = {"model": os.path.abspath(model), "family": cfg.family, "subject": subject, "intro": intro,
                    "system": SYSTEM.format(intro=intro, subject=subject), "user": USER.format(subject=subject),
                    "samples": samples, "written": len(rows), "gen_length": gen_length, "steps": steps,
                    "temperature": temperature, "top_p": top_p if cfg.family == "dream" else None,
                    "seed": base_seed, "openings": len(openings)}
        write_target(folder, rows, settings)
        status[subject] = "written"
        log.info("%s: %d pairs -> %s", subject, len(rows), folder)
    return status


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m mdu_jax.experiments.rwku_corpus",
                                description="Write RWKU forget corpora: (intro, the model's own biography) pairs, "
                                            "one folder per target, for data.benchmark: files.",
                                epilog=__doc__.split("\n\n", 2)[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="the model to be unlearned (HF folder or converted checkpoint)")
    p.add_argument("--targets", required=True, help="comma-separated RWKU targets, e.g. 'Stephen King,Confucius'")
    p.add_argument("--output-dir", required=True, help="one <rank>_<Name>/ folder per target is written here")
    p.add_argument("--data-dir", help="local RWKU copy (per-target folders; default: the Hub)")
    p.add_argument("--samples", type=int, default=100, help="replies sampled per target (default 100)")
    p.add_argument("--gen-length", type=int, default=512, help="new tokens per reply (RWKU: 512)")
    p.add_argument("--steps", type=int, help="sampler steps (default: --gen-length)")
    p.add_argument("--temperature", type=float, default=1.0, help="sampling temperature (RWKU: 1.0)")
    p.add_argument("--top-p", type=float, default=0.9, help="Dream's top-p (RWKU: 0.9; LLaDA has none)")
    p.add_argument("--openings", help="JSON list of reply openings (RWKU's all_truncated_outputs.json)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=16, help="replies per generation batch")
    p.add_argument("--dtype", help="compute dtype override, e.g. bfloat16")
    return p


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger("mdu_jax").setLevel(logging.INFO)
    args = build_parser().parse_args(argv)
    targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    try:
        if not targets:
            raise ValueError("--targets: no target given")
        openings = read_openings(args.openings) if args.openings else []
        status = build_corpus(args.model, targets, args.output_dir, data_dir=args.data_dir, samples=args.samples,
                              gen_length=args.gen_length, steps=args.steps or args.gen_length,
                              temperature=args.temperature, top_p=args.top_p, seed=args.seed,
                              batch_size=args.batch_size, openings=openings, dtype=args.dtype)
    except (DataError, CheckpointError, ConfigError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for subject, what in status.items():
        print(f"{subject}: {what} ({os.path.join(args.output_dir, folder_name(subject, args.data_dir))})")
    return 0


def read_openings(path: str) -> list[str]:
    """A JSON list of strings (the openings file); errors name the file."""
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise DataError(f"--openings {path}: not a readable JSON file ({e})") from None
    if not isinstance(data, list) or not data or not all(isinstance(x, str) for x in data):
        raise DataError(f"--openings {path}: expected a non-empty JSON list of strings")
    return data


if __name__ == "__main__":
    sys.exit(main())
