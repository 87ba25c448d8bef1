"""ModelConfig: one frozen dataclass describing both LLaDA and Dream.

The family-specific parts (how a HF ``config.json`` is read, which tensor names a checkpoint
holds) live in ``llada.py`` and ``dream.py``; this file holds the fields and their checks.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Mapping

import jax
import jax.numpy as jnp

from mdu_jax.models import dream, llada
from mdu_jax.models.config_fields import ConfigError, expect, require

FAMILIES = ("llada", "dream")
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}
DTYPE_ALIASES = {"fp32": "float32", "f32": "float32", "bf16": "bfloat16", "fp16": "float16",
                 "f16": "float16", "float": "float32", "half": "float16"}
REMAT_POLICIES = ("none", "full", "dots", "dots_no_batch", "save_attn_mlp_out")
# Attention kernels (mdu_jax.models.layers.attention): 'xla' reference einsums; 'cudnn' GPU flash
# attention (bf16/fp16); 'splash' the Pallas TPU splash kernel (T a multiple of 128; off TPU only
# in interpret mode with MDU_JAX_SPLASH_INTERPRET=1); 'auto' cudnn on GPU, splash on TPU where
# supported, else xla; 'chunked' the xla arithmetic per (row, head, query block) (what the CPU
# samplers and scorers run: ``inference_config``).
ATTENTION_IMPLS = ("xla", "cudnn", "splash", "auto", "chunked")


def canonical_dtype(name: str, field: str = "dtype") -> str:
    """Maps 'bf16'/'fp32'/... to the canonical numpy name, or raises naming `field`."""
    key = DTYPE_ALIASES.get(str(name).lower(), str(name).lower())
    if key not in DTYPES:
        raise ConfigError(f"{field}: unknown dtype {name!r}; expected one of {sorted(DTYPES)} "
                          f"or an alias {sorted(DTYPE_ALIASES)}")
    return key


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Architecture and numerics of a LLaDA or Dream model.

    Shapes: hidden size D = ``hidden_size``, H = ``num_heads`` query heads of width
    ``head_dim``, K = ``num_kv_heads`` key/value heads (H % K == 0), F = ``intermediate_size``,
    V = ``vocab_size`` (the width of the embedding and output matrices; LLaDA's
    ``embedding_size``), L = ``num_layers``.

    ``param_dtype`` is the storage dtype of the parameters, ``dtype`` the compute dtype of
    activations and matmuls. Norm statistics, softmax and RoPE (LLaDA) run in float32 whatever
    ``dtype`` is.
    """

    family: str
    vocab_size: int
    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate_size: int
    rope_theta: float
    rms_norm_eps: float
    tie_word_embeddings: bool
    qkv_bias: bool
    mask_token_id: int
    eos_token_id: int
    pad_token_id: int
    bos_token_id: int | None = None
    max_position_embeddings: int = 4096
    # Numerics and execution (not part of the checkpoint).
    param_dtype: str = "float32"
    dtype: str = "float32"
    remat_policy: str = "none"
    attention_impl: str = "xla"
    scan_layers: bool = True

    def __post_init__(self):
        object.__setattr__(self, "param_dtype", canonical_dtype(self.param_dtype, "param_dtype"))
        object.__setattr__(self, "dtype", canonical_dtype(self.dtype, "dtype"))
        self.validate()

    # ------------------------------------------------------------------ validation
    def validate(self) -> None:
        """Raises ConfigError naming the first inconsistent field."""
        if self.family not in FAMILIES:
            raise ConfigError(f"family: unknown model family {self.family!r}; expected one of {FAMILIES}")
        for name in ("vocab_size", "hidden_size", "num_layers", "num_heads", "num_kv_heads",
                     "head_dim", "intermediate_size", "max_position_embeddings"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ConfigError(f"{name}: expected a positive integer, got {value!r}")
        if self.num_heads % self.num_kv_heads:
            raise ConfigError(f"num_kv_heads: {self.num_kv_heads} does not divide "
                              f"num_heads={self.num_heads}")
        if self.head_dim % 2:
            raise ConfigError(f"head_dim: RoPE needs an even head_dim, got {self.head_dim}")
        if not self.rope_theta > 0:
            raise ConfigError(f"rope_theta: expected > 0, got {self.rope_theta!r}")
        if not self.rms_norm_eps > 0:
            raise ConfigError(f"rms_norm_eps: expected > 0, got {self.rms_norm_eps!r}")
        for name in ("mask_token_id", "eos_token_id", "pad_token_id"):
            value = getattr(self, name)
            if not isinstance(value, int) or not 0 <= value < self.vocab_size:
                raise ConfigError(f"{name}: expected an id in [0, vocab_size={self.vocab_size}), got {value!r}")
        if self.mask_token_id == self.pad_token_id:
            raise ConfigError(f"mask_token_id: equals pad_token_id={self.pad_token_id}; padding with "
                              "the mask token would make pads look like noise")
        if self.bos_token_id is not None and not 0 <= self.bos_token_id < self.vocab_size:
            raise ConfigError(f"bos_token_id: expected an id in [0, {self.vocab_size}), got {self.bos_token_id!r}")
        if self.remat_policy not in REMAT_POLICIES:
            raise ConfigError(f"remat_policy: unknown {self.remat_policy!r}; expected one of {REMAT_POLICIES}")
        if self.attention_impl not in ATTENTION_IMPLS:
            raise ConfigError(f"attention_impl: unknown {self.attention_impl!r}; expected one of {ATTENTION_IMPLS}")

    # ------------------------------------------------------------------ derived facts
    @property
    def rope_in_fp32(self) -> bool:
        """LLaDA rotates q/k in float32; Dream rotates in the activation dtype."""
        return self.family == "llada"

    @property
    def masks_queries(self) -> bool:
        """Dream's padding mask removes query rows too; LLaDA masks keys only."""
        return self.family == "dream"

    @property
    def shifts_logits(self) -> bool:
        """Dream's raw logit at i predicts token i+1; mdu_jax shifts it to predict token i."""
        return self.family == "dream"

    @property
    def compute_dtype(self):
        return DTYPES[self.dtype]

    @property
    def weight_dtype(self):
        return DTYPES[self.param_dtype]

    def num_params(self) -> int:
        """Number of parameters of the checkpoint this config describes."""
        d, f, v = self.hidden_size, self.intermediate_size, self.vocab_size
        q = self.num_heads * self.head_dim
        kv = self.num_kv_heads * self.head_dim
        per_layer = d * q + 2 * d * kv + q * d + 3 * d * f + 2 * d
        if self.qkv_bias:
            per_layer += q + 2 * kv
        head = 0 if self.tie_word_embeddings else v * d
        return self.num_layers * per_layer + v * d + head + d

    def replace(self, **changes) -> "ModelConfig":
        """A copy with `changes` applied (validated)."""
        unknown = set(changes) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            raise ConfigError(f"unknown ModelConfig field(s): {sorted(unknown)}")
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "ModelConfig":
        """Inverse of ``to_dict`` (mdu_jax's own format, not HF's)."""
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - fields
        if unknown:
            raise ConfigError(f"unknown ModelConfig field(s): {sorted(unknown)}")
        missing = [f.name for f in dataclasses.fields(cls)
                   if f.name not in data and f.default is dataclasses.MISSING]
        if missing:
            raise ConfigError(f"missing ModelConfig field(s): {missing}")
        return cls(**data)

    # ------------------------------------------------------------------ HF interop
    @classmethod
    def from_hf(cls, path_or_dict: str | os.PathLike | Mapping[str, Any], **overrides) -> "ModelConfig":
        """Reads a HF ``config.json`` (LLaDA ``model_type: llada`` or Dream ``model_type: Dream``).

        `path_or_dict` is a folder holding ``config.json``, the file itself, or its parsed dict.
        `overrides` set non-checkpoint fields (``dtype``, ``param_dtype``, ``remat_policy``, ...).
        Raises ConfigError naming the missing or inconsistent field and the file it came from.
        """
        source = "<dict>"
        if isinstance(path_or_dict, Mapping):
            data = dict(path_or_dict)
        else:
            path = os.fspath(path_or_dict)
            if os.path.isdir(path):
                path = os.path.join(path, "config.json")
            source = path
            if not os.path.isfile(path):
                raise ConfigError(f"{path}: no such config file")
            try:
                with open(path) as f:
                    data = json.load(f)
            except json.JSONDecodeError as e:
                raise ConfigError(f"{path}: not valid JSON ({e})") from e
        model_type = data.get("model_type")
        readers = {"llada": llada.config_from_hf, "dream": dream.config_from_hf}
        family = str(model_type).lower() if model_type is not None else None
        if family not in readers:
            raise ConfigError(f"{source}: model_type: unknown {model_type!r}; expected 'llada' "
                              "(LLaDA) or 'Dream' (Dream)")
        try:
            fields = readers[family](data)
        except ConfigError as e:
            raise ConfigError(f"{source}: {e}") from None
        fields.update(overrides)
        try:
            return cls(**fields)
        except ConfigError as e:
            raise ConfigError(f"{source}: {e}") from None
        except TypeError as e:
            raise ConfigError(f"{source}: {e}") from None

    def to_hf(self) -> dict[str, Any]:
        """The HF ``config.json`` dict for this architecture (family's own key names)."""
        return {"llada": llada.config_to_hf, "dream": dream.config_to_hf}[self.family](self)


def inference_config(cfg: ModelConfig) -> ModelConfig:
    """The config the no-gradient programs (samplers, likelihoods, scores) run `cfg` with: on a
    CPU, 'xla' attention becomes 'chunked' (same arithmetic one query block at a time; see
    ``layers.chunked_attention`` for why and how much); anything else is returned unchanged.
    Training keeps the config it is given."""
    if cfg.attention_impl == "xla" and jax.default_backend() == "cpu":
        return cfg.replace(attention_impl="chunked")
    return cfg


__all__ = ["ModelConfig", "inference_config", "ConfigError", "canonical_dtype", "expect", "require", "FAMILIES",
           "DTYPES", "REMAT_POLICIES", "ATTENTION_IMPLS"]
