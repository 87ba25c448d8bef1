"""The relearning attack: fine-tune for k steps on part of the forget set, score the held-out part.

If unlearning only hid the knowledge, a few steps of ordinary fine-tuning on *some* forget rows
bring back the *other* ones too; if it removed it, the held-out rows recover no faster than on
the model before fine-tuning on them. The fine-tuning is the training package's own SFT loss
(``training.loss.make_loss_fn`` with method ``sft``: the masked-diffusion loss on answer tokens),
AdamW chain (``training.optimizer.make_optimizer``), state and step (``training.state``,
``training.step``), compiled once with ``jax.jit`` on one device: no second trainer.

Batches: the train pairs cycled in a fixed order, `batch_size` rows per step, right-padded to the
longest pair (one compiled program); the answer tokens are maskable, the prompt and padding not.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from mdu_jax.data.batching import pad_rows
from mdu_jax.likelihood import eq14_nll
from mdu_jax.models.config import ModelConfig
from mdu_jax.training.config import ObjectiveSection, OptimSection
from mdu_jax.training.loss import make_loss_fn
from mdu_jax.training.optimizer import make_optimizer
from mdu_jax.training.state import init_state
from mdu_jax.training.step import make_step

ScoreFn = Callable[[ModelConfig, Any, Sequence], dict[str, float]]


def split_pairs(pairs: Sequence, train_fraction: float, *, seed: int = 0) -> tuple[list, list]:
    """(train, held_out): a seeded random split of `pairs`, round(train_fraction * N) rows to train
    (at least one on each side)."""
    if not 0.0 < train_fraction < 1.0:
        raise ValueError(f"train_fraction: expected 0 < f < 1, got {train_fraction}")
    if len(pairs) < 2:
        raise ValueError(f"pairs: need at least 2 to split, got {len(pairs)}")
    perm = np.random.default_rng(seed).permutation(len(pairs))
    n_train = min(max(int(round(train_fraction * len(pairs))), 1), len(pairs) - 1)
    return [pairs[i] for i in sorted(perm[:n_train])], [pairs[i] for i in sorted(perm[n_train:])]


def sft_batches(cfg: ModelConfig, pairs: Sequence, batch_size: int) -> Callable[[int], dict[str, np.ndarray]]:
    """step -> the training batch of that step: rows ``(step * batch_size + j) mod N`` of `pairs`
    as {input_ids int32 [B, T], maskable bool [B, T] (answer tokens), attention_mask int32 [B, T],
    is_forget bool [B] (False: the SFT loss uses every row)}, T the longest prompt + answer."""
    if not pairs:
        raise ValueError("pairs: nothing to fine-tune on")
    rows = [np.concatenate([np.asarray(p, np.int32), np.asarray(a, np.int32)]) for p, a in pairs]
    prompt_lens = [len(p) for p, _ in pairs]
    ids, maskable, attn = pad_rows(rows, prompt_lens, max(len(r) for r in rows), cfg.pad_token_id, "ignore")

    def batch(step: int) -> dict[str, np.ndarray]:
        take = (step * batch_size + np.arange(batch_size)) % len(rows)
        return {"input_ids": ids[take], "maskable": maskable[take], "attention_mask": attn[take],
                "is_forget": np.zeros(batch_size, bool)}

    return batch


def finetune(cfg: ModelConfig, params, pairs: Sequence, *, steps: int, optim: OptimSection,
             batch_size: int = 8, seed: int = 0, loss_weight: str | None = None,
             chunk_size: int = 0) -> tuple[Any, list[float]]:
    """(params after `steps` SFT optimiser steps on `pairs`, the loss of each step).

    pairs: (prompt_ids, answer_ids) int sequences. `optim`: the training package's optimiser
    section (AdamW, schedule over `steps`, clipping, update guard). ``steps == 0`` returns
    `params` itself, untouched. Runs on the default device, params in their own dtype.
    `loss_weight`: the MDLM loss weight, "scheduler" (1/t, LLaDA's SFT) or "uniform"; None: the family default.
    `chunk_size` > 0: the loss over sequence chunks (``objective.chunk_size``: the [B, T, V]
    logits never exist at once; the memory a full-size vocabulary needs).
    """
    if steps < 0:
        raise ValueError(f"steps: expected >= 0, got {steps}")
    if steps == 0:
        return params, []
    if optim.grad_accum != 1:
        raise ValueError("optim.grad_accum: the relearning attack counts optimiser steps; use 1")
    optim.validate()
    tx, _ = make_optimizer(optim, steps)
    loss_fn = make_loss_fn(cfg, ObjectiveSection(method="sft", retain_loss_weight=loss_weight, chunk_size=chunk_size))
    # The state is donated, so each step updates it in place; it starts from a copy because the
    # caller keeps `params` (the attack runs again from them at another step count).
    step_fn = jax.jit(make_step(loss_fn, tx, max_update_ratio=optim.max_update_ratio), donate_argnums=0)
    batches = sft_batches(cfg, pairs, batch_size)
    state = init_state(jax.tree.map(jnp.copy, params), tx, seed)
    losses = []
    for i in range(steps):
        state, metrics = step_fn(state, None, jax.tree.map(jnp.asarray, batches(i)))
        losses.append(float(metrics["loss"]))
    return state["params"], losses


def heldout_nll(cfg: ModelConfig, params, pairs: Sequence, *, mc_samples: int = 32, seed: int = 42) -> dict[str, float]:
    """The default held-out score: mean over pairs of MDU's Eq. 14 per-token NLL (nats/token,
    ``likelihood.eq14_nll`` at a fixed seed, so equal params give equal numbers) and the mean
    of exp(-nll) (MDU's probability)."""
    nll = eq14_nll(cfg, params, pairs, mc_samples=mc_samples, seed=seed)
    return {"nll": float(np.mean(nll)), "probability": float(np.mean(np.exp(-nll)))}


@dataclasses.dataclass
class RelearnResult:
    """steps: optimiser steps taken; train_losses: the SFT loss of each; held_out: the score of the
    held-out pairs after fine-tuning; held_out_before: the same score before it."""

    steps: int
    train_losses: list[float]
    held_out: dict[str, float]
    held_out_before: dict[str, float]

    def to_json(self) -> dict[str, Any]:
        """The result as a JSON-ready dict of its fields."""
        return dataclasses.asdict(self)


def relearning_attack(cfg: ModelConfig, params, train_pairs: Sequence, held_out_pairs: Sequence, *, steps: int,
                      optim: OptimSection, batch_size: int = 8, seed: int = 0,
                      score: ScoreFn = heldout_nll) -> tuple[Any, RelearnResult]:
    """Fine-tune `params` for `steps` SFT steps on `train_pairs` (``finetune``), then score
    `held_out_pairs` with `score(cfg, params, pairs) -> {name: float}`, before and after.
    Returns (the fine-tuned params, RelearnResult)."""
    if not held_out_pairs:
        raise ValueError("held_out_pairs: nothing to score")
    before = score(cfg, params, held_out_pairs)
    tuned, losses = finetune(cfg, params, train_pairs, steps=steps, optim=optim, batch_size=batch_size, seed=seed)
    after = score(cfg, tuned, held_out_pairs)
    return tuned, RelearnResult(steps=steps, train_losses=losses, held_out=after, held_out_before=before)


__all__ = ["split_pairs", "sft_batches", "finetune", "heldout_nll", "RelearnResult", "relearning_attack"]
