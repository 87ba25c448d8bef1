"""The demo's training stages as run configs of the shipped training stack (``mdu_jax.training.run``).

SFT: the initial model fine-tuned on every fact (and the retain-only twin on all but the forget
facts), following LLaDA's SFT recipe by default: responses right-padded with visible EOS tokens
that are trained like answer tokens, so the model learns where an answer ends inside the fixed
response window the sampler generates into.

Unlearning: any method of ``mdu_jax.training.config.METHODS`` from the SFT model. The forget rows are the
forget authors' (question, answer) pairs; methods with a retain term (``WITH_RETAIN``) also get the
retain authors' and the background facts, so unlearning keeps what model utility measures.
``sft`` is the control that continues fine-tuning on those retain rows alone (what the retain
term does by itself); ``idkpo`` / ``dpo`` take their "I don't know" answers from the world's
idontknow.json. Padding is never a target and never attended (the MDU reference's labels).
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Literal, Optional, Sequence

from mdu_jax import typed_config as structured
from mdu_jax.training.config import ObjectiveSection, TrainConfig
from mdu_jax.demo.world import World, demo_pairs
from mdu_jax.training.loss import WITH_RETAIN


@dataclasses.dataclass
class StageSection:
    """One training stage (SFT or unlearning); unset values come from the demo size's recipe
    (``DemoConfig.sft_*`` / ``unlearn_*``) and, for the padding rule, from the stage."""

    steps: Optional[int] = None
    lr: Optional[float] = None
    batch_size: Optional[int] = None
    warmup_ratio: Optional[float] = None
    seed: Optional[int] = None           # data order and masking; None: demo.seed
    # SFT only: the MDLM loss weight ('scheduler' = 1/t as LLaDA's SFT, or 'uniform'), and the
    # fraction of rows trained with the prompt masked (objective.prompt_dropout).
    loss_weight: Optional[Literal["scheduler", "uniform"]] = None
    prompt_dropout: Optional[float] = None
    # How right-padding is treated: a target ('eos') or not ('ignore'), visible to attention or not.
    # None: the stage's recipe (SFT: eos and visible, LLaDA's SFT; unlearning: ignore and hidden).
    pad_labels: Optional[Literal["ignore", "eos"]] = None
    attend_padding: Optional[bool] = None


# What each stage does with padding when the config leaves it unset (see the module docstring).
PADDING = {"sft": ("eos", True), "unlearn": ("ignore", False)}


def write_json(path: str, payload) -> str:
    """Writes `payload` (rows, a summary) as JSON at `path` (temp file + rename); returns `path`."""
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(payload, f, indent=1)
    os.replace(tmp, path)
    return path


def sft_rows(world: World, split: str, paraphrases: bool) -> list[dict]:
    """SFT rows of `split` ('sft' or 'sft_retain'); with `paraphrases`, every author fact also in
    its paraphrased form (paraphrased question -> paraphrased answer), and every background fact
    under its second question (so each fact is seen twice per epoch).

    TOFU's truth ratio compares the paraphrased answer with perturbed ones. A large model can
    state what it was taught in other words from its pre-training; a tiny model cannot, so the
    demo teaches the fact in both phrasings (each with its own question, so no question has two
    targets). Then the fine-tuned model prefers the true paraphrase and the retain-only twin does
    not, and forget quality measures unlearning as it does on TOFU.
    """
    rows = demo_pairs(world, split)
    if paraphrases:
        parts = ("retain", "forget", "background") if split == "sft" else ("retain", "background")
        rows += [{"question": f.paraphrased_question, "answer": f.paraphrased_answer}
                 for part in parts for f in world.facts_of(part)]
    return rows


def unlearning_rows(world: World, method: str, forget_people: Optional[Sequence[int]] = None
                    ) -> tuple[list[dict], list[dict]]:
    """(forget rows, retain rows) of the unlearning stage for `method` (see the module docstring).

    `forget_people`: indices into ``world.people`` of the authors to forget (a part of the forget
    split, e.g. one round of sequential unlearning); None: the whole forget split.
    """
    keep = demo_pairs(world, "retain") + demo_pairs(world, "background")
    if method == "sft":
        return keep, []
    if forget_people is None:
        forget = demo_pairs(world, "forget")
    else:
        outside = sorted(set(forget_people) - set(world.forget))
        if outside:
            raise ValueError(f"forget_people: {outside} are not forget authors of the world ({list(world.forget)})")
        forget = [f.qa_row() for i in forget_people for f in world.people[i].facts]
    return forget, keep if method in WITH_RETAIN else []


def train_config(stage: StageSection, kind: str, *, model_path: str, objective: ObjectiveSection,
                 forget_file: str, retain_file: Optional[str], output_dir: str, max_length: int, seed: int,
                 idk_file: Optional[str] = None) -> TrainConfig:
    """The TrainConfig of one demo stage (`kind` 'sft' or 'unlearn'), float32 on one device.

    `stage` must have steps, lr, batch_size and warmup_ratio filled in; its seed (when set)
    replaces `seed`.
    """
    pad_labels, attend = PADDING[kind]
    pad_labels = stage.pad_labels if stage.pad_labels is not None else pad_labels
    attend = stage.attend_padding if stage.attend_padding is not None else attend
    data: dict[str, Any] = {
        "model": {"path": model_path, "dtype": "float32", "param_dtype": "float32", "anchor_dtype": "float32"},
        "data": {"benchmark": "files", "forget_files": [forget_file], "retain_files": [retain_file] if retain_file else [],
                 "max_length": max_length, "buckets": [max_length // 2, max_length], "truncation": "error",
                 "pad_labels": pad_labels, "attend_padding": attend, "idk_file": idk_file},
        "objective": dataclasses.asdict(objective),
        "optim": {"lr": stage.lr, "warmup_ratio": stage.warmup_ratio, "schedule": "cosine"},
        "parallel": {"mesh": {"data": 1, "fsdp": 1, "tensor": 1}, "num_devices": 1},
        "checkpoint": {"every_steps": 0, "keep": 1},
        "batch_size": stage.batch_size, "max_steps": stage.steps, "seed": seed if stage.seed is None else stage.seed,
        "log_every": max(1, stage.steps // 20), "tensorboard": False, "output_dir": output_dir,
    }
    return structured.from_dict(TrainConfig, data)
