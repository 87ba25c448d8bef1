"""The demo's sizes (``DemoConfig``) and the one call that writes its offline inputs.

``prepare_demo(cfg, folder)`` writes, under `folder`::

    data/        the generated benchmark in TOFU's file layout (forget10.json, retain90.json, ...)
    tokenizer/   the BPE tokenizer fitted on the generated text
    model_init/  the randomly initialised tiny model as an HF checkpoint folder

and returns their paths with the world, the tokenizer's special ids and the model config.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os

from mdu_jax.demo.model import write_demo_model
from mdu_jax.demo.tokenizer import TokenizerInfo, build_tokenizer
from mdu_jax.demo.world import World, build_world, demo_texts, write_tofu_layout
from mdu_jax.models.config import ModelConfig


@dataclasses.dataclass(frozen=True)
class DemoConfig:
    """Everything that determines the demo's data, tokenizer and starting model.

    ``DemoConfig()`` is the default run: 16 people x 4 facts, split 4 forget / 10 retain / 2
    holdout, plus 6 famous people as background facts; a 1024-entry BPE (the generated words
    become whole tokens) and a LLaDA of D=64, 4 layers, F=192 (0.31M parameters), trained on
    rows of 48 tokens with the paraphrased answers too. ``DemoConfig.ci()`` is the reduced one.

    ``sft_*`` / ``mdu_*`` are the measured stage settings (AdamW, clip 1.0, every response token
    incl. EOS padding maskable for SFT). With them the default run on the 2-core CPU reaches
    forget / retain ROUGE-L 0.80 / 0.86 after SFT, and MDU takes forget to 0.31 while retain
    stays at 0.82 (README table).
    """

    seed: int = 0
    num_people: int = 16
    facts_per_person: int = 4
    forget_fraction: float = 0.25
    holdout_fraction: float = 0.125
    num_perturbed: int = 5
    num_famous: int = 6
    vocab_size: int = 1024
    family: str = "llada"
    hidden_size: int = 64
    num_layers: int = 4
    num_heads: int = 4
    intermediate_size: int = 192
    max_position_embeddings: int = 128
    sft_steps: int = 1500
    sft_batch_size: int = 32
    sft_lr: float = 3e-3
    sft_paraphrases: bool = True   # SFT on the paraphrased answers too (demo.pipeline.sft_rows)
    mdu_steps: int = 150
    mdu_lr: float = 5e-4
    max_length: int = 48           # tokens per training row (the paraphrased rows need 48)

    @classmethod
    def ci(cls, **changes) -> "DemoConfig":
        """The reduced demo: 12 people x 4 facts (2 forget, 1 holdout: forget20), 2 layers, SFT
        without paraphrases on rows of 32 tokens (forget / retain ROUGE-L 0.99 / 0.93 after 600
        steps, about 31 s), 50 MDU steps at lr 2.5e-4 (its 8 forget rows are seen 200 times at
        batch 32; at lr 5e-4, or from 60 steps on, the 2-layer model loses the retain answers too)."""
        base = dict(num_people=12, facts_per_person=4, forget_fraction=0.2, holdout_fraction=0.1, num_famous=4,
                    num_layers=2, sft_steps=600, sft_paraphrases=False, mdu_steps=50, mdu_lr=2.5e-4, max_length=32)
        base.update(changes)
        return cls(**base)

    def replace(self, **changes) -> "DemoConfig":
        return dataclasses.replace(self, **changes)

    def world_kwargs(self) -> dict:
        return dict(seed=self.seed, num_people=self.num_people, facts_per_person=self.facts_per_person,
                    forget_fraction=self.forget_fraction, holdout_fraction=self.holdout_fraction,
                    num_perturbed=self.num_perturbed, num_famous=self.num_famous)

    def model_kwargs(self) -> dict:
        return dict(family=self.family, hidden_size=self.hidden_size, num_layers=self.num_layers,
                    num_heads=self.num_heads, intermediate_size=self.intermediate_size,
                    max_position_embeddings=self.max_position_embeddings, seed=self.seed)

    def fingerprint(self) -> str:
        """A short stable hash of every field (a cache key for the demo's SFT results)."""
        blob = json.dumps(dataclasses.asdict(self), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


@dataclasses.dataclass(frozen=True)
class DemoAssets:
    """What ``prepare_demo`` wrote. ``data_dir`` is a ``--data-dir`` for the TOFU code paths
    with splits ``split_names`` (e.g. forget10 / retain90 / holdout10)."""

    config: DemoConfig
    world: World
    data_dir: str
    tokenizer_dir: str
    model_dir: str
    tokenizer: TokenizerInfo
    model_config: ModelConfig

    @property
    def split_names(self) -> dict[str, str]:
        return self.world.split_names


def prepare_demo(cfg: DemoConfig, folder: str | os.PathLike) -> DemoAssets:
    """Generates the world of `cfg` and writes data/, tokenizer/ and model_init/ under `folder`.

    Deterministic in `cfg`; rewriting an existing folder replaces its contents with identical
    files. Takes a few seconds (dominated by importing jax and transformers).
    """
    folder = os.path.abspath(os.fspath(folder))
    world = build_world(**cfg.world_kwargs())
    data_dir = os.path.join(folder, "data")
    tokenizer_dir = os.path.join(folder, "tokenizer")
    model_dir = os.path.join(folder, "model_init")
    write_tofu_layout(world, data_dir)
    info = build_tokenizer(demo_texts(world), tokenizer_dir, cfg.family, vocab_size=cfg.vocab_size)
    model_cfg = write_demo_model(model_dir, tokenizer_dir, **cfg.model_kwargs())
    return DemoAssets(config=cfg, world=world, data_dir=data_dir, tokenizer_dir=tokenizer_dir,
                      model_dir=model_dir, tokenizer=info, model_config=model_cfg)
