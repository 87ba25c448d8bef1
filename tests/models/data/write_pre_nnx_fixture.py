"""Writes ``tests/models/data/pre_nnx/``: what the last functional-model commit (541a937, before the
models became Flax NNX modules) produced, for ``tests/models/test_pre_nnx_compat.py``.

Run it from a checkout of that commit (it uses only APIs that commit has)::

    git worktree add /tmp/old 541a937
    cd /tmp/old && python /path/to/write_pre_nnx_fixture.py /path/to/tests/models/data/pre_nnx

It writes, for a micro LLaDA (MHA) and a micro Dream (GQA, qkv biases):

- ``structure.json``: {case: {param path: [shape, dtype]}} of ``init_params`` for the test suite's
  tiny configs (and a tied-embedding bf16 LLaDA);
- ``run_<family>/``: an orbax run checkpoint (``RunCheckpointer``) of the train state after one MDU
  step, and the anchor (``save_anchor``); ``run_lora/``: the same for a LoRA run (adapters as params);
- ``converted_<family>/``: ``checkpoints_convert import`` of the micro model's HF export;
- ``values.npz``: checksums of every saved leaf (by its '/'-joined path), the micro batch, and the
  old code's logits, hidden states (of the anchor params) and LoRA hidden states (of the checkpointed adapters) on it.
"""

from __future__ import annotations

import json
import os
import shutil
import sys

# The test suite's settings (tests/conftest.py), so that the stored outputs are the bits the tests
# compute: XLA's quick compile mode changes the last bits of float32 results.
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("JAX_DISABLE_MOST_OPTIMIZATIONS", "1")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import mdu_jax as mj  # noqa: E402
from checkpoints_convert.importer import import_checkpoint  # noqa: E402
from mdu_jax.checkpoints import export_params  # noqa: E402
from mdu_jax.models import lora  # noqa: E402
from mdu_jax.models.params import flatten_paths  # noqa: E402
from mdu_jax.training.checkpointing import RunCheckpointer, save_anchor  # noqa: E402
from mdu_jax.training.config import ObjectiveSection, OptimSection  # noqa: E402
from mdu_jax.training.loss import make_loss_fn  # noqa: E402
from mdu_jax.training.optimizer import make_optimizer  # noqa: E402
from mdu_jax.training.state import init_state  # noqa: E402
from mdu_jax.training.step import make_step  # noqa: E402

jax.config.update("jax_default_matmul_precision", "highest")

SPEC = dict(rank=2, alpha=4.0, targets=("q", "o", "down"))


def micro_config(family: str, **changes) -> mj.ModelConfig:
    """V=16, D=8, 2 heads of 4 (Dream: 1 kv head + qkv biases), F=12, 2 layers, float32."""
    dream = family == "dream"
    fields = dict(family=family, vocab_size=16, hidden_size=8, num_layers=2, num_heads=2,
                  num_kv_heads=1 if dream else 2, head_dim=4, intermediate_size=12, rope_theta=10000.0,
                  rms_norm_eps=1e-6, tie_word_embeddings=False, qkv_bias=dream, mask_token_id=15,
                  eos_token_id=1, pad_token_id=1)
    fields.update(changes)
    return mj.ModelConfig(**fields)


def tiny_config(family: str, **changes) -> mj.ModelConfig:
    """tests/training/loss_helpers.tiny_config at that commit."""
    dream = family == "dream"
    fields = dict(family=family, vocab_size=96, hidden_size=32, num_layers=2, num_heads=4,
                  num_kv_heads=2 if dream else 4, head_dim=8, intermediate_size=48, rope_theta=10000.0,
                  rms_norm_eps=1e-6, tie_word_embeddings=False, qkv_bias=dream, mask_token_id=95,
                  eos_token_id=1, pad_token_id=1)
    fields.update(changes)
    return mj.ModelConfig(**fields)


def micro_params(cfg: mj.ModelConfig):
    """Weights 8x larger than init (logits far from uniform), norm scales and biases away from 1 and 0."""
    params = mj.init_params(cfg, jax.random.key(11))
    keys = iter(jax.random.split(jax.random.key(12), 64))

    def perturb(path, x):
        name = path[-1].key
        if name in ("kernel", "embedding"):
            return 8.0 * x
        return x + (0.3 if name == "bias" else 0.1) * jax.random.normal(next(keys), x.shape, x.dtype)

    return jax.tree_util.tree_map_with_path(perturb, params)


