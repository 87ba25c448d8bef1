"""Independent PyTorch references: transformers' Llama (for LLaDA) and Qwen2 (for Dream),
bidirectional (``is_causal=False``), holding a tiny checkpoint's weights."""

from __future__ import annotations

import torch

LLADA_TO_LLAMA = {
    "model.transformer.wte.weight": "model.embed_tokens.weight",
    "model.transformer.ln_f.weight": "model.norm.weight",
    "model.transformer.ff_out.weight": "lm_head.weight",
}
LLADA_BLOCK_TO_LLAMA = {
    "attn_norm.weight": "input_layernorm.weight", "q_proj.weight": "self_attn.q_proj.weight",
    "k_proj.weight": "self_attn.k_proj.weight", "v_proj.weight": "self_attn.v_proj.weight",
    "attn_out.weight": "self_attn.o_proj.weight", "ff_norm.weight": "post_attention_layernorm.weight",
    "ff_proj.weight": "mlp.gate_proj.weight", "up_proj.weight": "mlp.up_proj.weight",
    "ff_out.weight": "mlp.down_proj.weight",
}


def llada_to_llama_names(sd):
    out = {}
    for name, t in sd.items():
        if name in LLADA_TO_LLAMA:
            out[LLADA_TO_LLAMA[name]] = t
        else:
            _, _, _, i, suffix = name.split(".", 4)  # model.transformer.blocks.{i}.{suffix}
            out[f"model.layers.{i}.{LLADA_BLOCK_TO_LLAMA[suffix]}"] = t
    return out


def reference_model(cfg_dict, sd, dtype=torch.float32):
    """A transformers model equivalent to the tiny LLaDA/Dream checkpoint (bidirectional)."""
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    if cfg_dict["model_type"] == "llada":
        config = LlamaConfig(
            vocab_size=cfg_dict["embedding_size"], hidden_size=cfg_dict["d_model"],
            intermediate_size=cfg_dict["mlp_hidden_size"], num_hidden_layers=cfg_dict["n_layers"],
            num_attention_heads=cfg_dict["n_heads"], num_key_value_heads=cfg_dict["n_kv_heads"],
            rms_norm_eps=cfg_dict["rms_norm_eps"], rope_theta=cfg_dict["rope_theta"],
            max_position_embeddings=cfg_dict["max_sequence_length"], tie_word_embeddings=cfg_dict["weight_tying"],
            attention_bias=False, mlp_bias=False, is_causal=False, pad_token_id=cfg_dict["pad_token_id"])
        model, state = LlamaForCausalLM(config), llada_to_llama_names(sd)
    else:
        config = Qwen2Config(
            vocab_size=cfg_dict["vocab_size"], hidden_size=cfg_dict["hidden_size"],
            intermediate_size=cfg_dict["intermediate_size"], num_hidden_layers=cfg_dict["num_hidden_layers"],
            num_attention_heads=cfg_dict["num_attention_heads"], num_key_value_heads=cfg_dict["num_key_value_heads"],
            rms_norm_eps=cfg_dict["rms_norm_eps"], rope_theta=cfg_dict["rope_theta"],
            max_position_embeddings=cfg_dict["max_position_embeddings"],
            tie_word_embeddings=cfg_dict["tie_word_embeddings"], is_causal=False,
            use_sliding_window=False, pad_token_id=cfg_dict["pad_token_id"])
        model, state = Qwen2ForCausalLM(config), dict(sd)
    config._attn_implementation = "eager"
    missing, unexpected = model.load_state_dict({k: v.float() for k, v in state.items()}, strict=False)
    assert not unexpected, unexpected
    assert all("rotary" in m for m in missing), missing
    return model.to(dtype).eval()


def reference_logits(model, input_ids, attention_mask=None):
    with torch.no_grad():
        ids = torch.as_tensor(input_ids, dtype=torch.long)
        mask = None if attention_mask is None else torch.as_tensor(attention_mask, dtype=torch.long)
        return model(input_ids=ids, attention_mask=mask).logits.float().numpy()
