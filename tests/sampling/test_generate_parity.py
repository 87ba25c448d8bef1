"""The compiled samplers produce exactly the tokens of the step-by-step NumPy references
(reference_np.py), on tiny random models, for batches of prompts of different lengths.

Temperature 0 needs no shared randomness. Where an algorithm draws (random remasking, Gumbel
temperature, Dream 'origin'), the reference receives the same draws, made here from the
documented streams: row r, step i -> fold_in(fold_in(key(seed), r), i), then fold_in(., 0) for
token noise and fold_in(., 1) for position noise, over the gen_length slots.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mdu_jax.sampling import generate
from tests.sampling import reference_np as ref
from tests.sampling.tiny import EOS, tiny_model

PROMPTS = [[5, 6, 7], [8, 9, 10, 11, 12, 13, 14], [20, 21, 22, 23, 24]]  # batch of 3 -> 4 padded rows


@functools.partial(jax.jit, static_argnames=("gen_length", "vocab"))
def _draws(seed, row, step, gen_length, vocab):
    step_key = jax.random.fold_in(jax.random.fold_in(jax.random.key(seed), row), step)
    token_key, position_key = jax.random.fold_in(step_key, 0), jax.random.fold_in(step_key, 1)
    return (jax.random.uniform(position_key, (gen_length,), jnp.float32),
            jax.random.gumbel(token_key, (gen_length, vocab), jnp.float32))


def shared_draws(seed: int, row: int, gen_length: int, vocab: int):
    def draws(step):
        uniform, gumbel = _draws(np.uint32(seed), row, step, gen_length, vocab)
        return {"uniform": np.asarray(uniform), "gumbel": np.asarray(gumbel, np.float64)}

    return draws


# One generation length everywhere keeps the reference's compiled forwards to three shapes.
G = 12
LLADA_CASES = {
    "one_block": dict(gen_length=G, steps=G, block_length=G),
    "three_blocks_two_tokens_per_step": dict(gen_length=G, steps=6, block_length=4),
    "dllm_uneven_blocks_and_empty_steps": dict(gen_length=G, steps=24, block_length=5, schedule="dllm"),
    "cfg": dict(gen_length=G, steps=6, block_length=6, cfg_scale=1.5),
    "suppression": dict(gen_length=G, steps=4, block_length=G, suppress_tokens=(EOS, 27),
                        confidence_suppress_tokens=(37,)),
    "random_remasking_gumbel_temperature": dict(gen_length=G, steps=G, block_length=4, algorithm="random",
                                                temperature=0.7, seed=3),
}


@pytest.mark.parametrize("case", list(LLADA_CASES))
def test_llada_generate_equals_numpy_reference(case):
    cfg, params = tiny_model("llada")
    kw = dict(LLADA_CASES[case])
    out = generate(cfg, params, PROMPTS, **kw).tokens
    seed = kw.pop("seed", 0)
    remasking = kw.pop("algorithm", "low_confidence")
    suppress = kw.pop("suppress_tokens", ())
    confidence_suppress = kw.pop("confidence_suppress_tokens", ())
    for row, prompt in enumerate(PROMPTS):
        draws = shared_draws(seed, row, kw["gen_length"], cfg.vocab_size)
        expected = ref.llada_generate(cfg, params, prompt, remasking=remasking, suppress=suppress,
                                      confidence_suppress=confidence_suppress, draws=draws, **kw)
        np.testing.assert_array_equal(out[row], expected, err_msg=f"{case}, prompt {row}")
    if suppress:
        assert not np.isin(out, suppress).any()


DREAM_CASES = {
    "origin": dict(algorithm="origin", gen_length=G, steps=G, seed=5),
    "maskgit_plus": dict(algorithm="maskgit_plus", gen_length=G, steps=G),
    "topk_margin": dict(algorithm="topk_margin", gen_length=G, steps=G),
    "entropy": dict(algorithm="entropy", gen_length=G, steps=G),
    "entropy_few_steps_top_p_top_k": dict(algorithm="entropy", gen_length=G, steps=5, top_p=0.7, top_k=6),
    "maskgit_plus_top_p": dict(algorithm="maskgit_plus", gen_length=G, steps=4, top_p=0.5),
}


@pytest.mark.parametrize("case", list(DREAM_CASES))
def test_dream_generate_equals_numpy_reference(case):
    cfg, params = tiny_model("dream")
    kw = dict(DREAM_CASES[case])
    out = generate(cfg, params, PROMPTS, **kw).tokens
    seed = kw.pop("seed", 0)
    alg = kw.pop("algorithm")
    for row, prompt in enumerate(PROMPTS):
        draws = shared_draws(seed, row, kw["gen_length"], cfg.vocab_size)
        expected = ref.dream_generate(cfg, params, prompt, alg=alg, draws=draws, **kw)
        np.testing.assert_array_equal(out[row], expected, err_msg=f"{case}, prompt {row}")
