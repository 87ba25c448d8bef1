"""Per-device memory of the compiled train step, without allocating the model.

``step_memory(cfg, model_cfg, mesh, rows, seq)`` builds the train step exactly as
``mdu_jax.training.run`` does (loss, Optax chain, LoRA adapters, sharded state, frozen anchor,
``training.step.jit_step`` with donation) on ``jax.ShapeDtypeStruct`` inputs that carry their shardings,
lowers and compiles it, and reads XLA's buffer assignment (``compiled.memory_analysis()``) plus
the per-device size of every input from the compiled program's input shardings. Nothing of
model size is ever allocated, so a full-size LLaDA-8B step can be planned on a laptop CPU with
fake devices (``XLA_FLAGS=--xla_force_host_platform_device_count=8``, set before importing jax).

On a CPU backend this is XLA:CPU's buffer assignment for the same SPMD-partitioned program:
a proxy for the GPU/TPU numbers (the partitioning, state and activation buffers are the same;
fusion decisions and scratch space differ). XLA:CPU has no native bfloat16 matmul: it converts
bf16 operands to float32 and hoists those conversions out of the layer scan, which adds float32
copies of the stacked weights (about 1.5 GiB per LLaDA-8B layer on one device) that no GPU/TPU
program holds. `cpu_proxy` therefore swaps bfloat16 for float16, which XLA:CPU multiplies
natively and which has the same size, so the buffers match the bf16 program on an accelerator.
"""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from mdu_jax import parallel
from mdu_jax.models import lora
from mdu_jax.models.config import ModelConfig, canonical_dtype
from mdu_jax.models.params import abstract_params, logical_axes
from mdu_jax.training.config import TrainConfig, lora_spec
from mdu_jax.training.loss import make_loss_fn, needs_anchor
from mdu_jax.training.optimizer import make_optimizer
from mdu_jax.training.state import init_state, state_shardings, state_shardings_from
from mdu_jax.training.step import jit_step

GiB = 2 ** 30


@dataclasses.dataclass
class StepMemory:
    """Bytes per device of one compiled train step (see the module docstring)."""

    devices: int
    rows: int             # global batch rows
    seq: int
    params: int           # trainable params (the adapters with LoRA)
    opt_state: int        # optimiser state (moments, accumulators, master weights)
    anchor: int           # frozen anchor (the base weights with LoRA); 0 if the method has none
    batch: int
    argument: int         # all inputs, as XLA counts them
    output: int
    alias: int            # outputs written in place of donated inputs
    temp: int             # activations, gradients, logits, collectives' buffers
    code: int
    compile_s: float
    flops: float | None = None  # XLA's cost analysis of the step (per device), if available
    bytes_accessed: float | None = None  # the same analysis's memory traffic (bytes per device)

    @property
    def peak(self) -> int:
        """Live bytes at the step's high-water mark: inputs + non-aliased outputs + temporaries."""
        return self.argument + self.output - self.alias + self.temp


def model_config(cfg: TrainConfig, hf_config) -> ModelConfig:
    """The ModelConfig `run(cfg)` would use, with the architecture from a HF config (path or dict)."""
    m = cfg.model
    return ModelConfig.from_hf(hf_config, dtype=m.dtype, param_dtype=m.param_dtype, remat_policy=m.remat_policy,
                               attention_impl=m.attention_impl, scan_layers=m.scan_layers)


def cpu_proxy(cfg: TrainConfig) -> TrainConfig:
    """`cfg` with every bfloat16 model dtype replaced by float16 (same bytes; see the module
    docstring): what to compile on XLA:CPU to size a bf16 run on GPU/TPU."""
    swap = lambda d: "float16" if canonical_dtype(d) == "bfloat16" else d  # noqa: E731
    m = cfg.model
    model = dataclasses.replace(m, dtype=swap(m.dtype), param_dtype=swap(m.param_dtype),
                                anchor_dtype=swap(m.anchor_dtype))
    return dataclasses.replace(cfg, model=model)


def _with_shardings(abstract, shardings):
    return jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract, shardings)


def abstract_batch(cfg: TrainConfig, rows: int, seq: int, sharding) -> dict[str, jax.ShapeDtypeStruct]:
    """The batch dict the step receives (``training.data_plan`` layout), as sharded ShapeDtypeStructs."""
    def s(shape, dtype):
        return jax.ShapeDtypeStruct(shape, dtype, sharding=sharding)

    batch = {"input_ids": s((rows, seq), jnp.int32), "maskable": s((rows, seq), jnp.bool_),
             "attention_mask": s((rows, seq), jnp.int32), "is_forget": s((rows,), jnp.bool_)}
    if cfg.objective.method in ("idkpo", "dpo"):
        batch.update(alt_input_ids=s((rows, seq), jnp.int32), alt_maskable=s((rows, seq), jnp.bool_),
                     alt_attention_mask=s((rows, seq), jnp.int32))
    return batch


