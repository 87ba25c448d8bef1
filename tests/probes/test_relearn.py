"""The relearning attack helper: zero steps change nothing; some steps on the train part move the
held-out score; the split and the batches are what they say."""

import jax
import numpy as np
import pytest

from mdu_jax.experiments.relearn import finetune, heldout_nll, relearning_attack, sft_batches, split_pairs
from mdu_jax.training.config import OptimSection
from tests.training.loss_helpers import tiny_config, tiny_params

RNG = np.random.default_rng(3)
PAIRS = [(RNG.integers(2, 95, 3 + n % 2).tolist(), RNG.integers(2, 95, 4 + n % 3).tolist()) for n in range(6)]
OPTIM = OptimSection(lr=1e-2, schedule="constant", warmup_ratio=0.0, max_update_ratio=0.0)


def test_zero_steps_change_nothing():
    cfg = tiny_config("dream")
    params = tiny_params(cfg)
    train, held_out = split_pairs(PAIRS, 0.5, seed=1)
    tuned, result = relearning_attack(cfg, params, train, held_out, steps=0, optim=OPTIM)
    for a, b in zip(jax.tree.leaves(tuned), jax.tree.leaves(params)):
        assert np.asarray(a).tobytes() == np.asarray(b).tobytes()
    assert result.train_losses == []
    assert result.held_out == result.held_out_before == heldout_nll(cfg, params, held_out)


def test_a_few_steps_lower_the_training_pairs_nll():
    cfg = tiny_config("llada")
    params = tiny_params(cfg, scale=1.0)
    # Scored on the pairs it trains on: the direction is then certain (held-out rows of random
    # tokens share nothing with the train rows, so their score may go either way).
    tuned, result = relearning_attack(cfg, params, PAIRS, PAIRS, steps=20, optim=OPTIM, batch_size=6)
    assert len(result.train_losses) == 20
    assert result.held_out["nll"] < result.held_out_before["nll"] - 0.5, result
    assert any(not np.array_equal(np.asarray(a), np.asarray(b))
               for a, b in zip(jax.tree.leaves(tuned), jax.tree.leaves(params)))


def test_split_is_seeded_disjoint_and_complete():
    train, held_out = split_pairs(PAIRS, 0.34, seed=0)
    assert len(train) == 2 and len(held_out) == 4
    assert sorted(map(str, train + held_out)) == sorted(map(str, PAIRS))
    assert (train, held_out) == split_pairs(PAIRS, 0.34, seed=0)
    with pytest.raises(ValueError, match="train_fraction"):
        split_pairs(PAIRS, 1.0)


def test_batches_cycle_the_pairs_and_mask_only_answers():
    cfg = tiny_config("llada")
    batch = sft_batches(cfg, PAIRS[:3], 4)(1)  # rows 4, 5, 6, 7 -> pairs 1, 2, 0, 1
    prompt, answer = PAIRS[2]
    row = batch["input_ids"][1]
    assert row[: len(prompt) + len(answer)].tolist() == prompt + answer
    assert batch["maskable"][1].tolist() == [False] * len(prompt) + [True] * len(answer) + \
        [False] * (row.size - len(prompt) - len(answer))
    assert batch["input_ids"][0].tolist() == batch["input_ids"][3].tolist()
    with pytest.raises(ValueError, match="steps"):
        finetune(cfg, None, PAIRS, steps=-1, optim=OPTIM)
