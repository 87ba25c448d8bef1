"""Release-code semantics that the transformers stand-ins of test_parity.py cannot see.

- RoPE precision. LLaDA's release rotates q/k in float32 and casts back once
  (``rope_full_precision``); Dream's rotates in bf16 with bf16 cos/sin tables (reference-mdlm
  1.3, 2.3, 8.2). transformers' Llama rotates in bf16, and in a bf16 forward the two choices
  differ by about one ulp per rotated element, below the drift between any two bf16
  implementations (test_parity's 5-ulp bound), so the parity test passes either way. Here
  `apply_rope` is checked against float64: in float32 mode every output is the correctly rounded
  bf16 value of the exact rotation; in bf16 mode it is exactly NumPy's op-by-op bf16 arithmetic.
  Then each family's bf16 forward must be bit-identical to its forward with RoPE forced to the
  release's precision, and differ from the other precision.
- Padding masks. LLaDA masks keys only: a padded query still attends to the valid keys. Dream
  masks queries and keys: a padded query sees nothing (the release's SDPA then returns NaN or
  garbage there; with a finite mask value, as here, a uniform average over all keys). The
  parity test compares valid positions only, where the two masks agree; here every position is
  compared, LLaDA against the stand-in with its own (key-only) padding mask, Dream against the
  stand-in given Dream's query-and-key mask as an additive bias of float32's finite minimum.
"""

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest
import torch

import mdu_jax as mj
from mdu_jax.models import layers
from tests.fixtures import write_hf_checkpoint
from tests.models.reference_torch import reference_logits, reference_model

BF16 = ml_dtypes.bfloat16


def bf16(a):
    """float64 values rounded to bf16 (round to nearest even), back in float64."""
    return np.asarray(a, np.float64).astype(BF16).astype(np.float64)


def bf16_ulp(a):
    """The spacing of bf16 numbers at |a| (8 significant bits)."""
    return 2.0 ** (np.floor(np.log2(np.maximum(np.abs(bf16(a)), 1e-30))) - 7)


