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
            texts += [row["question"], row["answer"], row.get("paraphrased_answer", ""), *row.get("perturbed_answer", [])]
    return [t for t in texts if t]


def tiny_models(folder, texts, seeds=(0, 1), vocab_size=320):
    """A tokenizer on `texts` and one 1-layer D=32 LLaDA per seed; returns the model folders."""
    build_tokenizer(texts, folder / "tok", "llada", vocab_size=vocab_size)
    out = []
    for s in seeds:
        write_demo_model(folder / f"model{s}", folder / "tok", hidden_size=32, num_layers=1, num_heads=2,
                         intermediate_size=64, seed=s)
        out.append(str(folder / f"model{s}"))
    return out
