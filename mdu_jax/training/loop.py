"""The training run behind ``python -m mdu_jax.train``: MDU unlearning, masked-diffusion SFT, or a baseline.

    from mdu_jax.training import load_config, run
    result = run(load_config("configs/tofu_llada8b.yaml", ["objective.tau=0.5"]))
    print(result.summary)

config -> data -> model (+ frozen anchor) -> loss -> Optax -> jit/pmap step -> orbax checkpoints.
Steps are optimiser steps everywhere a user sees them (``max_steps``, the progress bar, the
``step`` of ``metrics.jsonl``, checkpoint folders, messages); one optimiser step is
``optim.grad_accum`` micro-batches, and micro-steps appear only as labelled extra fields.
An output folder belongs to one run (``run_folder``): a run resumes from its newest intact
checkpoint, bit-exactly on the same machine, a finished run is not trained again, and a
different config is refused unless asked to start over or to continue anyway. An update is
applied only if it is finite and within ``optim.max_update_ratio``; otherwise the run stops,
naming the newest checkpoint if there is one.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
from jax.experimental import multihost_utils
from tqdm.auto import tqdm

from mdu_jax import parallel, typed_config
from mdu_jax.checkpoints import CheckpointError, export_params, load_pretrained
from mdu_jax.data.tokenizer import load_tokenizer
from mdu_jax.models import lora
from mdu_jax.models.config import ModelConfig
from mdu_jax.models.config_fields import ConfigError
from mdu_jax.models.params import abstract_params, init_params, logical_axes
from mdu_jax.training import legacy_checkpoints, run_folder
from mdu_jax.training import step as steps
from mdu_jax.training.checkpointing import RunCheckpointer, make_meta, restore_anchor, save_anchor
from mdu_jax.training.config import TrainConfig, lora_spec
from mdu_jax.training.data_plan import build_plan
from mdu_jax.training.loss import make_loss_fn, needs_anchor
from mdu_jax.training.metrics_log import METRICS_FILE, MetricsWindow, MetricsWriter, read_metrics
from mdu_jax.training.optimizer import make_optimizer
from mdu_jax.training.run_summary import make_summary, summary_text
from mdu_jax.training.state import abstract_like, init_state, init_state_sharded, state_shardings_from
from mdu_jax.typed_config import ConfigKeyError

log = logging.getLogger("mdu_jax.train")


class UpdateRejectedError(RuntimeError):
    """An update was refused (non-finite, or beyond the divergence guard) and the run stopped;
    the parameters are those before the refused step."""


class NonFiniteLossError(UpdateRejectedError):
    """The loss, the gradient norm or an updated parameter became NaN / inf."""


class DivergenceError(UpdateRejectedError):
    """A finite update exceeded ``optim.max_update_ratio`` x the parameters' norm."""


@dataclasses.dataclass
class RunResult:
    """What a run leaves: its folder, final params (on device; None when a finished run was not
    reloaded), configs, this invocation's logged metrics rows, the summary (dict and paragraph)."""

    output_dir: str
    model_cfg: ModelConfig | None
    params: Any
    tokenizer: Any
    metrics: list[dict[str, Any]]
    final_dir: str
    summary: str = ""
    summary_data: dict[str, Any] = dataclasses.field(default_factory=dict)
    already_finished: bool = False


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


def check_model_paths(cfg: TrainConfig) -> None:
    """ConfigKeyError naming model.path / model.tokenizer when the folder it names does not exist."""
    for key, path in (("model.path", cfg.model.path), ("model.tokenizer", cfg.model.tokenizer)):
        if path is not None and not os.path.isdir(path):
            raise ConfigKeyError(f"{key}: {path}: no such folder" + (" (a HF checkpoint or a converted mdu_jax "
                                                                     "checkpoint)" if key == "model.path" else ""))


def load_model(cfg: TrainConfig, shardings_for: Callable[[ModelConfig], Any] | None):
    """(model_cfg, params, tokenizer): from a checkpoint folder or a random init from a HF config dict.
    Errors name the config key (model.path / model.init_config) they come from."""
    check_model_paths(cfg)
    overrides = _model_overrides(cfg)
    if cfg.model.path is not None:
        try:
            probe = ModelConfig.from_hf(cfg.model.path, **overrides)
            shardings = shardings_for(probe) if shardings_for else None
            return load_pretrained(cfg.model.path, shardings=shardings, **overrides)
        except (ConfigError, CheckpointError) as e:
            raise ConfigKeyError(f"model.path: {e}") from None
    try:
        model_cfg = ModelConfig.from_hf(cfg.model.init_config, **overrides)
    except ConfigError as e:
        raise ConfigKeyError(f"model.init_config: {e}") from None
    shardings = shardings_for(model_cfg) if shardings_for else None
    init = jax.jit(lambda k: init_params(model_cfg, k), out_shardings=shardings)
    tokenizer = load_tokenizer(cfg.model.tokenizer, model_cfg) if cfg.model.tokenizer else None
    return model_cfg, init(jax.random.key(cfg.seed)), tokenizer


