"""Tiny LLaDA / Dream models in the real HF checkpoint layout, written by the tests themselves.

``write_hf_checkpoint`` draws random PyTorch weights with the real tensor names and [out, in]
shapes, saves them with ``safetensors.torch`` (optionally sharded with an index.json) next to a
config.json in the family's own key names and a tiny word-level tokenizer with the family's
special tokens, and returns the state dict so tests can build the transformers reference.
"""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np

TINY_LLADA_HF = {
    "model_type": "llada", "architectures": ["LLaDAModelLM"], "d_model": 32, "n_layers": 2, "n_heads": 4,
    "n_kv_heads": 4, "mlp_hidden_size": 48, "rope_theta": 500000.0, "rms_norm_eps": 1e-5,
    "weight_tying": False, "vocab_size": 96, "embedding_size": 96, "mask_token_id": 95,
    "eos_token_id": 1, "pad_token_id": 1, "max_sequence_length": 256, "activation_type": "silu",
    "block_type": "llama", "layer_norm_type": "rms", "rope": True, "alibi": False, "include_bias": False,
}

TINY_DREAM_HF = {
    "model_type": "Dream", "architectures": ["DreamModel"], "hidden_size": 32, "num_hidden_layers": 2,
    "num_attention_heads": 4, "num_key_value_heads": 2, "intermediate_size": 48, "rope_theta": 1000000.0,
    "rms_norm_eps": 1e-6, "tie_word_embeddings": False, "vocab_size": 96, "mask_token_id": 95,
    "eos_token_id": 1, "pad_token_id": 1, "bos_token_id": 1, "max_position_embeddings": 256,
    "hidden_act": "silu", "rope_scaling": None,
}

# Word-level vocabulary shared by both tiny tokenizers: ids 0..7 are special, then words.
SPECIALS = {
    "llada": ["<|startoftext|>", "<|endoftext|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"],
    "dream": ["<|im_start|>", "<|endoftext|>", "<|im_end|>", "<|fim_pad|>", "<|fim_middle|>"],
}
MASK_TOKEN = {"llada": "<|mdm_mask|>", "dream": "<|mask|>"}
WORDS = ("user assistant system you are a helpful the of and to in is was born who what where when "
         "author book books wrote writes written city year name father mother genre award his her "
         "their works known for novel novels poems science fiction history paris london tokyo lagos "
         "1950 1960 1970 1980 1990 teacher doctor engineer painter ? . , ' : yes no not i don know "
         "\n \n\n").split(" ")
# MMLU's answer letters (' A' .. ' D'), appended so that every id above stays put: four distinct
# tokens, so that a letter-choice test can tell the letters apart.
WORDS = WORDS + ["A", "B", "C", "D"]


def hf_config(family: str, **changes) -> dict[str, Any]:
    base = dict(TINY_LLADA_HF if family == "llada" else TINY_DREAM_HF)
    base.update(changes)
    return base


def tensor_names_and_shapes(cfg_dict: dict[str, Any]) -> list[tuple[str, tuple[int, ...]]]:
    """The real checkpoint layout, written out independently of mdu_jax's name table."""
    out = []
    if cfg_dict["model_type"] == "llada":
        D, F, V = cfg_dict["d_model"], cfg_dict["mlp_hidden_size"], cfg_dict["embedding_size"]
        kv = D // cfg_dict["n_heads"] * cfg_dict["n_kv_heads"]
        out.append(("model.transformer.wte.weight", (V, D)))
        for i in range(cfg_dict["n_layers"]):
            b = f"model.transformer.blocks.{i}."
            out += [(b + "attn_norm.weight", (D,)), (b + "q_proj.weight", (D, D)), (b + "k_proj.weight", (kv, D)),
                    (b + "v_proj.weight", (kv, D)), (b + "attn_out.weight", (D, D)), (b + "ff_norm.weight", (D,)),
                    (b + "ff_proj.weight", (F, D)), (b + "up_proj.weight", (F, D)), (b + "ff_out.weight", (D, F))]
        out.append(("model.transformer.ln_f.weight", (D,)))
        if not cfg_dict["weight_tying"]:
            out.append(("model.transformer.ff_out.weight", (V, D)))
    else:
        D, F, V = cfg_dict["hidden_size"], cfg_dict["intermediate_size"], cfg_dict["vocab_size"]
        kv = D // cfg_dict["num_attention_heads"] * cfg_dict["num_key_value_heads"]
        out.append(("model.embed_tokens.weight", (V, D)))
        for i in range(cfg_dict["num_hidden_layers"]):
            b = f"model.layers.{i}."
            out += [(b + "input_layernorm.weight", (D,)),
                    (b + "self_attn.q_proj.weight", (D, D)), (b + "self_attn.q_proj.bias", (D,)),
                    (b + "self_attn.k_proj.weight", (kv, D)), (b + "self_attn.k_proj.bias", (kv,)),
                    (b + "self_attn.v_proj.weight", (kv, D)), (b + "self_attn.v_proj.bias", (kv,)),
                    (b + "self_attn.o_proj.weight", (D, D)), (b + "post_attention_layernorm.weight", (D,)),
                    (b + "mlp.gate_proj.weight", (F, D)), (b + "mlp.up_proj.weight", (F, D)),
                    (b + "mlp.down_proj.weight", (D, F))]
        out.append(("model.norm.weight", (D,)))
        if not cfg_dict.get("tie_word_embeddings", False):
            out.append(("lm_head.weight", (V, D)))
    return out