def micro_batch() -> dict[str, np.ndarray]:
    """2 rows x 8 positions: prompt | response | one pad in the second row."""
    ids = np.array([[3, 4, 5, 6, 7, 8, 9, 10], [11, 12, 2, 3, 4, 5, 6, 1]], np.int32)
    maskable = np.zeros((2, 8), bool)
    maskable[:, 2:] = True
    maskable[1, 7] = False
    attn = np.ones((2, 8), np.int32)
    attn[1, 7] = 0
    return {"input_ids": ids, "maskable": maskable, "attention_mask": attn, "is_forget": np.array([True, False])}


def structure(cfg) -> dict[str, list]:
    shapes = jax.eval_shape(lambda k: mj.init_params(cfg, k), jax.random.key(0))
    return {"/".join(p): [list(s.shape), str(s.dtype)] for p, s in flatten_paths(shapes).items()}


def checksums(tree, prefix: str) -> dict[str, np.ndarray]:
    """{prefix + '/'-joined path: [sum, sum of squares, sum of i * x_i]} (float64) of every leaf: enough
    to tell two leaves of one shape apart without storing them."""
    out = {}
    for path, leaf in jax.tree_util.tree_leaves_with_path(tree):
        keys = [str(getattr(k, "key", getattr(k, "idx", getattr(k, "name", k)))) for k in path]
        x = np.asarray(jax.device_get(leaf), np.float64).ravel()
        out[prefix + "/".join(keys)] = np.array([x.sum(), (x * x).sum(), (np.arange(x.size) * x).sum()])
    return out


def one_step_state(cfg, params, anchor, batch, spec=None):
    tx, _ = make_optimizer(OptimSection(lr=1e-2, warmup_ratio=0.0, schedule="constant"), 10)
    loss_fn = make_loss_fn(cfg, ObjectiveSection(method="mdu", tau=0.5), lora=spec)
    state = init_state(params, tx, seed=7)
    state, _ = jax.jit(make_step(loss_fn, tx))(state, anchor, jax.tree.map(jnp.asarray, batch))
    return state


def main(out: str) -> None:
    if os.path.exists(out):
        shutil.rmtree(out)
    os.makedirs(out)
    cases = {"llada": tiny_config("llada"), "dream": tiny_config("dream"),
             "llada_tied_bf16": tiny_config("llada", tie_word_embeddings=True, param_dtype="bfloat16")}
    with open(os.path.join(out, "structure.json"), "w") as f:
        json.dump({name: structure(cfg) for name, cfg in cases.items()}, f, indent=1, sort_keys=True)

    values: dict[str, np.ndarray] = {}
    batch = micro_batch()
    ids, mask = jnp.asarray(batch["input_ids"]), jnp.asarray(batch["attention_mask"])
    values.update({f"batch/{k}": v for k, v in batch.items()})
    meta = {"micro_step": 1, "method": "mdu"}
    for family in ("llada", "dream"):
        cfg = micro_config(family)
        params = micro_params(cfg)
        values.update(checksums(params, f"{family}/params/"))
        values[f"{family}/logits"] = np.asarray(mj.forward(cfg, params, ids, mask))
        values[f"{family}/hidden"] = np.asarray(mj.hidden_states(cfg, params, ids, mask))
        state = one_step_state(cfg, params, params, batch)
        values.update(checksums(state, f"{family}/state/"))
        ckpt = RunCheckpointer(os.path.join(out, f"run_{family}"), keep=1, async_save=False)
        ckpt.save(1, state, meta)
        ckpt.close()
        save_anchor(os.path.join(out, f"run_{family}"), params)
        hf = os.path.join(out, f"hf_{family}")
        export_params(cfg, params, hf, overwrite=True, progress=False)
        import_checkpoint(hf, os.path.join(out, f"converted_{family}"), progress=False)
        shutil.rmtree(hf)

    cfg = micro_config("dream")
    spec = lora.LoraSpec(**SPEC)
    base = micro_params(cfg)
    adapters = lora.init_adapters(cfg, spec, jax.random.key(12))
    # A non-zero B, so the low-rank path contributes.
    adapters = {t: {"a": v["a"], "b": 0.5 * jax.random.normal(jax.random.key(13 + i), v["b"].shape)}
                for i, (t, v) in enumerate(sorted(adapters.items()))}
    state = one_step_state(cfg, adapters, base, batch, spec)
    values.update(checksums(state, "lora/state/"))
    # The checkpointed adapters (after the step) on the base, i.e. run_dream's anchor.
    values["lora/hidden"] = np.asarray(lora.hidden_states(cfg, base, state["params"], spec, ids, mask))
    ckpt = RunCheckpointer(os.path.join(out, "run_lora"), keep=1, async_save=False)
    ckpt.save(1, state, meta)
    ckpt.close()
    np.savez_compressed(os.path.join(out, "values.npz"), **values)


if __name__ == "__main__":
    main(os.path.abspath(sys.argv[1]))