# ---------------------------------------------------------------------------------------------
# Steps


def total_optimizer_steps(cfg: TrainConfig, steps_per_epoch: int) -> int:
    """Optimiser steps of the whole run: ``max_steps``, else ``epochs`` of micro-batches rounded
    up to whole optimiser steps (``optim.grad_accum`` micro-batches each)."""
    if cfg.max_steps is not None:
        return cfg.max_steps
    micro = int(math.ceil(cfg.epochs * steps_per_epoch))
    return int(math.ceil(micro / cfg.optim.grad_accum))


def _rejection(m: dict[str, Any], cfg: TrainConfig, opt_step: int, micro: int, ckpt: RunCheckpointer
               ) -> UpdateRejectedError:
    """The error that stops a run whose update at optimiser step `opt_step` was refused."""
    at = f"optimiser step {opt_step}" + (f" (micro-step {micro}, grad_accum {cfg.optim.grad_accum})"
                                         if cfg.optim.grad_accum > 1 else "")
    if not bool(m["finite"]):
        cls = NonFiniteLossError
        why = (f"the loss, the gradient norm or an updated parameter is not finite (loss={float(m['loss']):.4g}, "
               f"grad_norm={float(m['grad_norm']):.4g})")
    else:
        cls = DivergenceError
        why = (f"the update's norm is {float(m['update_ratio']):.3g} x the parameters' norm, beyond "
               f"optim.max_update_ratio={cfg.optim.max_update_ratio:g}")
    ckpt.wait()
    newest = ckpt.latest_step()
    fix = "lower optim.lr (or check the data, or train in float32: model.param_dtype=float32)"
    if newest is None:
        where = f"No checkpoint had been written yet ({ckpt.directory} is empty): {fix} and start over with --overwrite."
    else:
        where = (f"The newest checkpoint is {ckpt.path(newest)} (optimiser step {newest}): {fix} and continue from it "
                 "with --resume-anyway, or start over with --overwrite.")
    return cls(f"{at}: {why}. The update was not applied and training stopped. {where}")


# ---------------------------------------------------------------------------------------------
# The run


