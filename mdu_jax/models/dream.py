"""Dream specifics: reading its ``config.json`` and its (Qwen2-layout) checkpoint tensor names.

Dream (Dream-org/Dream-v0-*-7B) is Qwen2.5 made bidirectional: q/k/v biases, grouped-query
attention (28 query heads on 4 kv heads at full size), RoPE in the activation dtype, a padding
mask over queries AND keys, and Qwen's autoregressive logit alignment (raw logit i predicts
token i+1), which mdu_jax shifts right by one so that ``logits[:, i]`` predicts token i.
"""

from __future__ import annotations

from typing import Any, Mapping

from mdu_jax.models.config import ConfigError, ModelConfig, expect, require
from mdu_jax.models.params import HFTensor

MASK_TOKEN_ID = 151666


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
    return dict(
        family="dream",
        vocab_size=require(data, "vocab_size"),
        hidden_size=hidden,
        num_layers=require(data, "num_hidden_layers"),
        num_heads=heads,
        num_kv_heads=kv_heads,
        head_dim=head_dim,
        intermediate_size=require(data, "intermediate_size"),
        rope_theta=require(data, "rope_theta", float),
        rms_norm_eps=require(data, "rms_norm_eps", float),
        tie_word_embeddings=bool(data.get("tie_word_embeddings", False)),
        qkv_bias=True,
        mask_token_id=require(data, "mask_token_id"),
        eos_token_id=eos,
        pad_token_id=eos if pad is None else require(data, "pad_token_id"),
        bos_token_id=data.get("bos_token_id"),
        max_position_embeddings=int(data.get("max_position_embeddings", 131072)),
    )


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


def hf_tensors(cfg: ModelConfig) -> list[HFTensor]:
    """Every tensor of a Dream checkpoint, with its [out, in] PyTorch shape and mdu_jax path."""
    D, H, K, h, F, V = (cfg.hidden_size, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim,
                        cfg.intermediate_size, cfg.vocab_size)
    table = [HFTensor("model.embed_tokens.weight", (V, D), ("embed", "embedding"), None, False)]
    per_layer = [
        ("input_layernorm.weight", (D,), ("layers", "attn_norm", "scale"), False),
        ("self_attn.q_proj.weight", (H * h, D), ("layers", "q", "kernel"), True),
        ("self_attn.q_proj.bias", (H * h,), ("layers", "q", "bias"), False),
        ("self_attn.k_proj.weight", (K * h, D), ("layers", "k", "kernel"), True),
        ("self_attn.k_proj.bias", (K * h,), ("layers", "k", "bias"), False),
        ("self_attn.v_proj.weight", (K * h, D), ("layers", "v", "kernel"), True),
        ("self_attn.v_proj.bias", (K * h,), ("layers", "v", "bias"), False),
        ("self_attn.o_proj.weight", (D, H * h), ("layers", "o", "kernel"), True),
        ("post_attention_layernorm.weight", (D,), ("layers", "mlp_norm", "scale"), False),
        ("mlp.gate_proj.weight", (F, D), ("layers", "gate", "kernel"), True),
        ("mlp.up_proj.weight", (F, D), ("layers", "up", "kernel"), True),
        ("mlp.down_proj.weight", (D, F), ("layers", "down", "kernel"), True),
    ]
    for i in range(cfg.num_layers):
        for suffix, shape, path, transpose in per_layer:
            table.append(HFTensor(f"model.layers.{i}.{suffix}", shape, path, i, transpose))
    table.append(HFTensor("model.norm.weight", (D,), ("final_norm", "scale"), None, False))
    if not cfg.tie_word_embeddings:
        table.append(HFTensor("lm_head.weight", (V, D), ("lm_head", "kernel"), None, True))
    return table
