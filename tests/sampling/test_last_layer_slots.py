"""The sampler's last layer computes only the generation slots (``slot_logits`` reads
``hidden_states(..., read_at=slots)``). Before, the whole canvas went through every layer and
the slots were gathered after the final norm; this checks that the generations are the same
tokens as with that path, for LLaDA blocks on a canvas of several attention chunks (bucket 384: 3 of
``layers.ATTENTION_CHUNK`` = 128, the rows' padding starting in different chunks) and for Dream's left-padded layout. The logits differ by a few ulp at most (see
tests/models/test_read_at.py); the tiny models' peaked predictions leave no near-ties for that
to flip.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mdu_jax.models.transformer import hidden_states, logits_from_hidden
from mdu_jax.sampling import common, generate, sampler
from mdu_jax.sampling.common import write_slots
from tests.sampling.tiny import MASK, tiny_model


def _full_canvas_slot_logits(cfg, params, gen, input_ids, uncond_ids, attention_mask, position_ids, gen_index,
                             cfg_scale, read_index=None):
    """The previous path: every layer over every position, the slots gathered at the end."""
    assert cfg_scale == 0
    index = gen_index if read_index is None else read_index
    h = hidden_states(cfg, params, write_slots(input_ids, gen_index, gen), attention_mask, position_ids)
    h = jnp.take_along_axis(h, index[..., None], axis=1)
    return logits_from_hidden(cfg, params, h).astype(jnp.float32)


@pytest.mark.parametrize("family, prompt_lengths, gen_length, block_length", [
    ("llada", (140, 200, 230), 64, 32),  # canvas bucket 384: 3 attention chunks
    ("dream", (5, 17, 40), 32, None),
])
def test_generations_equal_the_full_canvas_path(monkeypatch, family, prompt_lengths, gen_length, block_length):
    cfg, params = tiny_model(family)
    rng = np.random.default_rng(3)
    prompts = [list(rng.integers(2, MASK, n)) for n in prompt_lengths]
    kw = dict(gen_length=gen_length, steps=gen_length, block_length=block_length, prompt_buckets=None)
    now = generate(cfg, params, prompts, **kw).tokens
    sampler.denoise.clear_cache()
    traced = []
    monkeypatch.setattr(sampler, "slot_logits", lambda *a, **k: traced.append(1) or _full_canvas_slot_logits(*a, **k))
    before = generate(cfg, params, prompts, **kw).tokens
    sampler.denoise.clear_cache()  # no later test may reuse the patched program
    assert traced  # the previous path did run
    assert (now != MASK).all()
    np.testing.assert_array_equal(now, before)


def test_slot_logits_match_the_full_canvas_path():
    cfg, params = tiny_model("llada")
    rng = np.random.default_rng(4)
    B, T, G = 2, 640, 48
    ids = rng.integers(2, MASK, (B, T)).astype(np.int32)
    attn = np.ones((B, T), np.int32)
    attn[1, 500:] = 0
    index = np.stack([np.arange(G) + 200, np.arange(G) + 452]).astype(np.int32)
    gen = np.where(rng.random((B, G)) < 0.5, MASK, rng.integers(2, MASK, (B, G))).astype(np.int32)
    pos = np.broadcast_to(np.arange(T, dtype=np.int32), (B, T))
    args = (params, jnp.asarray(gen), ids, ids, attn, pos, index)
    got = jax.jit(lambda *a: common.slot_logits(cfg, *a, 0.0))(*args)
    want = jax.jit(lambda *a: _full_canvas_slot_logits(cfg, *a, 0.0))(*args)
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=0, atol=1e-5)
