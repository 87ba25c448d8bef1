"""Tokenizer loading with the conventions the reference code relies on.

LLaDA's released tokenizer defines no mask token: dllm sets ``<|mdm_mask|>`` (id 126336), and
replaces the chat template by one that appends the assistant header only for a generation
prompt. Both are applied here so training and evaluation tokenise identically.
"""

from __future__ import annotations

import json
import os

import transformers

from mdu_jax.models.config import ModelConfig

# dllm's fixed LLaDA template (reference-mdlm 1.5): BOS, then per message
# "<|start_header_id|>{role}<|end_header_id|>\n\n{content|trim}<|eot_id|>", and the assistant
# header only when a generation prompt is asked for.
LLADA_CHAT_TEMPLATE = (
    "{% set loop_messages = messages %}"
    "{% for message in loop_messages %}"
    "{% if loop.index0 == 0 %}{{ bos_token }}{% endif %}"
    "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' + message['content'] | trim + '<|eot_id|>' }}"
    "{% endfor %}"
    "{% if add_generation_prompt and loop_messages[-1]['role'] != 'assistant' %}"
    "{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}"
    "{% endif %}"
)

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.json",
                   "merges.txt", "tokenizer.model", "added_tokens.json", "chat_template.jinja",
                   "chat_template.json")


class TokenizerError(ValueError):
    """A tokenizer folder is missing or disagrees with the model config."""


def has_tokenizer(folder: str | os.PathLike) -> bool:
    return any(os.path.isfile(os.path.join(folder, f)) for f in ("tokenizer.json", "vocab.json", "tokenizer.model"))


def load_tokenizer(folder: str | os.PathLike, cfg: ModelConfig | None = None, *, trust_remote_code: bool = False):
    """A HF tokenizer from `folder`, with the mask token and (LLaDA) the fixed chat template set.

    Tries ``AutoTokenizer``; Dream's folders name a remote-code class, so without
    `trust_remote_code` the byte-level BPE files are loaded through ``PreTrainedTokenizerFast``
    or ``Qwen2TokenizerFast`` with the special tokens from ``tokenizer_config.json``.
    """
    folder = os.fspath(folder)
    if not has_tokenizer(folder):
        raise TokenizerError(f"{folder}: no tokenizer files (tokenizer.json or vocab.json + merges.txt)")
    try:
        # A blank model config: AutoTokenizer would otherwise read config.json, whose model_type
        # (llada, Dream) transformers does not know, and warn on every load that the checkpoint
        # is used "to instantiate a model of type ''". The tokenizer class comes from
        # tokenizer_config.json either way.
        tok = transformers.AutoTokenizer.from_pretrained(folder, trust_remote_code=trust_remote_code,
                                                         config=transformers.PretrainedConfig())
    except Exception as auto_error:  # noqa: BLE001 - fall back to the plain fast tokenizers
        tok = _fallback_tokenizer(folder, auto_error)
    if cfg is not None:
        _apply_conventions(tok, cfg, folder)
    return tok


def _fallback_tokenizer(folder: str, auto_error: Exception):
    special = {}
    config_path = os.path.join(folder, "tokenizer_config.json")
    if os.path.isfile(config_path):
        with open(config_path) as f:
            tc = json.load(f)
        for key in ("bos_token", "eos_token", "pad_token", "unk_token", "mask_token"):
            value = tc.get(key)
            if isinstance(value, dict):
                value = value.get("content")
            if value:
                special[key] = value
        if tc.get("chat_template"):
            special["chat_template"] = tc["chat_template"]
    if os.path.isfile(os.path.join(folder, "tokenizer.json")):
        return transformers.PreTrainedTokenizerFast(tokenizer_file=os.path.join(folder, "tokenizer.json"), **special)
    if os.path.isfile(os.path.join(folder, "vocab.json")) and os.path.isfile(os.path.join(folder, "merges.txt")):
        return transformers.Qwen2TokenizerFast(vocab_file=os.path.join(folder, "vocab.json"),
                                               merges_file=os.path.join(folder, "merges.txt"), **special)
    raise TokenizerError(f"{folder}: could not load the tokenizer ({auto_error})") from auto_error


def _apply_conventions(tok, cfg: ModelConfig, folder: str) -> None:
    if tok.mask_token is None:
        token = tok.convert_ids_to_tokens(cfg.mask_token_id)
        if token is None:
            raise TokenizerError(f"{folder}: the tokenizer has no token for mask_token_id={cfg.mask_token_id}")
        tok.mask_token = token
    if tok.mask_token_id != cfg.mask_token_id:
        raise TokenizerError(f"{folder}: tokenizer mask token {tok.mask_token!r} has id {tok.mask_token_id}, "
                             f"but config.json says mask_token_id={cfg.mask_token_id}")
    if tok.pad_token is None:
        tok.pad_token = tok.convert_ids_to_tokens(cfg.pad_token_id)
    if cfg.family == "llada":
        tok.chat_template = LLADA_CHAT_TEMPLATE
    tok.padding_side = "right"
