"""Converted mdu_jax checkpoints: an orbax params tree beside the HF config and tokenizer files.

Layout of a converted folder::

    mdu_jax.json          {"format": "mdu_jax", "version": 1, "family", "param_dtype"}
    config.json           the model's HF config (unchanged, so tools that read HF folders work)
    generation_config.json, tokenizer files     copied from the source folder when present
    params/               orbax checkpoint of the params pytree (stacked layers)
"""

from __future__ import annotations

import json
import os
from typing import Any

import jax
import orbax.checkpoint as ocp

from mdu_jax.models.config import ModelConfig
from mdu_jax.models.params import abstract_params, flatten_paths, get_path
from mdu_jax.models.safetensors_io import CheckpointError

MARKER = "mdu_jax.json"
PARAMS_DIR = "params"
FORMAT_VERSION = 1


def is_converted_checkpoint(path: str | os.PathLike) -> bool:
    return os.path.isfile(os.path.join(path, MARKER))


def read_marker(path: str | os.PathLike) -> dict[str, Any]:
    marker = os.path.join(path, MARKER)
    try:
        with open(marker) as f:
            info = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{marker}: unreadable ({e})") from e
    if info.get("format") != "mdu_jax" or info.get("version") != FORMAT_VERSION:
        raise CheckpointError(f"{marker}: not an mdu_jax checkpoint of version {FORMAT_VERSION} ({info})")
    return info


def write_marker(path: str | os.PathLike, cfg: ModelConfig, param_dtype: str) -> None:
    with open(os.path.join(path, MARKER), "w") as f:
        json.dump({"format": "mdu_jax", "version": FORMAT_VERSION, "family": cfg.family,
                   "param_dtype": param_dtype}, f, indent=2)


def save_params(directory: str | os.PathLike, params) -> None:
    """Writes a params pytree as an orbax checkpoint at `directory` (which must not exist)."""
    directory = os.path.abspath(os.fspath(directory))
    with ocp.StandardCheckpointer() as ckptr:
        ckptr.save(directory, params)
        ckptr.wait_until_finished()


def restore_params(directory: str | os.PathLike, abstract) -> Any:
    """Restores a params pytree; `abstract` leaves (ShapeDtypeStruct) may carry target shardings."""
    directory = os.path.abspath(os.fspath(directory))
    with ocp.StandardCheckpointer() as ckptr:
        return ckptr.restore(directory, abstract)


def load_converted(path: str | os.PathLike, *, shardings=None, tokenizer: bool = True,
                   trust_remote_code: bool = False, **overrides):
    """(cfg, params, tokenizer) from a converted folder; params restored straight into `shardings`.

    The stored dtype is kept unless `param_dtype` is overridden (then params are cast after
    restoring).
    """
    from mdu_jax.tokenizer import has_tokenizer, load_tokenizer

    path = os.fspath(path)
    info = read_marker(path)
    stored = info["param_dtype"]
    wanted = overrides.pop("param_dtype", stored)
    cfg_stored = ModelConfig.from_hf(path, param_dtype=stored, **overrides)
    abstract = abstract_params(cfg_stored)
    if shardings is not None:
        abstract = jax.tree_util.tree_map_with_path(
            lambda kp, a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=_sharding_at(shardings, kp)), abstract)
    params_dir = os.path.join(path, PARAMS_DIR)
    if not os.path.isdir(params_dir):
        raise CheckpointError(f"{path}: missing the {PARAMS_DIR}/ folder of an mdu_jax checkpoint")
    params = restore_params(params_dir, abstract)
    cfg = cfg_stored.replace(param_dtype=wanted)
    if cfg.param_dtype != cfg_stored.param_dtype:
        params = jax.tree.map(lambda a: a.astype(cfg.weight_dtype), params)
    tok = load_tokenizer(path, cfg, trust_remote_code=trust_remote_code) if tokenizer and has_tokenizer(path) else None
    return cfg, params, tok


def _sharding_at(shardings, keypath):
    path = tuple(k.key for k in keypath)
    return shardings(path) if callable(shardings) else get_path(shardings, path)


__all__ = ["is_converted_checkpoint", "load_converted", "save_params", "restore_params", "write_marker",
           "read_marker", "flatten_paths"]
