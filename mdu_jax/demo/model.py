"""The demo's starting model: a tiny, randomly initialised LLaDA (or Dream) as an HF folder.

The folder is laid out exactly like a released checkpoint (``config.json`` in the family's own
keys, ``model.safetensors`` with the real tensor names and [out, in] shapes, the tokenizer
files), so everything downstream loads it through the same ``load_pretrained`` path as the
8B models.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile

import jax
import numpy as np
from transformers import AutoTokenizer

from mdu_jax.checkpoints.safetensors_io import save_file
from mdu_jax.data.tokenizer import TOKENIZER_FILES
from mdu_jax.models import hf_tensors
from mdu_jax.models.config import ModelConfig
from mdu_jax.models.params import get_path, init_params

ROPE_THETA = {"llada": 500000.0, "dream": 1000000.0}
RMS_EPS = {"llada": 1e-5, "dream": 1e-6}


def round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


def demo_model_config(tokenizer_dir: str | os.PathLike, *, family: str = "llada", hidden_size: int = 64,
                      num_layers: int = 4, num_heads: int = 4, num_kv_heads: int | None = None,
                      intermediate_size: int | None = None, max_position_embeddings: int = 128,
                      vocab_multiple: int = 8) -> ModelConfig:
    """A ModelConfig whose vocabulary and special ids come from the tokenizer in `tokenizer_dir`.

    V = len(tokenizer) rounded up to `vocab_multiple` (the extra rows are never produced by the
    tokenizer); F defaults to 3 * D; Dream defaults to half as many kv heads as query heads
    (GQA, as the real model) and takes eos as bos.
    """
    tok = AutoTokenizer.from_pretrained(os.fspath(tokenizer_dir))
    if tok.mask_token_id is None or tok.eos_token_id is None:
        raise ValueError(f"{tokenizer_dir}: the tokenizer needs a mask token and an eos token "
                         f"(mask={tok.mask_token!r}, eos={tok.eos_token!r})")
    if hidden_size % num_heads:
        raise ValueError(f"num_heads: {num_heads} does not divide hidden_size={hidden_size}")
    if num_kv_heads is None:
        num_kv_heads = num_heads if family == "llada" or num_heads % 2 else num_heads // 2
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    bos = tok.bos_token_id if tok.bos_token_id is not None else (tok.eos_token_id if family == "dream" else None)
    return ModelConfig(
        family=family, vocab_size=round_up(len(tok), vocab_multiple), hidden_size=hidden_size,
        num_layers=num_layers, num_heads=num_heads, num_kv_heads=num_kv_heads,
        head_dim=hidden_size // num_heads, intermediate_size=intermediate_size or 3 * hidden_size,
        rope_theta=ROPE_THETA[family], rms_norm_eps=RMS_EPS[family], tie_word_embeddings=False,
        qkv_bias=family == "dream", mask_token_id=tok.mask_token_id, eos_token_id=tok.eos_token_id,
        pad_token_id=pad, bos_token_id=bos, max_position_embeddings=max_position_embeddings)


def params_to_hf(cfg: ModelConfig, params) -> dict[str, np.ndarray]:
    """{HF tensor name: float32 array in [out, in] layout} for every tensor of `cfg`'s checkpoint."""
    out = {}
    for t in hf_tensors(cfg):
        full = np.asarray(get_path(params, t.path), np.float32)
        out[t.name] = t.to_hf(full[t.layer] if t.layer is not None else full)
    return out


def save_hf_folder(folder: str | os.PathLike, cfg: ModelConfig, params, tokenizer_dir: str | os.PathLike | None,
                   *, overwrite: bool = True) -> str:
    """Writes config.json, model.safetensors and the tokenizer files of `tokenizer_dir` to `folder`.

    The folder is assembled under a temporary name beside it and renamed into place, so a
    crash never leaves a half-written checkpoint; an existing `folder` is replaced when
    `overwrite`, else FileExistsError.
    """
    folder = os.path.abspath(os.fspath(folder))
    if os.path.exists(folder) and not overwrite:
        raise FileExistsError(f"{folder}: already exists (pass overwrite=True to replace it)")
    parent = os.path.dirname(folder)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(dir=parent, prefix=f".tmp-{os.path.basename(folder)}-")
    try:
        hf_config = dict(cfg.to_hf(), torch_dtype="float32")
        if cfg.bos_token_id is not None:
            # LLaDA's released config has no bos_token_id (its to_hf omits it), but the reader
            # takes one, so the folder round-trips the whole ModelConfig.
            hf_config.setdefault("bos_token_id", cfg.bos_token_id)
        with open(os.path.join(tmp, "config.json"), "w") as f:
            json.dump(hf_config, f, indent=2)
        save_file(os.path.join(tmp, "model.safetensors"), params_to_hf(cfg, params), metadata={"format": "pt"})
        if tokenizer_dir is not None:
            tokenizer_dir = os.fspath(tokenizer_dir)
            copied = [n for n in TOKENIZER_FILES if os.path.isfile(os.path.join(tokenizer_dir, n))]
            if "tokenizer.json" not in copied:
                raise FileNotFoundError(f"{tokenizer_dir}: no tokenizer.json to copy into the model folder")
            for name in copied:
                shutil.copyfile(os.path.join(tokenizer_dir, name), os.path.join(tmp, name))
        if os.path.exists(folder):
            old = tempfile.mkdtemp(dir=parent, prefix=f".old-{os.path.basename(folder)}-")
            os.replace(folder, os.path.join(old, "x"))
            os.replace(tmp, folder)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return folder


def write_demo_model(folder: str | os.PathLike, tokenizer_dir: str | os.PathLike, *, hidden_size: int = 64,
                     num_layers: int = 4, num_heads: int = 4, num_kv_heads: int | None = None,
                     intermediate_size: int | None = None, max_position_embeddings: int = 128,
                     seed: int = 0, family: str = "llada") -> ModelConfig:
    """Writes a randomly initialised demo model (``init_params(cfg, jax.random.key(seed))``,
    float32) with the tokenizer of `tokenizer_dir` to `folder` as an HF checkpoint; returns its config.

    ``mdu_jax.load_pretrained(folder)`` gives back the same config and parameters.
    """
    cfg = demo_model_config(tokenizer_dir, family=family, hidden_size=hidden_size, num_layers=num_layers,
                            num_heads=num_heads, num_kv_heads=num_kv_heads, intermediate_size=intermediate_size,
                            max_position_embeddings=max_position_embeddings)
    params = init_params(cfg, jax.random.key(seed))
    save_hf_folder(folder, cfg, params, tokenizer_dir)
    return cfg
