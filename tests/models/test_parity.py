"""forward() equals transformers' bidirectional Llama (LLaDA) / Qwen2 (Dream) on the same weights."""

import numpy as np
import pytest

import mdu_jax as mj
from tests.fixtures import write_hf_checkpoint
from tests.models.reference_torch import reference_logits, reference_model

FP32_TOL = 1e-4
# bf16 keeps 8 significant bits: near the logit magnitudes here (|logit| <= ~3) one ulp is
# 2^-6 = 0.0156. Both sides round activations, weights, norms and RoPE to bf16 after every op, but
# in different orders (XLA fuses elementwise chains and accumulates matmuls in fp32; torch rounds
# between ops; Llama's RoPE runs in bf16 while LLaDA's runs in fp32), so a few ulps of drift are
# expected after two layers. Measured: max 0.039 (LLaDA) / 0.046 (Dream), mean 0.006-0.007.
# Bound: 5 ulps max, 1 ulp on average.
BF16_MAX_TOL = 5 * 2.0**-6
BF16_MEAN_TOL = 2.0**-6


def batch(vocab, lengths, T, seed=0):
    rng = np.random.default_rng(seed)
    ids = rng.integers(2, vocab - 1, size=(len(lengths), T))
    mask = np.zeros((len(lengths), T), np.int32)
    for b, n in enumerate(lengths):
        mask[b, :n] = 1
        ids[b, n:] = 1  # pad with eos, never with the mask id
    return ids.astype(np.int32), mask


def jax_logits(cfg, params, ids, mask):
    import jax
    import jax.numpy as jnp

    fn = jax.jit(lambda p, i, m: mj.forward(cfg, p, i, m))
    out = fn(params, jnp.asarray(ids), None if mask is None else jnp.asarray(mask))
    return np.asarray(out.astype(jnp.float32))


def compare(family, ours, ref, mask):
    """Compares at valid positions; for Dream ours[:, i] must equal ref[:, i-1] (right shift)."""
    if family == "dream":
        ref = np.concatenate([ref[:, :1], ref[:, :-1]], axis=1)
    valid = np.ones(ours.shape[:2], bool) if mask is None else mask.astype(bool)
    if family == "dream":
        valid[:, 0] = True  # position 0 is a copy of raw logit 0 on both sides
    return np.abs(ours - ref)[valid]


@pytest.mark.parametrize("family", ["llada", "dream"])
@pytest.mark.parametrize("padded", [False, True])
def test_forward_matches_transformers_fp32(tmp_path, family, padded):
    cfg_dict, sd = write_hf_checkpoint(tmp_path, family, dtype="float32", tokenizer=False)
    cfg, params, _ = mj.load_pretrained(tmp_path)
    assert cfg.family == family
    ids, mask = batch(cfg.vocab_size, [13, 9, 4], T=13, seed=1)
    mask_arg = mask if padded else None
    ours = jax_logits(cfg, params, ids, mask_arg)
    ref = reference_logits(reference_model(cfg_dict, sd), ids, mask_arg)
    diff = compare(family, ours, ref, mask_arg)
    assert diff.max() <= FP32_TOL, f"max |diff| {diff.max():.2e} > {FP32_TOL}"


@pytest.mark.parametrize("family", ["llada", "dream"])
def test_forward_matches_transformers_bf16(tmp_path, family):
    import torch

    cfg_dict, sd = write_hf_checkpoint(tmp_path, family, dtype="bfloat16", tokenizer=False)
    cfg, params, _ = mj.load_pretrained(tmp_path, dtype="bfloat16", param_dtype="bfloat16")
    ids, mask = batch(cfg.vocab_size, [11, 7], T=11, seed=2)
    ours = jax_logits(cfg, params, ids, mask)
    ref = reference_logits(reference_model(cfg_dict, sd, dtype=torch.bfloat16), ids, mask)
    diff = compare(family, ours, ref, mask)
    assert diff.max() <= BF16_MAX_TOL and diff.mean() <= BF16_MEAN_TOL, (diff.max(), diff.mean())


def test_dream_gqa_shapes_are_exercised(tmp_path):
    cfg_dict, _ = write_hf_checkpoint(tmp_path, "dream", tokenizer=False)
    cfg = mj.ModelConfig.from_hf(tmp_path)
    assert cfg.num_heads == 4 and cfg.num_kv_heads == 2 and cfg.qkv_bias
