"""LLaDA specifics: reading its ``config.json`` and its checkpoint tensor names.

LLaDA (GSAI-ML/LLaDA-8B-*) is a bidirectional Llama-style stack with its own names:
``ff_proj`` is the SiLU gate, ``up_proj`` the linear branch, the block's ``ff_out`` the down
projection, ``attn_out`` the output projection, and the top-level ``transformer.ff_out`` the
untied LM head. Its padding mask masks keys only; logits are not shifted.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping

from mdu_jax.models.config_fields import ConfigError, expect, require, require_all
from mdu_jax.models.hf_table import HFTensor, stacked_table

if TYPE_CHECKING:  # annotations only: the config module imports this table
    from mdu_jax.models.config import ModelConfig

MASK_TOKEN = "<|mdm_mask|>"
MASK_TOKEN_ID = 126336


# ModelConfig field -> (config.json key, type), each required.
REQUIRED = {"num_layers": ("n_layers", int), "intermediate_size": ("mlp_hidden_size", int),
            "rope_theta": ("rope_theta", float), "tie_word_embeddings": ("weight_tying", bool),
            "mask_token_id": ("mask_token_id", int), "eos_token_id": ("eos_token_id", int),
            "pad_token_id": ("pad_token_id", int)}


def config_from_hf(data: Mapping[str, Any]) -> dict[str, Any]:
    """ModelConfig fields from a LLaDA ``config.json`` dict (model_type 'llada')."""
    # Architectural switches the LLaDA code supports but the released checkpoints do not use:
    # refuse them rather than silently computing a different network.
    expect(data, "block_type", ("llama",), "llama")
    expect(data, "activation_type", ("silu",), "silu")
    expect(data, "layer_norm_type", ("rms",), "rms")
    expect(data, "alibi", (False,), False)
    expect(data, "rope", (True,), True)
    expect(data, "include_bias", (False,), False)
    expect(data, "include_qkv_bias", (False, None), False)
    expect(data, "attention_layer_norm", (False,), False)
    expect(data, "scale_logits", (False,), False)
    expect(data, "input_emb_norm", (False,), False)
    expect(data, "layer_norm_with_affine", (True,), True)
    expect(data, "bias_for_layer_norm", (False, None), None)
    d_model = require(data, "d_model")
    n_heads = require(data, "n_heads")
    if data.get("multi_query_attention"):
        n_kv_heads = 1
    else:
        n_kv_heads = data.get("n_kv_heads")
        n_kv_heads = n_heads if n_kv_heads is None else require(data, "n_kv_heads")
    vocab = require(data, "vocab_size")
    embedding = data.get("embedding_size")
    if embedding is None:
        embedding = vocab
    else:
        embedding = require(data, "embedding_size")
    if embedding < vocab:
        raise ConfigError(f"config field 'embedding_size': {embedding} is smaller than vocab_size={vocab}")
    if d_model % n_heads:
        raise ConfigError(f"config field 'n_heads': {n_heads} does not divide d_model={d_model}")
    # LLaDA's code default for weight_tying is True but the released checkpoints are untied:
    # the field must be present so that a truncated config is not silently misread.
    return dict(require_all(data, REQUIRED), family="llada", vocab_size=embedding, hidden_size=d_model,
                num_heads=n_heads, num_kv_heads=n_kv_heads, head_dim=d_model // n_heads, qkv_bias=False,
                rms_norm_eps=float(data.get("rms_norm_eps", 1e-5)), bos_token_id=data.get("bos_token_id"),
                max_position_embeddings=int(data.get("max_sequence_length", 4096)))


def config_to_hf(cfg: ModelConfig) -> dict[str, Any]:
    """A LLaDA ``config.json`` dict equivalent to `cfg` (keys of the LLaDA remote code)."""
    return {
        "architectures": ["LLaDAModelLM"],
        "model_type": "llada",
        "activation_type": "silu",
        "alibi": False,
        "alibi_bias_max": 8.0,
        "attention_dropout": 0.0,
        "attention_layer_norm": False,
        "attention_layer_norm_with_affine": True,
        "bias_for_layer_norm": False,
        "block_group_size": 1,
        "block_type": "llama",
        "d_model": cfg.hidden_size,
        "embedding_dropout": 0.0,
        "embedding_size": cfg.vocab_size,
        "eos_token_id": cfg.eos_token_id,
        "flash_attention": False,
        "include_bias": False,
        "include_qkv_bias": False,
        "init_cutoff_factor": None,
        "init_device": "meta",
        "init_fn": "mitchell",
        "init_std": 0.02,
        "input_emb_norm": False,
        "layer_norm_type": "rms",
        "layer_norm_with_affine": True,
        "mask_token_id": cfg.mask_token_id,
        "max_sequence_length": cfg.max_position_embeddings,
        "mlp_hidden_size": cfg.intermediate_size,
        "mlp_ratio": 4,
        "multi_query_attention": None,
        "n_heads": cfg.num_heads,
        "n_kv_heads": cfg.num_kv_heads,
        "n_layers": cfg.num_layers,
        "pad_token_id": cfg.pad_token_id,
        "precision": "amp_bf16",
        "residual_dropout": 0.0,
        "rms_norm_eps": cfg.rms_norm_eps,
        "rope": True,
        "rope_full_precision": True,
        "rope_theta": cfg.rope_theta,
        "scale_logits": False,
        "use_cache": False,
        "vocab_size": cfg.vocab_size,
        "weight_tying": cfg.tie_word_embeddings,
    }


# Decoder-block tensor name -> param path below ``layers``, in checkpoint order.
BLOCK = {"attn_norm.weight": ("attn_norm", "scale"), "q_proj.weight": ("q", "kernel"),
         "k_proj.weight": ("k", "kernel"), "v_proj.weight": ("v", "kernel"), "attn_out.weight": ("o", "kernel"),
         "ff_norm.weight": ("mlp_norm", "scale"), "ff_proj.weight": ("gate", "kernel"),
         "up_proj.weight": ("up", "kernel"), "ff_out.weight": ("down", "kernel")}


def hf_tensors(cfg: ModelConfig) -> list[HFTensor]:
    """Every tensor of a LLaDA checkpoint, with its [out, in] PyTorch shape and mdu_jax path."""
    prefix = "model.transformer"
    return stacked_table(cfg, embedding=f"{prefix}.wte.weight", block_prefix=f"{prefix}.blocks", block=BLOCK,
                         final_norm=f"{prefix}.ln_f.weight", lm_head=f"{prefix}.ff_out.weight")