def run(cfg: TrainConfig, *, progress: bool = True, stop_after: int | None = None, overwrite: bool = False,
        resume_anyway: bool = False, reload_finished: bool = True) -> RunResult:
    """Trains per `cfg` into ``cfg.output_dir``; resumes from its newest intact checkpoint.

    A folder whose finished run has the same config (``run_folder.RESULT_NEUTRAL`` keys aside)
    is not trained again: the result says so (``already_finished``) and, with
    `reload_finished`, carries the final params read back. A folder holding a run with another
    config raises ``run_folder.RunFolderError`` naming the keys, unless `overwrite` (delete that
    run, start over) or `resume_anyway` (continue its weights with the new values).
    `stop_after` ends the loop after that many optimiser steps of this invocation (tests use
    it to simulate an interruption); checkpoints are written as configured.
    """
    started = time.perf_counter()
    parallel.maybe_initialize_distributed(cfg.parallel.distributed)
    folder = run_folder.inspect(cfg)
    run_folder.check(folder, overwrite=overwrite, resume_anyway=resume_anyway)
    if folder.finished and not overwrite:
        return _already_finished(cfg, folder, reload_finished)

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
    accum = cfg.optim.grad_accum
    total = total_optimizer_steps(cfg, plan.steps_per_epoch)
    if resume_anyway and folder.differences and folder.latest_step is not None and folder.latest_step >= total:
        raise run_folder.RunFolderError(
            f"--resume-anyway: {folder.output_dir} already reached optimiser step {folder.latest_step}, and this "
            f"config trains {total}: nothing would run with the new values, so config.yaml could not describe "
            "the weights. Raise max_steps / epochs, or start over with --overwrite")

    # Everything that can fail on the config alone has passed: only now does the folder change.
    if overwrite:
        if jax.process_index() == 0:
            removed = run_folder.clear(folder.output_dir)
            if removed:
                log.info("--overwrite: deleted %s from %s", ", ".join(removed), folder.output_dir)
        folder = run_folder.FolderState(folder.output_dir)
    if jax.process_index() == 0:
        os.makedirs(cfg.output_dir, exist_ok=True)
        if folder.legacy:
            renamed = legacy_checkpoints.convert(cfg.output_dir)
            if renamed:
                log.info("renamed checkpoints written by an earlier mdu-jax from micro-steps to optimiser steps: %s",
                         ", ".join(f"{a} -> {b}" for a, b in renamed))
        # Before the anchor and the first checkpoint: the config on disk is the one they come from.
        continued = resume_anyway and folder.latest_step is not None
        run_folder.write_config(cfg, folder if continued else None, folder.latest_step)
    _barrier("folder")

    tx, schedule = make_optimizer(cfg.optim, total)
    # One program for the logged learning rate: evaluated op by op, the schedule's dozen scalar
    # operations compile a dozen programs in every fresh process.
    lr_at = jax.jit(schedule)
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
    # One program either way (run op by op, init_state compiled a program per leaf shape).
    state = jax.jit(lambda p: init_state(p, tx, cfg.seed))(params) if mesh is None else init_state_sharded(
        params, tx, cfg.seed, parallel.replicated(mesh))
    del params
    restored = ckpt.restore_newest_intact(abstract_like(state))
    start = 0
    if restored is not None:
        start, state, _, damaged = restored
        if int(jax.device_get(state["step"])) != start * accum:
            raise run_folder.RunFolderError(
                f"{ckpt.path(start)}: holds micro-step {int(jax.device_get(state['step']))}, not optimiser step "
                f"{start} x grad_accum {accum}")
        if anchor is not None:
            anchor = restore_anchor(cfg.output_dir, abstract_like(anchor))
        log.info("resuming %s from %s (optimiser step %d of %d)%s", cfg.output_dir, ckpt.path(start), start, total,
                 ", the newest intact checkpoint" if damaged else "")
    elif anchor is not None:
        # A fresh start writes its own anchor, unless this config's was already saved.
        save_anchor(cfg.output_dir, anchor, replace=folder.recorded is None or bool(folder.differences))
        _barrier("anchor")

    if use_pmap:
        step_fn = steps.pmap_step(loss_fn, tx, local_rows=cfg.batch_size // n_local, devices=local_devices,
                                  max_update_ratio=cfg.optim.max_update_ratio)
        state = steps.replicate(jax.device_get(state), local_devices)
        anchor_dev = steps.replicate(jax.device_get(anchor), local_devices) if anchor is not None else None
    else:
        state_sh = state_shardings_from(state)
        anchor_sh = state_shardings_from(anchor) if anchor is not None else None
        batch_sh = parallel.batch_sharding(mesh)
        step_fn = steps.jit_step(loss_fn, tx, state_sh, anchor_sh, batch_sh, parallel.replicated(mesh),
                                 max_update_ratio=cfg.optim.max_update_ratio)
        anchor_dev = anchor

    writer = MetricsWriter(cfg.output_dir, tensorboard=cfg.tensorboard, resume_step=start)
    micro, opt = start * accum, start
    history: list[dict[str, Any]] = []
    window = MetricsWindow()
    bar = None
    if progress and jax.process_index() == 0:
        bar = tqdm(total=total, initial=start, desc=f"{method}", unit="step", dynamic_ncols=True)
    t_last, tokens_this_run = time.perf_counter(), 0.0
    executed = 0
    last_saved = start if restored is not None else None
    try:
        while opt < total and (stop_after is None or executed < stop_after):
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
            # Every micro-step is checked: a refused update must stop the run at once, not at
            # the next logged step (the check costs one host sync per step).
            m = steps.unreplicate_host(metrics) if use_pmap else jax.device_get(metrics)
            if not bool(m["applied"]):
                raise _rejection(m, cfg, micro // accum + (micro % accum > 0), micro, ckpt)
            window.add(m)
            tokens_this_run += float(m["tokens"])
            if micro % accum:
                continue
            opt += 1
            executed += 1
            if opt % cfg.log_every == 0 or opt == total:
                now = time.perf_counter()
                row = window.row()
                row["lr"] = float(lr_at(opt - 1))
                row["tokens_per_s"] = row["tokens"] / max(now - t_last, 1e-9)
                row["micro_step"] = micro
                t_last = now
                writer.write(opt, row)
                history.append({"step": opt, **row})
                if bar:
                    bar.set_postfix({k: f"{row[k]:.4g}" for k in ("loss", "forget", "retain", "lr", "tokens_per_s")
                                     if k in row}, refresh=False)
            if bar:
                bar.update(1)
            if cfg.checkpoint.every_steps and opt % cfg.checkpoint.every_steps == 0 and opt < total:
                ckpt.save(opt, steps.unreplicate(state) if use_pmap else state, _meta(cfg, opt, data_summary))
                last_saved = opt
        done = opt >= total
        final_state = steps.unreplicate(state) if use_pmap else state
        if executed and last_saved != opt:
            ckpt.save(opt, final_state, _meta(cfg, opt, data_summary))
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
    summary, text = {}, ""
    if done:
        if executed or not os.path.isdir(final_dir):
            _save_final(final_dir, model_cfg, params, tokenizer, cfg)
        summary = _finish(cfg, data_summary, total, started, start if restored is not None else None, executed,
                          tokens_this_run, history)
        text = summary_text(summary)
    return RunResult(cfg.output_dir, model_cfg, params, tokenizer, history, final_dir, text, summary)


def _meta(cfg: TrainConfig, opt_step: int, data_summary: dict) -> dict[str, Any]:
    return make_meta(optimizer_step=opt_step, grad_accum=cfg.optim.grad_accum, method=cfg.objective.method,
                     data=data_summary, config=typed_config.to_dict(cfg))


def _outputs(cfg: TrainConfig) -> dict[str, Any]:
    out = os.path.abspath(cfg.output_dir)
    return {"final": os.path.join(out, "final"), "export_hf": os.path.abspath(cfg.export_hf) if cfg.export_hf else None,
            "checkpoints": os.path.join(out, "checkpoints"), "metrics": os.path.join(out, METRICS_FILE),
            "tensorboard": os.path.join(out, "tensorboard") if os.path.isdir(os.path.join(out, "tensorboard")) else None,
            "config": os.path.join(out, run_folder.CONFIG_FILE), "summary": os.path.join(out, run_folder.SUMMARY_FILE)}


def _finish(cfg: TrainConfig, data_summary: dict, total: int, started: float, resumed_from: int | None,
            executed: int, tokens_this_run: float, history: list[dict[str, Any]]) -> dict[str, Any]:
    """Writes ``run_summary.json`` (process 0) and returns the summary dict."""
    path = os.path.join(cfg.output_dir, METRICS_FILE)
    rows = read_metrics(path) if os.path.isfile(path) and jax.process_index() == 0 else history
    last = {k: v for k, v in (rows[-1] if rows else {}).items() if k in ("loss", "forget", "retain")}
    summary = make_summary(method=cfg.objective.method, output_dir=cfg.output_dir, optimizer_steps=total,
                           grad_accum=cfg.optim.grad_accum, batch_size=cfg.batch_size, data=data_summary,
                           tokens=sum(float(r.get("tokens", 0.0)) for r in rows), tokens_this_run=tokens_this_run,
                           seconds=time.perf_counter() - started, resumed_from=resumed_from, steps_this_run=executed,
                           last=last, outputs=_outputs(cfg))
    if jax.process_index() == 0:
        run_folder.write_summary(cfg.output_dir, summary)
    return summary


def _already_finished(cfg: TrainConfig, folder: run_folder.FolderState, reload: bool) -> RunResult:
    summary = folder.summary
    final_dir = os.path.join(folder.output_dir, "final")
    n = summary.get("optimizer_steps")
    text = (f"{folder.output_dir} already holds the finished run of this config "
            f"({n} optimiser step{'s' * (n != 1)}): final weights in "
            f"{final_dir}; nothing was trained (--overwrite trains it again). Its summary: " + summary_text(summary))
    model_cfg = params = tokenizer = None
    if reload:
        try:
            model_cfg, params, tokenizer = load_pretrained(final_dir, **_model_overrides(cfg))
        except (ConfigError, CheckpointError) as e:
            raise run_folder.RunFolderError(f"{folder.output_dir} is marked finished ({run_folder.SUMMARY_FILE}) but "
                                            f"its final weights cannot be read ({e}); use --overwrite") from None
    path = os.path.join(folder.output_dir, METRICS_FILE)
    rows = read_metrics(path) if os.path.isfile(path) else []
    return RunResult(folder.output_dir, model_cfg, params, tokenizer, rows, final_dir, text, summary,
                     already_finished=True)


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
