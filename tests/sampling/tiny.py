"""Tiny random LLaDA / Dream models for sampler and likelihood tests.

``init_params``'s N(0, 0.02) matrices make nearly uniform predictions; these models use
N(0, 0.16) matrices (the LM head N(0, 0.48)), unit norms and nonzero q/k/v biases (Dream), so
logits are peaked and confidences well separated (no near-ties between fp32 and fp64 math).
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np

import mdu_jax
from mdu_jax.models.params import ParamSpec, param_specs

V, MASK, EOS = 64, 63, 1


def tiny_config(family: str, **changes) -> mdu_jax.ModelConfig:
    base = dict(family=family, vocab_size=V, hidden_size=32, num_layers=2, num_heads=4,
                num_kv_heads=4 if family == "llada" else 2, head_dim=8, intermediate_size=48,
                rope_theta=5e5 if family == "llada" else 1e6, rms_norm_eps=1e-5 if family == "llada" else 1e-6,
                tie_word_embeddings=False, qkv_bias=family == "dream", mask_token_id=MASK, eos_token_id=EOS,
                pad_token_id=EOS if family == "llada" else 2, bos_token_id=0, max_position_embeddings=256)
    base.update(changes)
    return mdu_jax.ModelConfig(**base)


@functools.lru_cache(maxsize=None)
def tiny_model(family: str, seed: int = 0):
    """(cfg, params) of a tiny random model, cached per (family, seed). Drawn with NumPy from
    ``param_specs`` (jax.random would compile one program per shape, seconds on this machine)."""
    cfg = tiny_config(family)
    rng = np.random.default_rng(seed)

    def make(path, spec):
        name = jax.tree_util.keystr(path)
        if spec.init == "ones":  # NumPy too: jnp.ones compiles a program per shape
            return jnp.asarray(np.ones(spec.shape, np.float32))
        if spec.init == "zeros":  # biases
            return jnp.asarray(0.1 * rng.standard_normal(spec.shape), jnp.float32)
        std = 0.48 if "lm_head" in name else 0.16  # a sharper head: peaked predictions
        return jnp.asarray(std * rng.standard_normal(spec.shape), jnp.float32)

    specs = param_specs(cfg)
    params = jax.tree_util.tree_map_with_path(make, specs, is_leaf=lambda x: isinstance(x, ParamSpec))
    return cfg, params


# LLVM's backend optimisation is most of the compile time of these tiny programs; the XLA
# program is unchanged (same as tests/objectives/quick_jit.py).
_QUICK = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}


@functools.lru_cache(maxsize=None)
def _jit_forward(cfg):
    return jax.jit(lambda p, ids: mdu_jax.forward(cfg, p, ids), compiler_options=_QUICK)


def row_logits(cfg, params, rows) -> np.ndarray:
    """float64 logits [N, T, V] of unpadded rows (no attention mask, default positions), each
    row as the model sees it alone: logits[:, i] predicts token i (Dream already shifted)."""
    ids = np.asarray(rows, dtype=np.int32).reshape(len(rows), -1)
    return np.asarray(_jit_forward(cfg)(params, ids), dtype=np.float64)