def random_state_dict(cfg_dict: dict[str, Any], seed: int = 0, dtype: str = "float32"):
    """Random torch tensors for every checkpoint tensor (norm weights around 1, biases nonzero)."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    sd = {}
    for name, shape in tensor_names_and_shapes(cfg_dict):
        if name.endswith("norm.weight") or ".ln_f." in name:
            t = 1.0 + 0.1 * torch.randn(shape, generator=gen)
        elif name.endswith(".bias"):
            t = 0.1 * torch.randn(shape, generator=gen)
        else:
            t = 0.15 * torch.randn(shape, generator=gen)
        sd[name] = t.to(getattr(torch, dtype)).contiguous()
    return sd


def save_state_dict(folder: str, sd, shards: int = 1) -> None:
    """Writes `sd` as model.safetensors, or as `shards` files plus model.safetensors.index.json."""
    from safetensors.torch import save_file

    names = list(sd)
    if shards == 1:
        save_file(sd, os.path.join(folder, "model.safetensors"), metadata={"format": "pt"})
        return
    groups = np.array_split(np.arange(len(names)), shards)
    weight_map = {}
    total = 0
    for k, idx in enumerate(groups):
        fname = f"model-{k + 1:05d}-of-{shards:05d}.safetensors"
        part = {names[i]: sd[names[i]] for i in idx}
        save_file(part, os.path.join(folder, fname), metadata={"format": "pt"})
        for n, t in part.items():
            weight_map[n] = fname
            total += t.numel() * t.element_size()
    with open(os.path.join(folder, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2)


def write_tokenizer(folder: str, family: str, vocab_size: int, mask_id: int) -> None:
    """A word-level HF tokenizer with the family's specials, the mask token at `mask_id`."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = SPECIALS[family]
    vocab = {tok: i for i, tok in enumerate(specials)}
    for w in WORDS:
        if w and w not in vocab and len(vocab) < mask_id:
            vocab[w] = len(vocab)
    vocab["<unk>"] = len(vocab)
    while len(vocab) < mask_id:
        vocab[f"<|reserved_{len(vocab)}|>"] = len(vocab)
    vocab[MASK_TOKEN[family]] = mask_id
    tk = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    kwargs = dict(tokenizer_object=tk, unk_token="<unk>", eos_token="<|endoftext|>", pad_token="<|endoftext|>")
    if family == "llada":
        kwargs["bos_token"] = "<|startoftext|>"  # no mask_token: like the released LLaDA tokenizer
    else:
        kwargs["mask_token"] = MASK_TOKEN[family]
        kwargs["chat_template"] = (
            "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>' + '\n' }}"
            "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")
    tok = PreTrainedTokenizerFast(**kwargs)
    tok.add_special_tokens({"additional_special_tokens": [s for s in specials if s not in
                                                          ("<|startoftext|>", "<|endoftext|>")]})
    tok.save_pretrained(folder)


def write_hf_checkpoint(folder, family: str = "llada", *, dtype: str = "float32", shards: int = 1,
                        seed: int = 0, tokenizer: bool = True, **config_changes):
    """Writes a tiny HF checkpoint folder; returns (config dict, torch state dict)."""
    folder = os.fspath(folder)
    os.makedirs(folder, exist_ok=True)
    cfg_dict = hf_config(family, **config_changes)
    cfg_dict["torch_dtype"] = "bfloat16" if dtype == "bfloat16" else "float32"
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump(cfg_dict, f, indent=2)
    sd = random_state_dict(cfg_dict, seed=seed, dtype=dtype)
    save_state_dict(folder, sd, shards=shards)
    if tokenizer:
        V = cfg_dict.get("embedding_size", cfg_dict["vocab_size"])
        write_tokenizer(folder, family, V, cfg_dict["mask_token_id"])
    return cfg_dict, sd