@pytest.fixture(scope="module")
def rope_case():
    """bf16 q-like activations [2, 64, 4, 16] and the float32 RoPE tables of positions 0..63."""
    B, T, N, h = 2, 64, 4, 16
    x = (3.0 * jax.random.normal(jax.random.key(0), (B, T, N, h), jnp.float32)).astype(jnp.bfloat16)
    cos, sin = layers.rope_tables(jnp.arange(T)[None], h, 10000.0)
    x64 = np.asarray(x, np.float64)
    c64, s64 = (np.asarray(t, np.float64)[:, :, None, :] for t in (cos, sin))
    rotated = np.concatenate([-x64[..., h // 2:], x64[..., :h // 2]], axis=-1)
    return x, cos, sin, x64, c64, s64, rotated


def test_rope_in_fp32_is_the_correctly_rounded_rotation(rope_case):
    x, cos, sin, x64, c64, s64, rotated = rope_case
    exact = x64 * c64 + rotated * s64  # float64: exact to far below a bf16 ulp
    out = np.asarray(jax.jit(layers.apply_rope, static_argnums=3)(x, cos, sin, True), np.float64)
    assert out.dtype == np.float64 and np.asarray(layers.apply_rope(x, cos, sin, True)).dtype == BF16
    np.testing.assert_array_equal(out, bf16(exact))
    assert np.all(np.abs(out - exact) <= 0.5 * bf16_ulp(exact))


def test_rope_in_bf16_rounds_after_every_operation(rope_case):
    x, cos, sin, x64, c64, s64, rotated = rope_case
    emulated = bf16(bf16(x64 * bf16(c64)) + bf16(rotated * bf16(s64)))
    out = np.asarray(jax.jit(layers.apply_rope, static_argnums=3)(x, cos, sin, False), np.float64)
    np.testing.assert_array_equal(out, emulated)
    # Power: the two precisions differ on a large share of the elements (measured: 29%).
    exact = x64 * c64 + rotated * s64
    assert np.mean(out != bf16(exact)) > 0.1


@pytest.fixture(scope="module", params=["llada", "dream"])
def bf16_model(request, tmp_path_factory):
    folder = tmp_path_factory.mktemp(f"{request.param}_bf16")
    write_hf_checkpoint(folder, request.param, dtype="bfloat16", tokenizer=False)
    cfg, params, _ = mj.load_pretrained(folder, dtype="bfloat16", param_dtype="bfloat16")
    ids = np.random.default_rng(0).integers(2, cfg.vocab_size - 1, size=(2, 24)).astype(np.int32)
    return cfg, params, ids


def forward_with_rope(monkeypatch, cfg, params, ids, forced):
    """The bf16 forward as shipped (`forced` None) or with every RoPE call forced to float32
    (True) or bf16 (False) arithmetic, whatever the model asks for."""
    if forced is not None:
        original = layers.apply_rope
        monkeypatch.setattr(layers, "apply_rope", lambda x, cos, sin, in_fp32: original(x, cos, sin, forced))
    try:
        return np.asarray(jax.jit(lambda p, i: mj.forward(cfg, p, i))(params, ids).astype(jnp.float32))
    finally:
        monkeypatch.undo()


def test_each_family_rotates_at_its_release_precision(bf16_model, monkeypatch):
    cfg, params, ids = bf16_model
    release_fp32 = cfg.family == "llada"
    shipped = forward_with_rope(monkeypatch, cfg, params, ids, None)
    release = forward_with_rope(monkeypatch, cfg, params, ids, release_fp32)
    other = forward_with_rope(monkeypatch, cfg, params, ids, not release_fp32)
    np.testing.assert_array_equal(shipped, release)
    assert np.mean(shipped != other) > 0.05  # power: the other precision changes the logits


@pytest.mark.parametrize("family", ["llada", "dream"])
def test_padded_positions_follow_the_release_mask(tmp_path, family):
    cfg_dict, sd = write_hf_checkpoint(tmp_path, family, tokenizer=False)
    cfg, params, _ = mj.load_pretrained(tmp_path)
    rng = np.random.default_rng(1)
    ids = rng.integers(2, cfg.vocab_size - 1, size=(2, 9)).astype(np.int32)
    mask = np.ones((2, 9), np.int32)
    mask[0, 5:] = 0
    ids[0, 5:] = cfg.pad_token_id
    ours = np.asarray(jax.jit(lambda p, i, m: mj.forward(cfg, p, i, m))(params, ids, mask))
    model = reference_model(cfg_dict, sd)
    if family == "llada":
        ref = reference_logits(model, ids, mask)  # transformers' padding mask: keys only, as LLaDA's
        other = query_and_key_reference(model, ids, mask)
    else:
        ref = query_and_key_reference(model, ids, mask)
        other = reference_logits(model, ids, mask)
        ref, other = (np.concatenate([r[:, :1], r[:, :-1]], axis=1) for r in (ref, other))  # Dream's shift
    padded = ~mask.astype(bool)
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-4)  # test_parity's fp32 tolerance
    # Power: the other family's mask changes the padded positions (only those).
    assert np.abs(ours - other)[padded].max() > 0.1
    np.testing.assert_allclose(ours[~padded], other[~padded], rtol=0, atol=1e-4)


def query_and_key_reference(model, ids, mask):
    """The stand-in's logits under Dream's [B, 1, T, T] query AND key mask, passed as an additive
    float32 bias (0 where both are valid, float32's minimum elsewhere)."""
    m = torch.as_tensor(mask, dtype=torch.bool)
    both = m[:, None, None, :] & m[:, None, :, None]
    bias = torch.zeros(both.shape).masked_fill(~both, torch.finfo(torch.float32).min)
    with torch.no_grad():
        return model(input_ids=torch.as_tensor(ids, dtype=torch.long), attention_mask=bias).logits.float().numpy()
