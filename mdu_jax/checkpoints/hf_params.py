"""HF tensors <-> mdu_jax param slices, and reading an HF folder (config.json + safetensors) into params.

The conversion is table-driven (``hf_tensors(cfg)``): each HF tensor is read on its own,
transposed/reshaped into its slot of a stacked parameter, and the next one is read. Host memory
peaks at about one model copy in the target dtype.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Iterator

import jax
import numpy as np
from tqdm.auto import tqdm

from mdu_jax.checkpoints.errors import CheckpointError
from mdu_jax.checkpoints.safetensors_io import DTYPES, CheckpointReader
from mdu_jax.models import hf_tensors
from mdu_jax.models.config import ModelConfig
from mdu_jax.models.hf_table import HFTensor
from mdu_jax.models.params import flatten_paths, param_specs, set_path


TRANSPOSE_BLOCK = 256


def transpose_copy(array: np.ndarray, dtype=None) -> np.ndarray:
    """A new C-contiguous ``array.T`` of a 2-D array, cast to `dtype` (default: unchanged).

    Copies square blocks that fit in cache: numpy's element-by-element strided copy of a large
    bf16 matrix is about 4x slower, and converting checkpoints is mostly this transpose.
    """
    out = np.empty(array.shape[::-1], dtype or array.dtype)
    b = TRANSPOSE_BLOCK
    for i in range(0, array.shape[0], b):
        for j in range(0, array.shape[1], b):
            out[j:j + b, i:i + b] = array[i:i + b, j:j + b].T
    return out


def hf_to_jax(t: HFTensor, array: np.ndarray, target_shape: tuple[int, ...], dtype) -> np.ndarray:
    """HF tensor `t` as its mdu_jax slice of `target_shape` (transposed blockwise for Linear weights,
    reshaped into heads) in `dtype`; a view of `array` when nothing changes."""
    if tuple(array.shape) != t.shape:
        raise ValueError(f"tensor {t.name!r}: expected shape {list(t.shape)}, got {list(array.shape)}")
    if t.transpose:
        return transpose_copy(array, dtype).reshape(target_shape)
    return array.reshape(target_shape).astype(dtype, copy=False)


def jax_to_hf(t: HFTensor, array: np.ndarray, dtype) -> np.ndarray:
    """``t.to_hf`` cast to `dtype`, transposing blockwise: the C-contiguous HF tensor."""
    if t.transpose:
        return transpose_copy(np.asarray(array).reshape(t.shape[1], t.shape[0]), dtype)
    return np.ascontiguousarray(np.asarray(array).reshape(t.shape).astype(dtype, copy=False))


def check_tensors(cfg: ModelConfig, reader: CheckpointReader) -> list[HFTensor]:
    """Validates the checkpoint's tensor names and shapes against `cfg`; returns the table.

    Raises CheckpointError naming the folder/file, the tensor, and expected vs actual values.
    """
    table = hf_tensors(cfg)
    expected = {t.name: t for t in table}
    present = set(reader.names())
    missing = [t.name for t in table if t.name not in present]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise CheckpointError(f"{reader.folder}: missing tensor {missing[0]!r}{more} required by the "
                              f"{cfg.family} config")
    unexpected = sorted(present - set(expected))
    if unexpected:
        more = f" (and {len(unexpected) - 1} more)" if len(unexpected) > 1 else ""
        raise CheckpointError(f"{reader.file_of(unexpected[0])}: unexpected tensor {unexpected[0]!r}{more}: "
                              f"not part of a {cfg.family} model with this config")
    for t in table:
        actual = reader.shape(t.name)
        if actual != t.shape:
            raise CheckpointError(f"{reader.file_of(t.name)}: tensor {t.name!r} has shape {list(actual)}, "
                                  f"expected {list(t.shape)} from config.json")
    return table


def read_hf_params(cfg: ModelConfig, folder: str | os.PathLike, *, dtype=None,
                   place: Callable[[tuple[str, ...], np.ndarray], Any] | None = None,
                   progress: bool = False) -> dict[str, Any]:
    """Params pytree from a HF folder, in `dtype` (default ``cfg.param_dtype``).

    `place(path, host_array)` puts each finished parameter on devices (default
    ``jax.device_put``); pass one that uses a ``NamedSharding`` to load straight onto a mesh.
    """
    dtype = np.dtype(dtype or DTYPES["BF16" if cfg.param_dtype == "bfloat16" else
                                      ("F16" if cfg.param_dtype == "float16" else "F32")])
    reader = CheckpointReader(folder)
    table = check_tensors(cfg, reader)
    specs = flatten_paths(param_specs(cfg))
    place = place or (lambda path, array: jax.device_put(array))
    by_path: dict[tuple[str, ...], list[HFTensor]] = {}
    for t in table:
        by_path.setdefault(t.path, []).append(t)
    params: dict[str, Any] = {}
    bar = tqdm(total=len(table), desc="loading tensors", unit="tensor") if progress else None
    # Fill one parameter at a time so that only it (and one HF tensor view) sits on the host.
    for path, entries in by_path.items():
        spec = specs[path]
        host = np.empty(spec.shape, dtype)
        for t in entries:
            shape = spec.shape[1:] if t.layer is not None else spec.shape
            value = hf_to_jax(t, reader.get(t.name), shape, dtype)
            if t.layer is None:
                host[...] = value
            else:
                host[t.layer] = value
            del value
            if bar:
                bar.update(1)
        set_path(params, path, place(path, host))
        del host
    if bar:
        bar.close()
    return params
