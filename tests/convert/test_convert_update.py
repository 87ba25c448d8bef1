"""Acceptance 2: import, one optimiser step, export: only the stepped tensors differ."""

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import optax
import torch

import mdu_jax as mj
from checkpoints_convert import export_checkpoint, export_params, import_checkpoint
from tests.convert.convert_helpers import load_hf_tensors
from tests.fixtures import write_hf_checkpoint

STEPPED = {("layers", "q", "kernel"), ("final_norm", "scale")}


def one_sgd_step(cfg, params, layer):
    """One SGD step on a token loss that updates only STEPPED params, and of q only `layer`."""
    ids = jnp.arange(2, 14)[None]

    def loss(p):
        logits = mj.forward(cfg, p, ids).astype(jnp.float32)
        return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), ids[..., None], -1))

    labels = jax.tree_util.tree_map_with_path(
        lambda kp, _: "train" if tuple(k.key for k in kp) in STEPPED else "freeze", params)
    opt = optax.multi_transform({"train": optax.sgd(0.5), "freeze": optax.set_to_zero()}, labels)
    grads = jax.jit(jax.grad(loss))(params)
    layer_mask = (jnp.arange(cfg.num_layers) == layer).reshape(-1, 1, 1, 1)
    grads["layers"]["q"]["kernel"] = grads["layers"]["q"]["kernel"] * layer_mask
    updates, _ = opt.update(grads, opt.init(params), params)
    return optax.apply_updates(params, updates)


def test_one_step_changes_exactly_the_stepped_tensors(tmp_path):
    _, sd = write_hf_checkpoint(tmp_path / "hf", "llada", dtype="bfloat16", shards=3, seed=11)
    import_checkpoint(tmp_path / "hf", tmp_path / "ckpt", progress=False)
    # Train in fp32 master weights from the bf16 checkpoint, as the trainer does.
    cfg, params, _ = mj.load_pretrained(tmp_path / "ckpt", param_dtype="float32")
    new = one_sgd_step(cfg, params, layer=1)

    export_params(cfg, new, tmp_path / "out", like=tmp_path / "ckpt", max_shard_size="8KB", progress=False)
    out = load_hf_tensors(tmp_path / "out")
    assert sorted(out) == sorted(sd) and all(out[n].dtype == torch.bfloat16 for n in out)
    changed = {n for n in sd if not torch.equal(out[n], sd[n])}
    assert changed == {"model.transformer.blocks.1.q_proj.weight", "model.transformer.ln_f.weight"}

    # The changed tensors hold the stepped values, rounded to the original bf16, in [out, in] layout.
    q1 = np.asarray(new["layers"]["q"]["kernel"][1]).reshape(cfg.hidden_size, -1).T.astype(ml_dtypes.bfloat16)
    np.testing.assert_array_equal(out["model.transformer.blocks.1.q_proj.weight"].float().numpy(),
                                  q1.astype(np.float32))
    np.testing.assert_array_equal(out["model.transformer.ln_f.weight"].float().numpy(),
                                  np.asarray(new["final_norm"]["scale"]).astype(ml_dtypes.bfloat16).astype(np.float32))


def test_unchanged_params_export_to_the_original_files(tmp_path):
    # The trainer's path without a step: in-memory params -> HF equals the source, tensor for tensor.
    _, sd = write_hf_checkpoint(tmp_path / "hf", "dream", dtype="float32", seed=12, tokenizer=False)
    cfg, params, _ = mj.load_pretrained(tmp_path / "hf")
    export_params(cfg, params, tmp_path / "out", like=tmp_path / "hf", progress=False)
    out = load_hf_tensors(tmp_path / "out")
    assert sorted(out) == sorted(sd) and all(torch.equal(out[n], sd[n]) for n in sd)
    assert (tmp_path / "out" / "config.json").read_bytes() == (tmp_path / "hf" / "config.json").read_bytes()


def test_export_without_like_writes_the_config_from_cfg(tmp_path):
    write_hf_checkpoint(tmp_path / "hf", "llada", seed=13, tokenizer=False)
    cfg, params, _ = mj.load_pretrained(tmp_path / "hf")
    export_params(cfg, params, tmp_path / "out", progress=False)
    assert mj.ModelConfig.from_hf(tmp_path / "out") == cfg
    cfg2, params2, _ = mj.load_pretrained(tmp_path / "out")
    for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(params2)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_export_reads_params_saved_by_orbax_standard_checkpointer(tmp_path):
    # A params tree saved by mdu_jax.checkpoints.save_params (OCDBT, the run checkpoints' format)
    # dropped into a converted folder still exports: ParamsReader falls back to orbax reads.
    import shutil

    from mdu_jax.checkpoints import orbax_params as ckpt

    _, sd = write_hf_checkpoint(tmp_path / "hf", "llada", dtype="float32", seed=14, tokenizer=False)
    import_checkpoint(tmp_path / "hf", tmp_path / "ckpt", progress=False)
    cfg, params, _ = mj.load_pretrained(tmp_path / "ckpt")
    new = jax.tree.map(lambda x: x, params)  # a handcrafted change: the optimiser is not the point here
    new["layers"]["q"]["kernel"] = params["layers"]["q"]["kernel"].at[0].add(0.01)
    new["final_norm"]["scale"] = params["final_norm"]["scale"] * 1.5
    shutil.rmtree(tmp_path / "ckpt" / "params")
    ckpt.save_params(tmp_path / "ckpt" / "params", new)
    export_checkpoint(tmp_path / "ckpt", tmp_path / "out", progress=False)
    out = load_hf_tensors(tmp_path / "out")
    changed = {n for n in sd if not torch.equal(out[n], sd[n])}
    assert changed == {"model.transformer.blocks.0.q_proj.weight", "model.transformer.ln_f.weight"}
