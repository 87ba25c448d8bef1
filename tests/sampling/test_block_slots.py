"""With several LLaDA blocks a denoising step computes the logits of its own block's slots only
(``sampler.reads_current_block``): the other slots cannot be revealed at that step, so their
logits cannot matter. These tests check the condition and that generations are the same tokens
as with every slot's logits computed (the block's logits differ from that path by float32
summation order at most; the tiny models' peaked predictions leave no near-ties for that to
flip), for greedy, Gumbel-noise and random remasking, with and without classifier-free guidance.
"""

import numpy as np
import pytest

from mdu_jax.sampling import generate, make_spec, sampler
from tests.sampling.tiny import MASK, tiny_model


def test_which_plans_read_only_the_current_block():
    cfg, _ = tiny_model("llada")
    dream_cfg, _ = tiny_model("dream")
    assert sampler.reads_current_block(make_spec(cfg, gen_length=64, steps=64, block_length=32))
    assert sampler.read_slots(make_spec(cfg, gen_length=64, steps=16, block_length=16)) == 16
    # one block: every slot is the block's
    assert not sampler.reads_current_block(make_spec(cfg, gen_length=32, steps=32))
    # dllm schedule with a shorter last block: slices of block_length would not fit it
    assert not sampler.reads_current_block(make_spec(cfg, gen_length=40, steps=40, block_length=16,
                                                     schedule="dllm"))
    assert sampler.read_slots(make_spec(dream_cfg, gen_length=32, steps=32)) == 32


@pytest.mark.parametrize("options", [
    dict(),
    dict(temperature=0.7),
    dict(algorithm="random", temperature=0.5),
    dict(cfg_scale=1.5),
])
def test_generations_equal_the_every_slot_path(monkeypatch, options):
    cfg, params = tiny_model("llada")
    rng = np.random.default_rng(5)
    prompts = [list(rng.integers(2, MASK, n)) for n in (7, 30, 61)]
    kw = dict(gen_length=64, steps=32, block_length=16, prompt_buckets=None, seed=3, **options)
    now = generate(cfg, params, prompts, **kw).tokens
    sampler.denoise.clear_cache()
    monkeypatch.setattr(sampler, "reads_current_block", lambda spec: False)
    every_slot = generate(cfg, params, prompts, **kw).tokens
    sampler.denoise.clear_cache()  # no later test may reuse the patched program
    assert (now != MASK).all()
    np.testing.assert_array_equal(now, every_slot)
