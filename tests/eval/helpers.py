"""Tiny models with a BPE tokenizer fitted on real benchmark rows (so the text tokenises)."""

import json

from mdu_jax.demo.model import write_demo_model
from mdu_jax.demo.tokenizer import build_tokenizer

TOFU_FILES = ("forget10_perturbed", "forget01_perturbed", "retain_perturbed", "real_authors_perturbed",
              "world_facts_perturbed", "holdout10")


def tofu_texts(tofu_dir, n):
    texts = []
    for name in TOFU_FILES:
        for row in json.loads((tofu_dir / f"{name}.json").read_text())[:n]:
            texts += [row["question"], row["answer"], row.get("paraphrased_answer", ""),
                      *row.get("perturbed_answer", [])]
    return [t for t in texts if t]


def tiny_models(folder, texts, seeds=(0, 1), vocab_size=320, family="llada"):
    """A tokenizer on `texts` and one 1-layer D=32 model of `family` per seed; returns the folders."""
    build_tokenizer(texts, folder / f"tok_{family}", family, vocab_size=vocab_size)
    out = []
    for s in seeds:
        path = folder / f"{family}{s}"
        write_demo_model(path, folder / f"tok_{family}", hidden_size=32, num_layers=1, num_heads=2,
                         intermediate_size=64, seed=s, family=family)
        out.append(str(path))
    return out
