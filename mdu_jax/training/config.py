"""The run configuration of ``python -m mdu_jax.train``: typed sections, YAML, overrides.

A YAML file maps onto ``TrainConfig``; ``key=value`` arguments (dotted: ``optim.lr=1e-5``,
``objective.tau=0.5``) override it. Unknown keys and wrong types are errors naming the key.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal, Optional

import yaml

from mdu_jax import typed_config
from mdu_jax.diffusion import check_t_range
from mdu_jax.models.lora import TARGETS as LORA_TARGETS, LoraSpec
from mdu_jax.typed_config import ConfigKeyError

METHODS = ("mdu", "sft", "ga", "graddiff", "npo", "simnpo", "me_gd", "idkpo", "dpo")


@dataclasses.dataclass
class ModelSection:
    """Where the initial (and anchor) weights come from and how to run them."""

    path: Optional[str] = None           # HF folder or converted mdu_jax checkpoint
    init_config: Optional[dict[str, Any]] = None  # a HF config.json dict for a random init (tests/demo)
    tokenizer: Optional[str] = None      # tokenizer folder for a random init
    dtype: str = "bfloat16"              # compute dtype
    param_dtype: str = "float32"         # trainable parameter dtype (fp32 = master weights)
    anchor_dtype: str = "bfloat16"       # the frozen anchor's stored dtype
    remat_policy: str = "none"
    attention_impl: str = "xla"
    scan_layers: bool = True
    # LoRA (mdu_jax.models.lora): > 0 trains rank-r adapters on lora_targets instead of the weights; the
    # frozen base (stored in anchor_dtype) is then also the anchor: no second copy of the model.
    lora_rank: int = 0
    lora_alpha: float = 16.0             # the adapter update is lora_alpha / lora_rank * A B
    lora_targets: list[str] = dataclasses.field(
        default_factory=lambda: ["q", "k", "v", "o", "gate", "up", "down"])
    # LoRA + MDU: one layer stack for the conditional and anchor passes, sharing each base matmul.
    fuse_anchor_pass: bool = False

    def validate(self):
        if (self.path is None) == (self.init_config is None):
            raise ConfigKeyError("model: set exactly one of model.path (a checkpoint) or model.init_config")
        if self.lora_rank < 0:
            raise ConfigKeyError(f"model.lora_rank: expected >= 0 (0: no LoRA), got {self.lora_rank}")
        if self.lora_rank:
            bad = [t for t in self.lora_targets if t not in LORA_TARGETS]
            if bad or not self.lora_targets or len(set(self.lora_targets)) != len(self.lora_targets):
                raise ConfigKeyError(f"model.lora_targets: expected distinct names from {list(LORA_TARGETS)}, "
                                     f"got {self.lora_targets}")
        if self.fuse_anchor_pass and not self.lora_rank:
            raise ConfigKeyError("model.fuse_anchor_pass: needs model.lora_rank > 0 (the anchor and the "
                                 "conditional pass must share the base weights)")


@dataclasses.dataclass
class DataSection:
    """Forget / retain data: TOFU or RWKU from the Hub (or a local copy), or local json/jsonl."""

    benchmark: Literal["tofu", "rwku", "files"] = "tofu"
    data_dir: Optional[str] = None       # local folder in the benchmark's layout (default: the Hub)
    forget_split: str = "forget10"
    retain_split: Optional[str] = "retain90"
    forget_files: list[str] = dataclasses.field(default_factory=list)  # benchmark: files
    retain_files: list[str] = dataclasses.field(default_factory=list)
    rwku_subject: Optional[str] = None
    idk_file: Optional[str] = None       # "I don't know" answers (idkpo / dpo)
    max_examples: Optional[int] = None   # per split, for quick runs
    max_length: int = 512
    buckets: list[int] = dataclasses.field(default_factory=lambda: [64, 128, 256, 512])
    # bucket: each batch is right-padded to the smallest bucket that holds it (one compiled program
    # per bucket). longest: to its own longest row, as the reference's DataCollatorForSeq2Seq
    # (padding=True) after length grouping; one program per distinct length. With
    # attend_padding the padding is visible, so only 'longest' reproduces the reference's numbers.
    padding: Literal["bucket", "longest"] = "bucket"
    # Which rows share a micro-batch. shuffled: mega-batches of 50 micro-batches sorted by length,
    # then the batches shuffled. hf: HF's LengthGroupedSampler (group_by_length=True, as the
    # reference trains): mega-batches of min(n / (4 x batch_size x grad_accum), 50) optimiser-step
    # groups sorted longest first, taken in order (data.mixing: union only).
    length_grouping: Literal["shuffled", "hf"] = "shuffled"
    truncation: Literal["error", "drop", "right"] = "error"
    mixing: Literal["union", "paired"] = "union"   # union: shuffled forget+retain rows (the reference)
    pad_labels: Literal["ignore", "eos"] = "ignore"  # eos: train on EOS padding (LLaDA SFT recipe)
    # The MDU reference drops the attention mask, so right-padding EOS is visible to every token.
    # False (default) masks padding instead: results then do not depend on the bucket length.
    attend_padding: bool = False

    def validate(self):
        if self.benchmark == "files" and not self.forget_files:
            raise ConfigKeyError("data.forget_files: benchmark 'files' needs at least one file")
        if not self.buckets or sorted(self.buckets) != list(self.buckets) or self.buckets[-1] < 1:
            raise ConfigKeyError(f"data.buckets: expected an increasing list of lengths, got {self.buckets}")
        if self.length_grouping == "hf" and self.mixing != "union":
            raise ConfigKeyError("data.length_grouping: 'hf' orders one pool of rows; it needs data.mixing: union")
        if self.max_length > self.buckets[-1]:
            raise ConfigKeyError(f"data.max_length: {self.max_length} exceeds the largest bucket {self.buckets[-1]}")


@dataclasses.dataclass
class ObjectiveSection:
    """What is minimised. ``mdu``: KL to the tau-tempered prompt-masked anchor + lambda x retain."""

    method: str = "mdu"
    tau: float = 1.0
    eta: float = 0.0
    divergence: Literal["forward", "reverse", "js"] = "forward"
    exclude_special: bool = False        # drop special-token ids from both distributions (LLaDA option)
    nan_to_num: bool = False             # the LLaDA reference's _safe_kl
    retain_weight: float = 1.0           # lambda (the reference's --alpha)
    retain_loss_weight: Optional[Literal["scheduler", "uniform", "cart"]] = None  # None: family default
    schedule: Literal["linear", "cosine"] = "linear"
    time_eps: float = 1e-3
    # [lo, hi]: forget rows draw their diffusion time t ~ U[lo, hi) instead of U[time_eps, 1) (the
    # timestep ablation: unlearn only at masking ratios in a band); retain rows keep the full range.
    t_range: Optional[list[float]] = None
    npo_beta: float = 0.1
    npo_batch_level: bool = False        # the MDU reference's batch-level NPO instead of per-sequence
    simnpo_gamma: float = 0.0
    dpo_beta: float = 0.1
    keep_template_tokens: bool = False   # keep non-question template tokens visible to the anchor
    chunk_size: int = 0                  # >0: compute the loss over sequence chunks of this size
    # sft only: the fraction of rows trained with every non-response position masked (the prompt-
    # masked view MDU's anchor reads; a pretrained MDLM learns it from pretraining's masked contexts).
    prompt_dropout: float = 0.0

    def validate(self):
        if self.method not in METHODS:
            raise ConfigKeyError(f"objective.method: unknown {self.method!r}; expected one of {list(METHODS)}")
        if self.tau < 0:
            raise ConfigKeyError(f"objective.tau: expected >= 0, got {self.tau}")
        if self.chunk_size < 0:
            raise ConfigKeyError(f"objective.chunk_size: expected >= 0, got {self.chunk_size}")
        if self.t_range is not None:
            try:
                check_t_range(self.t_range)
            except ValueError as e:
                raise ConfigKeyError(f"objective.{e}") from None
        if not 0.0 <= self.prompt_dropout < 1.0:
            raise ConfigKeyError(f"objective.prompt_dropout: expected in [0, 1), got {self.prompt_dropout}")
        if self.prompt_dropout and self.method != "sft":
            raise ConfigKeyError(f"objective.prompt_dropout: only for method 'sft', objective.method is {self.method!r}")


@dataclasses.dataclass
class OptimSection:
    """AdamW with clipping, warmup + decay, gradient accumulation."""

    lr: float = 1e-5
    schedule: Literal["cosine", "linear", "constant"] = "cosine"
    warmup_ratio: float = 0.1
    weight_decay: float = 0.0
    b1: float = 0.9
    b2: float = 0.999
    eps: float = 1e-8
    clip_norm: float = 1.0
    grad_accum: int = 1
    # mean: the accumulated gradient is the mean over the grad_accum micro-batches (each already
    # normalised by its own counts). sum: their sum, as HF's Trainer does when the model's
    # forward takes **kwargs (Dream's does: it then skips the division by the accumulation
    # steps), so clipping at clip_norm sees a grad_accum-times larger norm.
    accumulation: Literal["mean", "sum"] = "mean"
    # float32 master params + float32 Adam moments when model.param_dtype is bf16/fp16
    # (training.optimizer.with_master_weights); the reference updates bf16 weights directly.
    master_weights: bool = False
    # The divergence guard: an update whose global L2 norm exceeds this multiple of the trainable
    # parameters' global L2 norm is refused and the run stops (0: off). Adam moves each weight by
    # about lr per step, so the ratio is about lr / rms(weights): measured at most 0.08 for a tiny
    # LLaDA at lr 7e-3 and 0.005 in the training tests; lr = 1e30 gives ~1e30 and stops at once.
    max_update_ratio: float = 1.0

    def validate(self):
        if self.lr <= 0:
            raise ConfigKeyError(f"optim.lr: expected > 0, got {self.lr}")
        if self.grad_accum < 1:
            raise ConfigKeyError(f"optim.grad_accum: expected >= 1, got {self.grad_accum}")
        if not 0 <= self.warmup_ratio < 1:
            raise ConfigKeyError(f"optim.warmup_ratio: expected in [0, 1), got {self.warmup_ratio}")
        if self.max_update_ratio < 0:
            raise ConfigKeyError(f"optim.max_update_ratio: expected >= 0 (0: off), got {self.max_update_ratio}")


@dataclasses.dataclass
class ParallelSection:
    """Device mesh and step flavour. -1 in the mesh means 'the remaining devices'."""

    step: Literal["jit", "pmap"] = "jit"
    mesh: dict[str, int] = dataclasses.field(default_factory=lambda: {"data": 1, "fsdp": -1, "tensor": 1})
    rules: Optional[dict[str, Optional[str]]] = None  # logical axis -> mesh axis overrides
    num_devices: int = 0                 # use only the first N devices (0: all)
    distributed: Literal["auto", "on", "off"] = "auto"
    # Pin the model passes' token inputs and hidden states to the batch sharding (jit step only):
    # per-device activation memory then follows the per-device rows, not the global batch.
    shard_activations: bool = False

    def validate(self):
        unknown = set(self.mesh) - {"data", "fsdp", "tensor"}
        if unknown:
            raise ConfigKeyError(f"parallel.mesh: unknown axis {sorted(unknown)[0]!r}; axes are data, fsdp, tensor")
        if sum(1 for v in self.mesh.values() if v == -1) > 1:
            raise ConfigKeyError("parallel.mesh: at most one axis may be -1")
        bad = [k for k, v in self.mesh.items() if v == 0 or v < -1]
        if bad:
            raise ConfigKeyError(f"parallel.mesh.{bad[0]}: expected a positive size or -1, got {self.mesh[bad[0]]}")


@dataclasses.dataclass
class CheckpointSection:
    every_steps: int = 0                 # optimiser steps between checkpoints; 0: only at the end
    keep: int = 2
    async_save: bool = True

    def validate(self):
        if self.every_steps < 0:
            raise ConfigKeyError(f"checkpoint.every_steps: expected >= 0 (0: only at the end), got {self.every_steps}")
        if self.keep < 1:
            raise ConfigKeyError(f"checkpoint.keep: expected >= 1, got {self.keep}")


@dataclasses.dataclass
class TrainConfig:
    """A whole run: model, data, objective, optimiser, parallelism, checkpoints."""

    model: ModelSection = dataclasses.field(default_factory=ModelSection)
    data: DataSection = dataclasses.field(default_factory=DataSection)
    objective: ObjectiveSection = dataclasses.field(default_factory=ObjectiveSection)
    optim: OptimSection = dataclasses.field(default_factory=OptimSection)
    parallel: ParallelSection = dataclasses.field(default_factory=ParallelSection)
    checkpoint: CheckpointSection = dataclasses.field(default_factory=CheckpointSection)
    output_dir: str = "runs/mdu"
    batch_size: int = 16                 # global micro-batch (rows) per step, before accumulation
    forget_batch_size: Optional[int] = None  # data.mixing=paired: forget rows per batch (rest retain)
    epochs: float = 1.0
    max_steps: Optional[int] = None      # optimiser steps (micro-batches / grad_accum); overrides epochs
    seed: int = 42
    log_every: int = 1                   # optimiser steps between metrics.jsonl rows
    export_hf: Optional[str] = None      # write an HF folder of the final params here
    tensorboard: bool = True

    def validate(self):
        if self.model.fuse_anchor_pass and self.objective.method != "mdu":
            raise ConfigKeyError(f"model.fuse_anchor_pass: only the 'mdu' method has a fused anchor pass, "
                                 f"objective.method is {self.objective.method!r}")
        if self.batch_size < 1:
            raise ConfigKeyError(f"batch_size: expected >= 1, got {self.batch_size}")
        if self.epochs <= 0 and self.max_steps is None:
            raise ConfigKeyError(f"epochs: expected > 0, got {self.epochs}")
        if self.log_every < 1:
            raise ConfigKeyError(f"log_every: expected >= 1, got {self.log_every}")
        if self.max_steps is not None and self.max_steps < 1:
            raise ConfigKeyError(f"max_steps: expected >= 1, got {self.max_steps}")
        if self.data.mixing == "paired":
            fb = self.forget_batch_size
            if fb is None or not 0 < fb < self.batch_size:
                raise ConfigKeyError(f"forget_batch_size: data.mixing=paired needs 0 < forget_batch_size < "
                                     f"batch_size={self.batch_size}, got {fb}")


def load_config(path: str | None = None, overrides: list[str] | None = None, base: dict | None = None) -> TrainConfig:
    """TrainConfig from a YAML file (or `base` dict) plus dotted overrides, validated."""
    data = typed_config.read_config_file(path) if path else dict(base or {})
    data = typed_config.apply_overrides(data, overrides or [], TrainConfig)
    return typed_config.from_dict(TrainConfig, data)


def to_yaml(cfg: TrainConfig) -> str:
    return yaml.safe_dump(typed_config.to_dict(cfg), sort_keys=False)


def lora_spec(cfg: TrainConfig) -> LoraSpec | None:
    """The run's LoRA adapters (``mdu_jax.models.lora.LoraSpec``), or None without LoRA (model.lora_rank = 0)."""
    if not cfg.model.lora_rank:
        return None
    return LoraSpec(cfg.model.lora_rank, cfg.model.lora_alpha, tuple(cfg.model.lora_targets))