def build_step(cfg: TrainConfig, model_cfg: ModelConfig, mesh, rows: int, seq: int, total_steps: int = 1000):
    """(jitted step, abstract state, abstract anchor, abstract batch) as ``training.run`` builds them."""
    rules = cfg.parallel.rules
    tx, _ = make_optimizer(cfg.optim, total_steps)
    spec = lora_spec(cfg)
    loss_fn = make_loss_fn(model_cfg, cfg.objective, attend_padding=cfg.data.attend_padding, lora=spec,
                           fuse_anchor_pass=cfg.model.fuse_anchor_pass,
                           activation_sharding=parallel.batch_sharding(mesh) if cfg.parallel.shard_activations
                           else None)
    weights = abstract_params(model_cfg)
    weights = _with_shardings(weights, parallel.param_shardings(logical_axes(model_cfg), weights, mesh, rules))
    anchor_dtype = jnp.dtype(cfg.model.anchor_dtype)
    as_anchor = lambda t: jax.tree.map(  # noqa: E731
        lambda a: jax.ShapeDtypeStruct(a.shape, anchor_dtype, sharding=a.sharding), t)
    anchor = None
    if spec is not None:
        anchor = as_anchor(weights)
        adapters = lora.abstract_adapters(model_cfg, spec, model_cfg.weight_dtype)
        params = _with_shardings(adapters, parallel.param_shardings(lora.adapter_axes(model_cfg, spec), adapters,
                                                                    mesh, rules))
    else:
        params = weights
        if needs_anchor(cfg.objective.method):
            anchor = as_anchor(weights)
    replicated = parallel.replicated(mesh)
    state_sh = state_shardings(tx, params, replicated)
    state = _with_shardings(jax.eval_shape(lambda p: init_state(p, tx, cfg.seed), params), state_sh)
    anchor_sh = state_shardings_from(anchor) if anchor is not None else None
    batch_sh = parallel.batch_sharding(mesh)
    step = jit_step(loss_fn, tx, state_sh, anchor_sh, batch_sh, replicated)
    return step, state, anchor, abstract_batch(cfg, rows, seq, batch_sh)


def _device_bytes(abstract, shardings) -> int:
    total = 0
    for a, s in zip(jax.tree.leaves(abstract), jax.tree.leaves(shardings)):
        total += math.prod(s.shard_shape(a.shape)) * jnp.dtype(a.dtype).itemsize
    return total


def step_memory(cfg: TrainConfig, model_cfg: ModelConfig, mesh, rows: int, seq: int) -> StepMemory:
    """Compiles the train step of `cfg` for a [rows, seq] global batch on `mesh` and returns its
    per-device memory; the input groups are sized from the compiled program's input shardings."""
    if rows % parallel.batch_divisor(mesh):
        raise ValueError(f"rows: {rows} do not split over the mesh's {parallel.batch_divisor(mesh)} data x fsdp devices")
    step, state, anchor, batch = build_step(cfg, model_cfg, mesh, rows, seq)
    t0 = time.perf_counter()
    compiled = step.lower(state, anchor, batch).compile()
    compile_s = time.perf_counter() - t0
    m = compiled.memory_analysis()
    in_sh = compiled.input_shardings[0]
    state_sh, anchor_sh, batch_sh = in_sh
    flops = bytes_accessed = None
    try:
        cost = compiled.cost_analysis()
        cost = cost[0] if isinstance(cost, (list, tuple)) else cost
        flops = float(cost.get("flops")) if cost and "flops" in cost else None
        bytes_accessed = float(cost.get("bytes accessed")) if cost and "bytes accessed" in cost else None
    except Exception:  # noqa: BLE001 - cost analysis is optional and backend-dependent
        pass
    return StepMemory(
        devices=mesh.size, rows=rows, seq=seq,
        params=_device_bytes(state["params"], state_sh["params"]),
        opt_state=_device_bytes(state["opt_state"], state_sh["opt_state"]),
        anchor=_device_bytes(anchor, anchor_sh) if anchor is not None else 0,
        batch=_device_bytes(batch, batch_sh),
        argument=m.argument_size_in_bytes, output=m.output_size_in_bytes, alias=m.alias_size_in_bytes,
        temp=m.temp_size_in_bytes, code=m.generated_code_size_in_bytes, compile_s=compile_s, flops=flops,
        bytes_accessed=bytes_accessed)


def formula_state_bytes(cfg: TrainConfig, model_cfg: ModelConfig, devices: int) -> dict[str, float]:
    """Hand formulas for the cross-check: params, optimiser state and anchor bytes per device,
    assuming every matrix splits evenly over `devices` (FSDP) and vectors are negligible."""
    n_model = model_cfg.num_params()
    p_bytes = jnp.dtype(model_cfg.param_dtype).itemsize
    if cfg.model.lora_rank:
        n_train = sum(math.prod(s) for t in lora.adapter_shapes(model_cfg, lora_spec(cfg)).values()
                      for s in t.values())
    else:
        n_train = n_model
    # Adam: two moments in the dtype of the params they see (float32 under master weights, which
    # adds the float32 master itself).
    if cfg.optim.master_weights:
        opt = n_train * (4 + 4 + 4)
    else:
        opt = n_train * 2 * p_bytes
    if cfg.optim.grad_accum > 1:
        opt += n_train * 4  # MultiSteps' accumulated gradients (float32)
    has_anchor = cfg.model.lora_rank or cfg.objective.method in ("mdu", "npo", "idkpo", "dpo")
    anchor = n_model * jnp.dtype(cfg.model.anchor_dtype).itemsize if has_anchor else 0
    return {"params": n_train * p_bytes / devices, "opt_state": opt / devices, "anchor": anchor / devices}


def make_cpu_mesh(cfg: TrainConfig, devices: int):
    """The run's mesh shape over the first `devices` devices (fake CPU devices when planning)."""
    available = jax.devices()
    if devices > len(available):
        raise ValueError(f"devices: {devices} requested, {len(available)} available; set "
                         f"XLA_FLAGS=--xla_force_host_platform_device_count={devices} before importing jax")
    return parallel.make_mesh(cfg.parallel.mesh, available[:devices])


def fits(peak_bytes: int, capacity_gib: float, headroom: float = 0.9) -> bool:
    """Whether a per-device peak fits `headroom` of a device's memory (GiB)."""
    return peak_bytes <= headroom * capacity_gib * GiB


def as_gib(x: float) -> float:
    return float(np.round(x / GiB, 2))
