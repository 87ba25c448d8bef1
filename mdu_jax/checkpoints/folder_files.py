"""Which files travel with the weights: config, tokenizer, generation config, remote code, docs."""

from __future__ import annotations

import fnmatch
import os
import re
import shutil

from mdu_jax.checkpoints.errors import ConversionError
from mdu_jax.checkpoints.orbax_params import MARKER

# Weights in any format are rewritten by the converter, never copied.
WEIGHT_PATTERNS = ("*.safetensors", "*.safetensors.index.json", "*.bin", "*.bin.index.json", "*.pt", "*.pth",
                   "*.ckpt", "*.h5", "*.msgpack", "*.gguf", "*.onnx", "*.pkl", "*.npz")
CONFIG = "config.json"
SIZE_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
              "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}


def extra_files(folder: str | os.PathLike) -> list[str]:
    """Top-level files of `folder` to carry over: everything but weights, config.json and the marker.

    That is the tokenizer files, ``generation_config.json``, remote-code ``*.py`` (which
    ``trust_remote_code`` loading imports), README/LICENSE and the like. Hidden files and
    sub-folders are left out.
    """
    folder = os.fspath(folder)
    out = []
    for name in sorted(os.listdir(folder)):
        path = os.path.join(folder, name)
        if name.startswith(".") or not os.path.isfile(path) or name in (CONFIG, MARKER):
            continue
        if any(fnmatch.fnmatch(name, p) for p in WEIGHT_PATTERNS):
            continue
        out.append(name)
    return out


def copy_extra_files(folders, dst: str) -> list[str]:
    """Copies ``extra_files`` of each folder into `dst` in order (later folders win); returns the names."""
    copied: dict[str, None] = {}
    for folder in folders:
        if folder is None:
            continue
        for name in extra_files(folder):
            shutil.copyfile(os.path.join(folder, name), os.path.join(dst, name))
            copied[name] = None
    return list(copied)


def parse_size(size: int | str) -> int:
    """Bytes in '5GB' (decimal units, like transformers), '512MiB' (binary), or an int."""
    if isinstance(size, int) and not isinstance(size, bool):
        value = size
    else:
        match = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]*)?)\s*([A-Za-z]*)\s*", str(size))
        unit = match.group(2).upper() if match else None
        if not match or unit not in SIZE_UNITS:
            raise ConversionError(f"max_shard_size: cannot read {size!r}; use e.g. 5GB, 500MB, 2GiB or a byte count")
        value = int(float(match.group(1)) * SIZE_UNITS[unit])
    if value <= 0:
        raise ConversionError(f"max_shard_size: must be positive, got {size!r}")
    return value
