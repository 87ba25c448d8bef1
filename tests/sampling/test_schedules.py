"""Transfer-count schedules equal the reference formulas (reference-mdlm 4.1-4.3, pitfall 12)."""

import numpy as np
import pytest
import torch

from mdu_jax.sampling import schedules
from tests.sampling import reference_np as ref

MASKS = range(0, 41)
STEPS = range(1, 41)


def test_official_llada_counts_equal_the_even_split_with_early_remainder():
    for n in MASKS:
        for s in STEPS:
            got = schedules.llada_transfer_counts(n, s)
            assert got.tolist() == ref.official_llada_counts(n, s), (n, s)
            assert got.sum() == n


def test_dllm_counts_equal_dllm_formula_on_a_grid():
    for n in list(range(1, 40, 3)) + [64, 128]:
        for s in list(range(1, 60, 4)) + [128, 256]:
            got = schedules.dllm_transfer_counts(n, s)
            assert got.tolist() == ref.dllm_counts(n, s), (n, s)
            assert got.sum() == n and (got > 0).all()


def test_dllm_counts_round_half_to_even():
    # 5 masks in 2 steps: 5 * 1/2 = 2.5 rounds to 2 (half-up would give 3), then 3.
    assert schedules.dllm_transfer_counts(5, 2).tolist() == [2, 3]
    # 7 masks in 2 steps: 3.5 rounds to 4.
    assert schedules.dllm_transfer_counts(7, 2).tolist() == [4, 3]


def test_dllm_counts_drop_zero_steps():
    # MDU's TOFU setting: 128 masks, 256 steps -> 0, 1, 0, 1, ... compacted to 128 one-token steps.
    assert schedules.dllm_transfer_counts(128, 256).tolist() == [1] * 128
    assert ref.dllm_counts(128, 256) == [1] * 128


def test_dream_timesteps_equal_torch_linspace_bit_for_bit():
    for eps in (1e-3, 1e-2, 0.05):
        for s in list(range(1, 80)) + [128, 256, 500, 512, 1000]:
            np.testing.assert_array_equal(schedules.dream_timesteps(s, eps), torch.linspace(1, eps, s + 1).numpy())


def test_dream_counts_equal_the_float32_floor_formula():
    for n in range(1, 70, 4):
        for s in range(1, 80, 3):
            got = schedules.dream_transfer_counts(n, s)
            assert got.tolist() == ref.dream_counts(n, s), (n, s)
            assert got.sum() == n
    for n, s in ((64, 64), (128, 128), (5, 64), (128, 512)):
        assert schedules.dream_transfer_counts(n, s).tolist() == ref.dream_counts(n, s)


def test_dream_first_step_reveals_nothing_when_steps_equal_masks():
    counts = schedules.dream_transfer_counts(128, 128)
    assert counts[0] == 0 and counts.sum() == 128


def test_dream_reveal_probabilities_end_at_one():
    probs = schedules.dream_reveal_probs(10)
    ts = torch.linspace(1, 1e-3, 11)
    np.testing.assert_array_equal(probs[:-1], (1 - ts[1:-1] / ts[:-2]).numpy())
    assert probs[-1] == 1.0


def test_official_plan_requires_exact_division():
    with pytest.raises(ValueError, match="block_length"):
        schedules.llada_plan(10, 4, 10, "official")
    with pytest.raises(ValueError, match="steps"):
        schedules.llada_plan(16, 4, 6, "official")


def test_llada_plans_cover_every_block_in_order():
    plan = schedules.llada_plan(16, 4, 8, "official")
    assert plan == tuple((b, 2) for b in range(4) for _ in range(2))
    # dllm: ceil(10/4) = 3 blocks (4, 4, 2 masks), ceil(7/3) = 3 steps per block.
    plan = schedules.llada_plan(10, 4, 7, "dllm")
    expected = [(b, c) for b, n in enumerate((4, 4, 2)) for c in ref.dllm_counts(n, 3)]
    assert list(plan) == expected
    assert sum(c for _, c in plan) == 10
