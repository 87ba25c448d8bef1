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
    """Everything that determines the demo's data, tokenizer, starting model and stage recipe.

    ``DemoConfig()`` is the default run: 10 people x 10 facts, split 4 forget / 5 retain / 1
    holdout (40 forget questions, as TOFU's forget01), plus background facts about 4 famous
    authors and 10 towns in 4 countries (the real-authors / world-facts analogues, trained
    alongside, so model utility's parts are things the model was taught); a BPE fitted on the
    world (every generated word one token) and a LLaDA of D=64, 4 layers, F=192 (0.30M parameters).

    ``sft_*`` is the recipe that makes the model memorise every fact in few enough steps for a
    2-core CPU: rows of 34 tokens padded with visible, trained EOS (LLaDA's SFT), the paraphrased
    answers too, the uniform MDLM loss weight (with LLaDA's 1/t weight the same step budget left
    more than half of the facts unlearned in our measurements), AdamW at 3e-3 with cosine decay,
    2400 steps (measured on the default world: 1500 steps left forget / retain fact recall at
    0.75 / 0.68, the model mixing up facts of the same kind); the retain-only twin makes as many
    passes over its smaller data (``pipeline.twin_stage``). ``unlearn_*`` are the unlearning
    stage's defaults for every method. ``DemoConfig.ci()`` is the reduced demo the tests run.
    """

    seed: int = 0
    num_people: int = 10
    facts_per_person: int = 10
    forget_fraction: float = 0.4
    holdout_fraction: float = 0.1
    num_perturbed: int = 5
    num_famous: int = 4
    num_towns: int = 10
    num_countries: int = 4
    vocab_size: int = 1024
    family: str = "llada"
    hidden_size: int = 64
    num_layers: int = 4
    num_heads: int = 4
    intermediate_size: int = 192
    max_position_embeddings: int = 128
    sft_steps: int = 2400
    sft_batch_size: int = 32
    sft_lr: float = 3e-3
    sft_warmup_ratio: float = 0.05
    sft_prompt_dropout: float = 0.0
    sft_loss_weight: str = "uniform"   # the MDLM loss weight of SFT: 'scheduler' (1/t, LLaDA) or 'uniform'
    sft_paraphrases: bool = True   # SFT on the paraphrased answers too (demo.stages.sft_rows)
    unlearn_steps: int = 150
    unlearn_lr: float = 5e-4
    unlearn_batch_size: int = 32
    max_length: int = 34           # tokens per SFT row: the longest row has 32, and every row's response
                                   # window (34 - prompt) holds the 12 tokens the evaluation generates

    @classmethod
    def ci(cls, **changes) -> "DemoConfig":
        """The reduced demo: 8 people x 5 facts (2 forget, 1 holdout: 10 forget questions), 2
        layers, SFT without paraphrases, 600 steps; 50 unlearning steps at lr 5e-4. Measured
        (MDU, tau 1): forget fact recall 0.9 -> 0.1 with retain fact recall 0.9 -> 1.0; at 2.5e-4
        the forget recall fell to 0.2 or only to 0.7 depending on the device layout, and 100 steps
        at 5e-4 made half of the forget answers two words or shorter."""
        base = dict(num_people=8, facts_per_person=5, forget_fraction=0.25, holdout_fraction=0.125,
                    num_layers=2, sft_steps=600, sft_paraphrases=False, unlearn_steps=50, unlearn_lr=5e-4)
        base.update(changes)
        return cls(**base)

    def replace(self, **changes) -> "DemoConfig":
        return dataclasses.replace(self, **changes)

    def world_kwargs(self) -> dict:
        return dict(seed=self.seed, num_people=self.num_people, facts_per_person=self.facts_per_person,
                    forget_fraction=self.forget_fraction, holdout_fraction=self.holdout_fraction,
                    num_perturbed=self.num_perturbed, num_famous=self.num_famous, num_towns=self.num_towns,
                    num_countries=self.num_countries)

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
