"""HF folder (LLaDA / Dream safetensors) -> converted mdu_jax checkpoint, one tensor at a time."""

from __future__ import annotations

import os
import shutil

import numpy as np

from mdu_jax.checkpoints.atomic_write import atomic_output_dir, check_destination
from mdu_jax.checkpoints.errors import CheckpointError, ConversionError
from mdu_jax.checkpoints.folder_files import CONFIG, copy_extra_files
from mdu_jax.checkpoints.hf_params import check_tensors, hf_to_jax
from mdu_jax.checkpoints.orbax_params import PARAMS_DIR, ParamsWriter, stacked_paths, write_marker
from mdu_jax.checkpoints.progress import Progress
from mdu_jax.checkpoints.safetensors_io import CheckpointReader
from mdu_jax.models.config import ModelConfig, canonical_dtype
from mdu_jax.models.params import flatten_paths, param_specs

FLOAT_DTYPES = ("F64", "F32", "BF16", "F16")  # widest first: the default target of a mixed checkpoint
PARAM_DTYPES = {"F32": "float32", "BF16": "bfloat16", "F16": "float16", "F64": "float32"}


def source_dtypes(reader: CheckpointReader, names) -> dict[str, str]:
    """{tensor: safetensors dtype}; CheckpointError naming file and tensor for a non-float tensor."""
    out = {}
    for name in names:
        dt = reader.dtype(name)
        if dt not in FLOAT_DTYPES:
            raise CheckpointError(f"{reader.file_of(name)}: tensor {name!r} has dtype {dt}, expected a "
                                  f"floating-point dtype ({', '.join(FLOAT_DTYPES)}) like every model weight")
        out[name] = dt
    return out


def import_checkpoint(src: str | os.PathLike, dst: str | os.PathLike, *, dtype: str | None = None,
                      overwrite: bool = False, progress: bool = True) -> str:
    """Converts the HF folder `src` into the mdu_jax checkpoint `dst`; returns `dst`'s absolute path.

    `src` holds ``config.json`` (LLaDA ``model_type: llada`` or Dream ``Dream``) and
    ``model.safetensors`` or ``model.safetensors.index.json`` + shards, and usually tokenizer
    files, ``generation_config.json`` and remote-code ``*.py`` (all copied). `dtype`
    ('bf16', 'fp32', 'fp16' or a full name) is the stored param dtype; None keeps the source's
    (the widest one if tensors differ). Each tensor is read on its own, transposed/reshaped
    into its slot of the stacked layout, cast and written before the next one is read, so host
    memory stays near one tensor. Validation (config, index, names, shapes, dtypes) happens
    before anything is written; output appears at `dst` only when complete.
    """
    src = os.fspath(src)
    if not os.path.isdir(src):
        raise ConversionError(f"{src}: no such folder (expected an HF checkpoint folder)")
    dst = check_destination(dst, overwrite=overwrite, sources=(src,))
    cfg = ModelConfig.from_hf(src)
    reader = CheckpointReader(src)
    table = check_tensors(cfg, reader)
    hf_dtypes = source_dtypes(reader, [t.name for t in table])
    if dtype is None:
        widest = next(d for d in FLOAT_DTYPES if d in set(hf_dtypes.values()))
        target = PARAM_DTYPES[widest]
    else:
        target = canonical_dtype(dtype, "dtype")
    cfg = cfg.replace(param_dtype=target)
    np_dtype = np.dtype(cfg.weight_dtype)
    specs = flatten_paths(param_specs(cfg))
    layout = {p: (s.shape, np_dtype) for p, s in specs.items()}
    total = sum(int(np.prod(t.shape)) * np_dtype.itemsize for t in table)

    with atomic_output_dir(dst, overwrite=overwrite, sources=(src,)) as tmp:
        shutil.copyfile(os.path.join(src, CONFIG), os.path.join(tmp, CONFIG))
        copy_extra_files([src], tmp)
        writer = ParamsWriter(os.path.join(tmp, PARAMS_DIR), layout, stacked_paths(cfg))
        with Progress(f"import {os.path.basename(src.rstrip(os.sep)) or src}", total, len(table), progress) as bar:
            for t in table:
                shape = specs[t.path].shape
                value = hf_to_jax(t, reader.get(t.name), shape[1:] if t.layer is not None else shape, np_dtype)
                writer.write(t.path, value, t.layer)
                del value
                bar.update(int(np.prod(t.shape)) * np_dtype.itemsize)
        writer.close()
        write_marker(tmp, cfg, target, hf_dtypes=hf_dtypes)
    return dst


__all__ = ["import_checkpoint", "source_dtypes"]
