"""Dream specifics: reading its ``config.json`` and its (Qwen2-layout) checkpoint tensor names.

Dream (Dream-org/Dream-v0-*-7B) is Qwen2.5 made bidirectional: q/k/v biases, grouped-query
attention (28 query heads on 4 kv heads at full size), RoPE in the activation dtype, a padding
mask over queries AND keys, and Qwen's autoregressive logit alignment (raw logit i predicts
token i+1), which mdu_jax shifts right by one so that ``logits[:, i]`` predicts token i.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping

from mdu_jax.models.config_fields import ConfigError, expect, require, require_all
from mdu_jax.models.hf_table import HFTensor, stacked_table

if TYPE_CHECKING:  # annotations only: the config module imports this table
    from mdu_jax.models.config import ModelConfig

MASK_TOKEN_ID = 151666


# ModelConfig field -> (config.json key, type), each required.
REQUIRED = {"vocab_size": ("vocab_size", int), "num_layers": ("num_hidden_layers", int),
            "intermediate_size": ("intermediate_size", int), "rope_theta": ("rope_theta", float),
            "rms_norm_eps": ("rms_norm_eps", float), "mask_token_id": ("mask_token_id", int)}


def config_from_hf(data: Mapping[str, Any]) -> dict[str, Any]:
    """ModelConfig fields from a Dream ``config.json`` dict (model_type 'Dream')."""
    expect(data, "hidden_act", ("silu",), "silu")
    expect(data, "rope_scaling", (None,), None)
    hidden = require(data, "hidden_size")
    heads = require(data, "num_attention_heads")
    kv_heads = data.get("num_key_value_heads")
    kv_heads = heads if kv_heads is None else require(data, "num_key_value_heads")
    head_dim = data.get("head_dim")
    if head_dim is None:
        if hidden % heads:
            raise ConfigError(f"config field 'num_attention_heads': {heads} does not divide hidden_size={hidden}")
        head_dim = hidden // heads
    else:
        head_dim = require(data, "head_dim")
    pad = data.get("pad_token_id")
    eos = require(data, "eos_token_id")
    return dict(require_all(data, REQUIRED), family="dream", hidden_size=hidden, num_heads=heads,
                num_kv_heads=kv_heads, head_dim=head_dim, qkv_bias=True, eos_token_id=eos,
                tie_word_embeddings=bool(data.get("tie_word_embeddings", False)),
                pad_token_id=eos if pad is None else require(data, "pad_token_id"),
                bos_token_id=data.get("bos_token_id"),
                max_position_embeddings=int(data.get("max_position_embeddings", 131072)))


def config_to_hf(cfg: ModelConfig) -> dict[str, Any]:
    """A Dream ``config.json`` dict equivalent to `cfg`."""
    return {
        "architectures": ["DreamModel"],
        "model_type": "Dream",
        "attention_dropout": 0.0,
        "bos_token_id": cfg.bos_token_id if cfg.bos_token_id is not None else cfg.eos_token_id,
        "eos_token_id": cfg.eos_token_id,
        "pad_token_id": cfg.pad_token_id,
        "mask_token_id": cfg.mask_token_id,
        "hidden_act": "silu",
        "hidden_size": cfg.hidden_size,
        "initializer_range": 0.02,
        "intermediate_size": cfg.intermediate_size,
        "max_position_embeddings": cfg.max_position_embeddings,
        "max_window_layers": cfg.num_layers,
        "num_attention_heads": cfg.num_heads,
        "num_hidden_layers": cfg.num_layers,
        "num_key_value_heads": cfg.num_kv_heads,
        "rms_norm_eps": cfg.rms_norm_eps,
        "rope_scaling": None,
        "rope_theta": cfg.rope_theta,
        "sliding_window": None,
        "tie_word_embeddings": cfg.tie_word_embeddings,
        "torch_dtype": "bfloat16",
        "use_cache": False,
        "use_sliding_window": False,
        "vocab_size": cfg.vocab_size,
    }


# Decoder-block tensor name -> param path below ``layers``, in checkpoint order.
BLOCK = {"input_layernorm.weight": ("attn_norm", "scale"),
         "self_attn.q_proj.weight": ("q", "kernel"), "self_attn.q_proj.bias": ("q", "bias"),
         "self_attn.k_proj.weight": ("k", "kernel"), "self_attn.k_proj.bias": ("k", "bias"),
         "self_attn.v_proj.weight": ("v", "kernel"), "self_attn.v_proj.bias": ("v", "bias"),
         "self_attn.o_proj.weight": ("o", "kernel"), "post_attention_layernorm.weight": ("mlp_norm", "scale"),
         "mlp.gate_proj.weight": ("gate", "kernel"), "mlp.up_proj.weight": ("up", "kernel"),
         "mlp.down_proj.weight": ("down", "kernel")}


def hf_tensors(cfg: ModelConfig) -> list[HFTensor]:
    """Every tensor of a Dream checkpoint, with its [out, in] PyTorch shape and mdu_jax path."""
    return stacked_table(cfg, embedding="model.embed_tokens.weight", block_prefix="model.layers", block=BLOCK,
                         final_norm="model.norm.weight", lm_head="lm_head.weight")
