"""generate's batching plan, segment-wise progress and exact early stop."""

import numpy as np
import pytest

from mdu_jax.sampling import generate, make_spec
from mdu_jax.sampling.prompts import batch_bucket, bucket_length, plan_batches, shared_buckets, trim_at_stop
from mdu_jax.sampling.sampler import segments, settled_rows
from tests.sampling.tiny import MASK, tiny_model


def test_batch_rows_follow_the_one_and_a_half_ladder():
    assert [batch_bucket(n, 64) for n in (1, 2, 3, 4, 5, 7, 9, 13, 17, 25, 33, 49, 100)] == [
        1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 64]
    assert batch_bucket(5, 4) == 4


def test_plan_batches_pads_canvases_and_keeps_far_apart_lengths_apart():
    # RWKU's BBH prompts under a small tokenizer: three of ~1.25k tokens and one of ~2.7k.
    plan = plan_batches([1277, 1279, 2729, 1278], 256, 32)
    assert [(b.indices, b.rows, b.length) for b in plan] == [((0, 3, 1), 3, 1536), ((2,), 1, 3072)]
    # Lengths within a factor 2 of buckets share one batch (and one program), padded to the longest.
    plan = plan_batches([106, 81, 72, 37], 256, 32)
    assert [(b.indices, b.rows, b.length) for b in plan] == [((3, 2, 1, 0), 4, 384)]
    assert plan[0].length == bucket_length(106 + 256)
    # batch_size caps a batch; every prompt lands in exactly one batch.
    plan = plan_batches(list(range(1, 11)), 8, 4)
    assert [b.indices for b in plan] == [(0, 1, 2, 3), (4, 5, 6, 7), (8, 9)]
    with pytest.raises(ValueError, match="batch_size"):
        plan_batches([3], 8, 0)


def test_shared_buckets_group_lengths_less_than_twice_apart():
    assert shared_buckets([64, 96, 192, 96]) == {64: 96, 96: 96, 192: 192}
    assert shared_buckets([384, 512, 768]) == {384: 512, 512: 512, 768: 768}
    assert shared_buckets([16, 24, 32, 48, 64]) == {16: 24, 24: 24, 32: 48, 48: 48, 64: 64}
    assert shared_buckets([128]) == {128: 128} and shared_buckets([]) == {}


def test_settled_rows_need_a_stop_after_revealed_slots_only():
    stop = [1]
    tokens = np.array([[5, 1, MASK, MASK],    # stop after revealed slots: settled
                       [5, MASK, 1, 7],       # a masked slot before the stop: not yet
                       [5, 6, 7, 8],          # no stop at all
                       [1, MASK, MASK, MASK]])
    assert settled_rows(tokens, MASK, stop).tolist() == [True, False, False, True]
    assert not settled_rows(tokens, MASK, []).any()


@pytest.mark.parametrize("family,kw", [
    ("llada", dict(gen_length=16, steps=16, block_length=4)),
    ("dream", dict(gen_length=40, steps=40)),  # two segments: 32 steps, then 8
])
def test_progress_counts_every_step_and_early_stop_keeps_the_texts(family, kw):
    cfg, params = tiny_model(family)
    prompts = [[5, 6, 7], [8, 9, 10, 11, 12], [20, 21], [30, 31, 32, 33]]
    spec = make_spec(cfg, **kw)
    calls = []
    full = generate(cfg, params, prompts, stop_token_ids=(), on_forward=calls.append, **kw)
    batches = plan_batches([len(p) for p in prompts], kw["gen_length"], 32)
    assert calls == [b - a for a, b in segments(spec)] * len(batches) and len(calls) >= 2
    assert full.steps_run == len(spec.plan) * len(batches) and full.steps_skipped == 0
    # LLaDA: the token each row put in slot 0 is a stop id, so every row is settled after the
    # first block and the rest is skipped. Dream reveals slots in any order: whether slot 0 is
    # revealed after the first segment depends on the model, so only the invariants are checked.
    stops = sorted({int(row[0]) for row in full.tokens})
    calls = []
    early = generate(cfg, params, prompts, stop_token_ids=stops, stop_early=True, on_forward=calls.append, **kw)
    total = len(spec.plan) * len(batches)
    assert sum(calls) == total and early.steps_run + early.steps_skipped == total  # the bar reaches its total
    if family == "llada":
        assert early.steps_run == segments(spec)[0][1] * len(batches)
    for row_full, row_early in zip(full.tokens, early.tokens):
        assert trim_at_stop(row_early, stops) == trim_at_stop(row_full, stops)
