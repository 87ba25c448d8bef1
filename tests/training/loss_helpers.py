"""A tiny model, a training-shaped batch and the train loss, shared by the performance-option tests."""

from __future__ import annotations

import functools
import jax
import jax.numpy as jnp
import numpy as np

from mdu_jax.training.config import ObjectiveSection
from mdu_jax.models.config import ModelConfig
from mdu_jax.models.params import init_params
from mdu_jax.training.loss import make_loss_fn


def tiny_config(family: str = "llada", **changes) -> ModelConfig:
    """D=32, 2 layers, 4 heads (Dream: 2 kv heads + qkv biases), V=96, float32."""
    dream = family == "dream"
    fields = dict(family=family, vocab_size=96, hidden_size=32, num_layers=2, num_heads=4,
                  num_kv_heads=2 if dream else 4, head_dim=8, intermediate_size=48, rope_theta=10000.0,
                  rms_norm_eps=1e-6, tie_word_embeddings=False, qkv_bias=dream, mask_token_id=95,
                  eos_token_id=1, pad_token_id=1)
    fields.update(changes)
    return ModelConfig(**fields)


@functools.lru_cache(maxsize=None)
def _scaled_init(cfg: ModelConfig, scale: float):
    """One compiled init program per (config, scale), shared by every seed and test of the process
    (a new jit per call traced and compiled the same program again, ~3 CPU s each)."""
    def make(key):  # one compiled program instead of one per random op
        params = init_params(cfg, key)
        return jax.tree_util.tree_map_with_path(
            lambda p, x: x * scale if p[-1].key in ("kernel", "embedding") else x, params)

    return jax.jit(make)


def tiny_params(cfg: ModelConfig, seed: int = 0, scale: float = 5.0):
    """Random params with larger-than-init weights, so the logits (and gradients) are far from uniform."""
    return _scaled_init(cfg, float(scale))(jax.random.key(seed))


def tiny_batch(B: int = 4, T: int = 16, V: int = 96, seed: int = 0) -> dict[str, np.ndarray]:
    """Rows of prompt | response | right padding; half forget, half retain."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(2, V - 1, (B, T)).astype(np.int32)
    maskable = np.zeros((B, T), bool)
    attn = np.zeros((B, T), np.int32)
    for b in range(B):
        prompt, length = 2 + b % 3, T - 3 * (b % 2)
        maskable[b, prompt:length] = True
        attn[b, :length] = 1
        ids[b, length:] = 1
    return {"input_ids": ids, "maskable": maskable, "attention_mask": attn, "is_forget": np.arange(B) % 2 == 0}


def loss_and_grads(cfg: ModelConfig, params, anchor, batch, *, key_seed: int = 3, **loss_kwargs):
    """(loss, aux, grads) of the train loss (MDU unless `method` is given) at one key."""
    obj_fields = {k: loss_kwargs.pop(k) for k in list(loss_kwargs) if k in ObjectiveSection.__dataclass_fields__}
    obj = ObjectiveSection(**{"method": "mdu", "tau": 0.5, **obj_fields})
    loss_fn = make_loss_fn(cfg, obj, **loss_kwargs)
    batch = jax.tree.map(jnp.asarray, batch)
    f = jax.jit(jax.value_and_grad(lambda p: loss_fn(p, anchor, batch, jax.random.key(key_seed), 0, None),
                                   has_aux=True))
    (loss, aux), grads = f(params)
    return loss, aux, grads


def assert_trees_close(a, b, rtol, atol, what=""):
    """Leaf-by-leaf allclose, naming the leaf that differs."""
    la = jax.tree_util.tree_leaves_with_path(a)
    lb = jax.tree.leaves(b)
    assert len(la) == len(lb), what
    for (path, x), y in zip(la, lb):
        np.testing.assert_allclose(np.asarray(x, np.float64), np.asarray(y, np.float64), rtol=rtol, atol=atol,
                                   err_msg=f"{what} {jax.tree_util.keystr(path)}")
