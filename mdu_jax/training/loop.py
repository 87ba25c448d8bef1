"""The training run behind ``python -m mdu_jax.train``: MDU unlearning, masked-diffusion SFT, or a baseline.

    from mdu_jax.training import load_config, run
    result = run(load_config("configs/tofu_llada8b.yaml", ["objective.tau=0.5"]))

config -> data -> model (+ frozen anchor) -> loss -> Optax -> jit/pmap step -> orbax checkpoints.
A run resumes from the latest checkpoint in its output folder, bit-exactly on the same machine.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
from jax.experimental import multihost_utils
from tqdm.auto import tqdm

from mdu_jax import parallel
from mdu_jax.checkpoints import export_params, load_pretrained
from mdu_jax.data.tokenizer import load_tokenizer
from mdu_jax.models import lora
from mdu_jax.models.config import ModelConfig
from mdu_jax.models.params import abstract_params, init_params, logical_axes
from mdu_jax.training import step as steps
from mdu_jax.training.checkpointing import RunCheckpointer, restore_anchor, save_anchor
from mdu_jax.training.config import TrainConfig, lora_spec, to_yaml
from mdu_jax.training.data_plan import build_plan
from mdu_jax.training.loss import make_loss_fn, needs_anchor
from mdu_jax.training.metrics_log import MetricsWriter
from mdu_jax.training.optimizer import make_optimizer
from mdu_jax.training.state import abstract_like, init_state, init_state_sharded, state_shardings_from
from mdu_jax.typed_config import ConfigKeyError

log = logging.getLogger("mdu_jax.train")


class NonFiniteLossError(RuntimeError):
    """The loss or gradient became NaN/inf; the last good checkpoint is kept."""


@dataclasses.dataclass
class RunResult:
    """What a finished run leaves: its folder, final params (on device), configs, last metrics."""

    output_dir: str
    model_cfg: ModelConfig
    params: Any
    tokenizer: Any
    metrics: list[dict[str, Any]]
    final_dir: str


def init_lora_adapters(cfg: TrainConfig, model_cfg: ModelConfig, mesh, rules=None):
    """Fresh adapters in model.param_dtype, sharded by the same rules as the weights they adapt."""
    spec = lora_spec(cfg)
    dtype = model_cfg.weight_dtype
    init = lambda k: lora.init_adapters(model_cfg, spec, k, dtype)  # noqa: E731
    key = jax.random.fold_in(jax.random.key(cfg.seed), 1)
    if mesh is None:
        return jax.jit(init)(key)
    shardings = parallel.param_shardings(lora.adapter_axes(model_cfg, spec),
                                         lora.abstract_adapters(model_cfg, spec, dtype), mesh, rules)
    return jax.jit(init, out_shardings=shardings)(key)


# ---------------------------------------------------------------------------------------------
# Model and placement


def _model_overrides(cfg: TrainConfig) -> dict[str, Any]:
    m = cfg.model
    return dict(dtype=m.dtype, param_dtype=m.param_dtype, remat_policy=m.remat_policy,
                attention_impl=m.attention_impl, scan_layers=m.scan_layers)


def load_model(cfg: TrainConfig, shardings_for: Callable[[ModelConfig], Any] | None):
    """(model_cfg, params, tokenizer): from a checkpoint folder or a random init from a HF config dict."""
    overrides = _model_overrides(cfg)
    if cfg.model.path is not None:
        probe = _probe_config(cfg.model.path, overrides)
        shardings = shardings_for(probe) if shardings_for else None
        return load_pretrained(cfg.model.path, shardings=shardings, **overrides)
    model_cfg = ModelConfig.from_hf(cfg.model.init_config, **overrides)
    shardings = shardings_for(model_cfg) if shardings_for else None
    init = jax.jit(lambda k: init_params(model_cfg, k), out_shardings=shardings)
    tokenizer = load_tokenizer(cfg.model.tokenizer, model_cfg) if cfg.model.tokenizer else None
    return model_cfg, init(jax.random.key(cfg.seed)), tokenizer


def _probe_config(path: str, overrides) -> ModelConfig:
    return ModelConfig.from_hf(path, **overrides)


# ---------------------------------------------------------------------------------------------
# The run


def total_micro_steps(cfg: TrainConfig, steps_per_epoch: int) -> int:
    if cfg.max_steps is not None:
        return cfg.max_steps * cfg.optim.grad_accum
    total = int(math.ceil(cfg.epochs * steps_per_epoch))
    # Whole optimiser updates only: round up to a multiple of the accumulation.
    return int(math.ceil(total / cfg.optim.grad_accum)) * cfg.optim.grad_accum


def run(cfg: TrainConfig, *, progress: bool = True, stop_after: int | None = None) -> RunResult:
    """Trains per `cfg`; resumes from ``<output_dir>/checkpoints`` if present.

    `stop_after` ends the loop after that many micro-steps of this invocation (tests use it to
    simulate an interruption); checkpoints are written as configured.
    """
    parallel.maybe_initialize_distributed(cfg.parallel.distributed)
    os.makedirs(cfg.output_dir, exist_ok=True)
    method = cfg.objective.method
    use_pmap = cfg.parallel.step == "pmap"
    devices = jax.devices()[: cfg.parallel.num_devices or None]
    mesh = None if use_pmap else parallel.make_mesh(cfg.parallel.mesh, devices)
    rules = cfg.parallel.rules

    def shardings_for(model_cfg):
        if mesh is None:
            return None
        return parallel.param_shardings(logical_axes(model_cfg), abstract_params(model_cfg), mesh, rules)

    model_cfg, params, tokenizer = load_model(cfg, shardings_for)
    if tokenizer is None:
        raise ConfigKeyError("model: no tokenizer found (model.path has no tokenizer files; with "
                             "model.init_config set model.tokenizer to a tokenizer folder)")

    plan, data_summary = build_plan(cfg, tokenizer, pad_id=model_cfg.pad_token_id)
    if mesh is not None and cfg.batch_size % parallel.batch_divisor(mesh):
        raise ConfigKeyError(f"batch_size: {cfg.batch_size} rows do not split over the mesh's "
                             f"{parallel.batch_divisor(mesh)} data x fsdp devices")
    local_devices = [d for d in devices if d.process_index == jax.process_index()]
    n_local = len(local_devices)
    if use_pmap and cfg.batch_size % n_local:
        raise ConfigKeyError(f"batch_size: {cfg.batch_size} rows do not split over {n_local} pmap devices")
    total = total_micro_steps(cfg, plan.steps_per_epoch)
    tx, schedule = make_optimizer(cfg.optim, total // cfg.optim.grad_accum)
    special_ids = sorted(set(getattr(tokenizer, "all_special_ids", []) or []))
    spec = lora_spec(cfg)
    loss_fn = make_loss_fn(model_cfg, cfg.objective, special_ids=special_ids, attend_padding=cfg.data.attend_padding,
                           lora=spec, fuse_anchor_pass=cfg.model.fuse_anchor_pass,
                           activation_sharding=parallel.batch_sharding(mesh)
                           if mesh is not None and cfg.parallel.shard_activations else None)

    anchor = None
    anchor_dtype = jnp.dtype(cfg.model.anchor_dtype)
    if spec is not None:
        # LoRA: the frozen base weights are the anchor argument of every step (whatever the
        # method), and the trainable params are the adapters.
        anchor = jax.tree.map(lambda p: p.astype(anchor_dtype), params)
        params = init_lora_adapters(cfg, model_cfg, mesh, rules)
    elif needs_anchor(method):
        anchor = jax.tree.map(lambda p: p.astype(anchor_dtype), params)

    ckpt = RunCheckpointer(cfg.output_dir, keep=cfg.checkpoint.keep, async_save=cfg.checkpoint.async_save)
    state = init_state(params, tx, cfg.seed) if mesh is None else init_state_sharded(
        params, tx, cfg.seed, parallel.replicated(mesh))
    del params
    start = ckpt.latest_step()
    if start is not None:
        state, meta = ckpt.restore(start, abstract_like(state))
        if meta.get("method") != method:
            raise ConfigKeyError(f"output_dir: {cfg.output_dir} holds a {meta.get('method')!r} run; "
                                 f"this config trains {method!r} (use another output_dir)")
        if anchor is not None:
            anchor = restore_anchor(cfg.output_dir, abstract_like(anchor))
        log.info("resumed from micro-step %d", start)
    elif anchor is not None:
        save_anchor(cfg.output_dir, anchor)
        _barrier("anchor")

    with open(os.path.join(cfg.output_dir, "config.yaml"), "w") as f:
        f.write(to_yaml(cfg))

    if use_pmap:
        step_fn = steps.pmap_step(loss_fn, tx, local_rows=cfg.batch_size // n_local, devices=local_devices)
        state = steps.replicate(jax.device_get(state), local_devices)
        anchor_dev = steps.replicate(jax.device_get(anchor), local_devices) if anchor is not None else None
    else:
        state_sh = state_shardings_from(state)
        anchor_sh = state_shardings_from(anchor) if anchor is not None else None
        batch_sh = parallel.batch_sharding(mesh)
        step_fn = steps.jit_step(loss_fn, tx, state_sh, anchor_sh, batch_sh, parallel.replicated(mesh))
        anchor_dev = anchor

    writer = MetricsWriter(cfg.output_dir, tensorboard=cfg.tensorboard)
    micro = int(start or 0)
    history: list[dict[str, Any]] = []
    bar = None
    if progress and jax.process_index() == 0:
        bar = tqdm(total=total, initial=micro, desc=f"{method}", unit="step", dynamic_ncols=True)
    every = cfg.checkpoint.every_steps * cfg.optim.grad_accum
    t_last, tokens_since = time.perf_counter(), 0
    executed = 0
    try:
        while micro < total and (stop_after is None or executed < stop_after):
            batch = plan.batch(micro).as_dict()
            rows = parallel.host_rows(cfg.batch_size)
            local = {k: v[rows] for k, v in batch.items()}
            if use_pmap:
                device_batch = steps.split_for_pmap(local, n_local)
            else:
                # Each host passes its rows; jax assembles the global [batch_size, ...] arrays.
                device_batch = {k: jax.make_array_from_process_local_data(
                    parallel.batch_sharding(mesh), v, (cfg.batch_size,) + v.shape[1:]) for k, v in local.items()}
            state, metrics = step_fn(state, anchor_dev, device_batch)
            micro += 1
            executed += 1
            if micro % cfg.log_every == 0 or micro == total:
                m = jax.device_get(steps.unreplicate(metrics) if use_pmap else metrics)
                if not bool(m["finite"]):
                    raise NonFiniteLossError(
                        f"non-finite loss or gradient at micro-step {micro} (loss={float(m['loss'])}); the update "
                        f"was skipped and training stopped. The last good checkpoint is kept in {ckpt.directory}. "
                        "Lower optim.lr, check the data, or use model.param_dtype=float32.")
                now = time.perf_counter()
                tokens_since += int(m["tokens"]) * cfg.log_every
                row = {k: float(v) for k, v in m.items() if k not in ("finite",)}
                row["lr"] = float(schedule(max(micro // cfg.optim.grad_accum - 1, 0)))
                row["tokens_per_s"] = tokens_since / max(now - t_last, 1e-9)
                t_last, tokens_since = now, 0
                writer.write(micro, row)
                history.append({"step": micro, **row})
                if bar:
                    bar.set_postfix({k: f"{row[k]:.4g}" for k in ("loss", "forget", "retain", "lr", "tokens_per_s")
                                     if k in row}, refresh=False)
            if bar:
                bar.update(1)
            if every and micro % every == 0 and micro < total:
                ckpt.save(micro, steps.unreplicate(state) if use_pmap else state, _meta(cfg, micro, data_summary))
        done = micro >= total
        final_state = steps.unreplicate(state) if use_pmap else state
        if executed:
            ckpt.save(micro, final_state, _meta(cfg, micro, data_summary))
        ckpt.wait()
    finally:
        if bar:
            bar.close()
        writer.close()
        ckpt.close()
    params = final_state["params"]
    if spec is not None:
        params = lora.merge(model_cfg, anchor, params, spec, dtype=model_cfg.weight_dtype)
    final_dir = os.path.join(cfg.output_dir, "final")
    if done and (executed or not os.path.isdir(final_dir)):
        _save_final(final_dir, model_cfg, params, tokenizer, cfg)
    return RunResult(cfg.output_dir, model_cfg, params, tokenizer, history, final_dir)


def _meta(cfg: TrainConfig, micro: int, data_summary: dict) -> dict[str, Any]:
    return {"micro_step": micro, "method": cfg.objective.method, "data": data_summary,
            "config": json.loads(json.dumps(dataclasses.asdict(cfg), default=str))}


def _host_params(params):
    """Params as host arrays on process 0 (gathered from every host of a pod), else None."""
    if jax.process_count() == 1:
        return params
    gathered = multihost_utils.process_allgather(params, tiled=True)
    return gathered if jax.process_index() == 0 else None


def _save_final(final_dir: str, model_cfg: ModelConfig, params, tokenizer, cfg: TrainConfig) -> None:
    """The final params, exactly (in their training dtype), as an HF folder that ``load_pretrained``,
    ``mdu_jax.evaluate`` and the PyTorch code read; the tokenizer and config travel along."""
    host = _host_params(params)
    if host is not None:
        like = cfg.model.path or cfg.model.tokenizer
        export_params(model_cfg, host, final_dir, like=like, dtype=model_cfg.param_dtype, overwrite=True,
                      progress=False)
        if cfg.export_hf:
            export_params(model_cfg, host, cfg.export_hf, like=cfg.model.path or cfg.model.tokenizer,
                          overwrite=True)
    _barrier("final")


def _barrier(name: str) -> None:
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices(name)
