"""``load_pretrained``: one entry point for HF folders and converted mdu_jax checkpoints."""

from __future__ import annotations

import os
from typing import Any

import jax

from mdu_jax.checkpoints.errors import CheckpointError
from mdu_jax.checkpoints.hf_params import read_hf_params
from mdu_jax.checkpoints.orbax_params import is_converted_checkpoint, load_converted
from mdu_jax.data.tokenizer import has_tokenizer, load_tokenizer
from mdu_jax.models.config import ModelConfig
from mdu_jax.models.params import get_path


def sharded_placer(shardings):
    """A `place(path, host_array)` that builds each param directly in its target sharding.

    `shardings` is a pytree of ``jax.sharding.Sharding`` shaped like the params, or a callable
    ``path -> Sharding``. Each device (and each host of a pod) copies only its own shard.
    """
    def place(path, host):
        sharding = shardings(path) if callable(shardings) else get_path(shardings, path)
        return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])
    return place


def load_pretrained(path: str | os.PathLike, *, dtype: str | None = None, param_dtype: str | None = None,
                    shardings: Any = None, tokenizer: bool = True, trust_remote_code: bool = False,
                    progress: bool = False, **config_overrides):
    """Loads (cfg, params, tokenizer) from an HF folder or a converted mdu_jax checkpoint.

    An HF folder holds ``config.json`` and ``model.safetensors`` or
    ``model.safetensors.index.json`` + shards (LLaDA or Dream layout), plus tokenizer files.
    `param_dtype` / `dtype` set the stored and compute dtypes ('float32', 'bfloat16', ...);
    `shardings` (a params-shaped pytree of shardings, or a callable path -> sharding) places
    each parameter on a device mesh as it is read. The tokenizer is None when the folder has
    none or `tokenizer` is False.
    """
    path = os.fspath(path)
    if not os.path.isdir(path):
        raise CheckpointError(f"{path}: no such checkpoint folder")
    overrides = dict(config_overrides)
    if dtype is not None:
        overrides["dtype"] = dtype
    if param_dtype is not None:
        overrides["param_dtype"] = param_dtype
    if is_converted_checkpoint(path):
        return load_converted(path, shardings=shardings, tokenizer=tokenizer,
                                   trust_remote_code=trust_remote_code, **overrides)
    if not os.path.isfile(os.path.join(path, "config.json")):
        raise CheckpointError(f"{path}: neither an HF checkpoint (no config.json) nor an mdu_jax checkpoint")
    cfg = ModelConfig.from_hf(path, **overrides)
    place = sharded_placer(shardings) if shardings is not None else None
    params = read_hf_params(cfg, path, place=place, progress=progress)
    tok = load_tokenizer(path, cfg, trust_remote_code=trust_remote_code) if tokenizer and has_tokenizer(path) else None
    return cfg, params, tok
