"""mdu_jax params (a converted checkpoint, or arrays in memory) -> HF folder of sharded safetensors.

The HF side is the original PyTorch layout: the same tensor names, [out, in] shapes and (by
default) dtypes as the checkpoint that was imported, a ``model.safetensors.index.json`` when
there are several shards, the HF config.json and the tokenizer/remote-code files, so that
``AutoModel.from_pretrained(dst, trust_remote_code=True)`` loads it.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Callable, Mapping

import jax
import numpy as np

from mdu_jax.checkpoints.atomic_write import atomic_output_dir, check_destination
from mdu_jax.checkpoints.errors import ConversionError
from mdu_jax.checkpoints.folder_files import CONFIG, copy_extra_files, parse_size
from mdu_jax.checkpoints.hf_params import check_tensors, jax_to_hf
from mdu_jax.checkpoints.orbax_params import PARAMS_DIR, ParamsReader, check_params, read_marker
from mdu_jax.checkpoints.progress import Progress
from mdu_jax.checkpoints.safetensors_io import (DTYPES, INDEX_FILE, SINGLE_FILE, CheckpointReader,
                                                SafetensorsWriter, dtype_name)
from mdu_jax.models import hf_tensors
from mdu_jax.models.config import DTYPES as CFG_DTYPES
from mdu_jax.models.config import ModelConfig, canonical_dtype
from mdu_jax.models.hf_table import HFTensor
from mdu_jax.models.params import flatten_paths

# ModelConfig fields that are numerics/execution choices, not part of the checkpoint.
RUNTIME_FIELDS = ("param_dtype", "dtype", "remat_policy", "attention_impl", "scan_layers")
TORCH_DTYPES = {"BF16": "bfloat16", "F16": "float16", "F32": "float32", "F64": "float64"}

ReadSlice = Callable[[HFTensor], np.ndarray]


def export_checkpoint(src: str | os.PathLike, dst: str | os.PathLike, *, like: str | os.PathLike | None = None,
                      max_shard_size: int | str = "5GB", dtype: str | None = None, overwrite: bool = False,
                      progress: bool = True) -> str:
    """Writes the converted checkpoint `src` as the HF folder `dst`; returns `dst`'s absolute path.

    Tensors get their original names, shapes and dtypes (recorded at import, or read from
    `like`'s safetensors headers); `dtype` ('bf16', 'fp32', 'fp16') casts all of them instead.
    `like` is the original HF folder: its config.json and every non-weight file (remote-code
    ``*.py``, tokenizer, generation config, README, ...) are copied, after checking that it
    describes the same architecture. Shards hold at most `max_shard_size` bytes ('5GB',
    '500MB', '2GiB' or an int; a larger single tensor gets its own shard). One layer of one
    parameter is read at a time; output appears at `dst` only when complete.
    """
    src = os.fspath(src)
    if not os.path.isdir(src):
        raise ConversionError(f"{src}: no such folder (expected an mdu_jax checkpoint)")
    dst = check_destination(dst, overwrite=overwrite, sources=(src, like))
    if not os.path.isfile(os.path.join(src, "mdu_jax.json")):
        raise ConversionError(f"{src}: not an mdu_jax checkpoint (no mdu_jax.json); "
                              "convert an HF folder with `import` first")
    info = read_marker(src)
    cfg = ModelConfig.from_hf(src, param_dtype=info["param_dtype"])
    reader = ParamsReader(os.path.join(src, PARAMS_DIR))
    layout = reader.layout()
    check_params(cfg, layout, where=reader.directory, locate=reader.location, dtype=cfg.weight_dtype)
    return _write_hf_folder(
        cfg, lambda t: reader.read(t.path, t.layer), {p: dt for p, (_, dt) in layout.items()}, dst,
        like=like, config_from=src, extras_from=src, default_dtypes=info.get("hf_dtypes") or {},
        max_shard_size=max_shard_size, dtype=dtype, overwrite=overwrite, progress=progress, sources=(src, like))


def export_params(cfg: ModelConfig, params: Mapping[str, Any], dst: str | os.PathLike, *,
                  like: str | os.PathLike | None = None, max_shard_size: int | str = "5GB",
                  dtype: str | None = None, overwrite: bool = False, progress: bool = True) -> str:
    """Writes in-memory params (jax or numpy arrays, e.g. a trainer's) as the HF folder `dst`.

    `like` is the folder the model was loaded from (an HF folder or a converted checkpoint):
    its config.json, tokenizer and remote-code files are copied and, for an HF folder, its
    tensor dtypes are kept. Without `like` the config is ``cfg.to_hf()`` and tensors keep the
    params' dtypes; `dtype` casts all tensors. One layer slice at a time is copied to the host.
    """
    flat = flatten_paths(dict(params))
    check_params(cfg, {p: (tuple(a.shape), a.dtype) for p, a in flat.items()}, where="params")

    def read(t: HFTensor) -> np.ndarray:
        array = flat[t.path]
        if t.layer is None:
            return np.asarray(jax.device_get(array))
        if isinstance(array, jax.Array):
            return np.asarray(jax.device_get(_layer_of(array, np.int32(t.layer))))
        return np.asarray(array[t.layer])

    recorded = {}
    if like is not None and os.path.isfile(os.path.join(like, "mdu_jax.json")):
        recorded = read_marker(like).get("hf_dtypes") or {}
    return _write_hf_folder(
        cfg, read, {p: np.dtype(a.dtype) for p, a in flat.items()}, dst, like=like, config_from=None,
        extras_from=None, default_dtypes=recorded, max_shard_size=max_shard_size, dtype=dtype,
        overwrite=overwrite, progress=progress, sources=(like,))


@jax.jit
def _layer_of(stacked: jax.Array, layer: jax.Array) -> jax.Array:
    """stacked[layer] on device, the layer index traced: one program per stacked leaf's shape and
    sharding, shared by every layer and export of the process (a static index compiled a slice
    and a squeeze per shape, or a gather and a broadcast on a sharded leaf)."""
    return stacked[layer]


@dataclasses.dataclass(frozen=True)
class _Shard:
    name: str
    tensors: tuple[HFTensor, ...]


def plan_shards(table: list[HFTensor], dtypes: Mapping[str, str], max_bytes: int) -> list[_Shard]:
    """Groups tensors in table order into files of at most `max_bytes` (HF's file names)."""
    groups: list[list[HFTensor]] = [[]]
    size = 0
    for t in table:
        nbytes = int(np.prod(t.shape)) * DTYPES[dtypes[t.name]].itemsize
        if groups[-1] and size + nbytes > max_bytes:
            groups.append([])
            size = 0
        groups[-1].append(t)
        size += nbytes
    if len(groups) == 1:
        return [_Shard(SINGLE_FILE, tuple(groups[0]))]
    n = len(groups)
    return [_Shard(f"model-{k + 1:05d}-of-{n:05d}.safetensors", tuple(g)) for k, g in enumerate(groups)]


def _same_architecture(cfg: ModelConfig, other: ModelConfig, where: str) -> None:
    for field in dataclasses.fields(cfg):
        if field.name in RUNTIME_FIELDS:
            continue
        a, b = getattr(other, field.name), getattr(cfg, field.name)
        if a != b:
            raise ConversionError(f"{where}: describes a different model: {field.name} is {a!r}, "
                                  f"the exported params have {b!r}")


def _like_dtypes(cfg: ModelConfig, like: str) -> dict[str, str]:
    """Checks `like` against `cfg` (config and, when it has weights, tensor names/shapes); its dtypes."""
    like_cfg_path = os.path.join(like, CONFIG)
    if not os.path.isfile(like_cfg_path):
        raise ConversionError(f"{like}: no {CONFIG}; --like must be the original HF folder")
    _same_architecture(cfg, ModelConfig.from_hf(like), like_cfg_path)
    has_weights = any(os.path.isfile(os.path.join(like, f)) for f in (INDEX_FILE, SINGLE_FILE))
    if not has_weights:
        return {}
    reader = CheckpointReader(like)
    table = check_tensors(cfg, reader)
    return {t.name: reader.dtype(t.name) for t in table}


def _config_text(path: str | None, cfg: ModelConfig, out_dtypes: set[str]) -> str:
    """config.json for the export: the given file verbatim unless the dtype it states must change."""
    if path is not None:
        with open(path) as f:
            text = f.read()
        data = json.loads(text)
    else:
        text, data = None, cfg.to_hf()
    if len(out_dtypes) == 1:
        torch_dtype = TORCH_DTYPES[next(iter(out_dtypes))]
        keys = [k for k in ("torch_dtype", "dtype") if k in data] or ["torch_dtype"]
        if text is None or any(data.get(k) != torch_dtype for k in keys):
            for k in keys:
                data[k] = torch_dtype
            text = None
    return text if text is not None else json.dumps(data, indent=2) + "\n"


def _write_hf_folder(cfg: ModelConfig, read: ReadSlice, param_dtypes: Mapping[tuple[str, ...], Any], dst: str, *,
                     like, config_from, extras_from, default_dtypes: Mapping[str, str], max_shard_size, dtype,
                     overwrite, progress, sources) -> str:
    """The export both entry points share: `read(t)` gives the mdu_jax slice of HF tensor `t`.

    Output dtype per tensor: `dtype` if given, else `like`'s, else `default_dtypes` (recorded
    at import), else the param's own. Config: `like`'s, else `config_from`'s, else
    ``cfg.to_hf()``. Non-weight files come from `extras_from`, then `like` (which wins).
    """
    like = os.fspath(like) if like is not None else None
    dst = check_destination(dst, overwrite=overwrite, sources=sources)
    if like is not None and not os.path.isdir(like):
        raise ConversionError(f"{like}: no such folder (--like must be the original HF folder)")
    max_bytes = parse_size(max_shard_size)
    table = hf_tensors(cfg)
    like_dtypes = _like_dtypes(cfg, like) if like is not None else {}
    if dtype is not None:
        forced = dtype_name(np.dtype(CFG_DTYPES[canonical_dtype(dtype, "dtype")]))
        out_dtypes = {t.name: forced for t in table}
    else:
        out_dtypes = {}
        for t in table:
            dt = like_dtypes.get(t.name) or default_dtypes.get(t.name)
            if dt is None:  # no record of the original: keep the params' own dtype
                dt = dtype_name(param_dtypes[t.path])
            if dt not in TORCH_DTYPES:
                raise ConversionError(f"tensor {t.name!r}: cannot export dtype {dt}")
            out_dtypes[t.name] = dt
    shards = plan_shards(table, out_dtypes, max_bytes)
    config_path = (os.path.join(like, CONFIG) if like is not None else
                   os.path.join(config_from, CONFIG) if config_from is not None else None)
    config_text = _config_text(config_path, cfg, set(out_dtypes.values()))
    total = sum(int(np.prod(t.shape)) * DTYPES[out_dtypes[t.name]].itemsize for t in table)

    with atomic_output_dir(dst, overwrite=overwrite, sources=sources) as tmp:
        copy_extra_files([extras_from, like], tmp)
        with open(os.path.join(tmp, CONFIG), "w") as f:
            f.write(config_text)
        weight_map = {}
        with Progress(f"export {os.path.basename(dst)}", total, len(table), progress) as bar:
            for shard in shards:
                entries = [(t.name, t.shape, out_dtypes[t.name]) for t in shard.tensors]
                with SafetensorsWriter(os.path.join(tmp, shard.name), entries, metadata={"format": "pt"}) as w:
                    for t in shard.tensors:
                        value = jax_to_hf(t, read(t), DTYPES[out_dtypes[t.name]])
                        w.write(t.name, value)
                        weight_map[t.name] = shard.name
                        bar.update(value.nbytes)
                        del value
        if len(shards) > 1:
            index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
            with open(os.path.join(tmp, INDEX_FILE), "w") as f:
                json.dump(index, f, indent=2)
                f.write("\n")
        # Read back what was written (headers only) before it becomes visible at dst.
        check_tensors(cfg, CheckpointReader(tmp))
    return dst


__all__ = ["export_checkpoint", "export_params", "plan_shards"]
