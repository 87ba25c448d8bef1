"""Converted mdu_jax checkpoints: an orbax params tree beside the HF config and tokenizer files.

Layout of a converted folder (format version 2)::

    mdu_jax.json     {"format": "mdu_jax", "version": 2, "family", "param_dtype",
                      "hf_dtypes": {HF tensor name: safetensors dtype of the source}}
    config.json      the model's HF config, unchanged
    generation_config.json, tokenizer files, remote-code *.py, ...   copied from the source
    params/          an orbax PyTree checkpoint of the params (stacked layers): one uncompressed
                     zarr3 array per parameter (``layers.q.kernel/`` ...), no OCDBT

``params/`` is written slice by slice with tensorstore (``ParamsWriter``): a converter holds one
HF tensor at a time, never the model. It is read back by orbax (``StandardCheckpointer``)
straight into the target shardings, so each device reads only its own shard; chunks are at
most one layer and 64 MiB, which bounds what a shard read decodes. ``ParamsReader`` reads
single layers for export. Version 1 folders (``params/`` written by ``save_params``, OCDBT)
still load.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import time
from typing import Any, Callable, Iterable, Mapping

import jax
import numpy as np
import orbax.checkpoint as ocp
import tensorstore as ts

from mdu_jax.checkpoints.errors import CheckpointError
from mdu_jax.data.tokenizer import has_tokenizer, load_tokenizer
from mdu_jax.models.config import ModelConfig
from mdu_jax.models.params import abstract_params, flatten_paths, get_path, param_specs

MARKER = "mdu_jax.json"
PARAMS_DIR = "params"
FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)
CHUNK_BYTES = 64 * 2**20
ORBAX_METADATA = "_METADATA"
ORBAX_STEP_METADATA = "_CHECKPOINT_METADATA"
# The handler orbax records for a PyTree checkpoint, named as orbax names it (module + class),
# from the public class rather than a hard-coded path inside orbax's private modules.
ORBAX_HANDLER = f"{ocp.PyTreeCheckpointHandler.__module__}.{ocp.PyTreeCheckpointHandler.__qualname__}"

Path = tuple[str, ...]


def is_converted_checkpoint(path: str | os.PathLike) -> bool:
    """True when `path` is a folder holding an ``mdu_jax.json`` marker."""
    return os.path.isfile(os.path.join(path, MARKER))


def read_marker(path: str | os.PathLike) -> dict[str, Any]:
    """The parsed ``mdu_jax.json`` of a converted folder; CheckpointError if absent or foreign."""
    marker = os.path.join(path, MARKER)
    try:
        with open(marker) as f:
            info = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{marker}: unreadable ({e})") from e
    if not isinstance(info, dict) or info.get("format") != "mdu_jax" or info.get("version") not in READABLE_VERSIONS:
        raise CheckpointError(f"{marker}: not an mdu_jax checkpoint of a version in {READABLE_VERSIONS} ({info})")
    if "param_dtype" not in info:
        raise CheckpointError(f"{marker}: missing field 'param_dtype'")
    return info


def write_marker(path: str | os.PathLike, cfg: ModelConfig, param_dtype: str,
                 hf_dtypes: Mapping[str, str] | None = None) -> None:
    """Writes ``mdu_jax.json``; `hf_dtypes` records each source tensor's dtype for export."""
    info: dict[str, Any] = {"format": "mdu_jax", "version": FORMAT_VERSION, "family": cfg.family,
                            "param_dtype": param_dtype}
    if hf_dtypes is not None:
        info["hf_dtypes"] = dict(hf_dtypes)
    with open(os.path.join(path, MARKER), "w") as f:
        json.dump(info, f, indent=2)


def param_folder(path: Path) -> str:
    """The folder name orbax gives a parameter: its keys joined by dots."""
    return ".".join(path)


def stacked_paths(cfg: ModelConfig) -> set[Path]:
    """Params whose leading axis is the layer stack (written and read one layer at a time)."""
    return {p for p, s in flatten_paths(param_specs(cfg)).items() if s.axes and s.axes[0] == "layers"}


def chunk_shape(shape: tuple[int, ...], itemsize: int, stacked: bool) -> tuple[int, ...]:
    """zarr chunk of an array: one layer of a stacked param, halved along its longest axis to <= 64 MiB."""
    chunk = list(shape)
    if stacked and chunk:
        chunk[0] = 1
    while chunk and math.prod(chunk) * itemsize > CHUNK_BYTES:
        axis = max(range(len(chunk)), key=lambda a: chunk[a])
        if chunk[axis] == 1:
            break
        chunk[axis] = -(-chunk[axis] // 2)
    return tuple(chunk)


def chunk_blocks(shape: tuple[int, ...], chunks: tuple[int, ...]):
    """Index tuples (of slices) that visit an array of `shape` one chunk at a time."""
    starts = [range(0, n, c) for n, c in zip(shape, chunks)]
    for corner in itertools.product(*starts):
        yield tuple(slice(b, min(b + c, n)) for b, c, n in zip(corner, chunks, shape))


def _zarr3_spec(folder: str, shape=None, dtype=None, chunks=None) -> dict[str, Any]:
    # Chunks equal to the fill value must still be written: orbax's reader treats a missing chunk
    # as an error, and zero-initialised tensors (Dream's fresh biases) are all fill value.
    spec: dict[str, Any] = {"driver": "zarr3", "kvstore": {"driver": "file", "path": folder},
                            "store_data_equal_to_fill_value": True}
    if shape is not None:
        spec["metadata"] = {
            "shape": list(shape), "data_type": np.dtype(dtype).name,
            "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": list(chunks)}},
            "chunk_key_encoding": {"name": "default"},
            "codecs": [{"name": "bytes", "configuration": {"endian": "little"}}],
            "fill_value": 0,
        }
        spec["create"] = True
    return spec


class ParamsWriter:
    """Writes a params tree as an orbax-restorable folder, one array or one layer slice at a time.

    `layout` maps each param path to (shape, dtype); paths in `stacked` are written per layer
    with ``write(path, value, layer=i)``, the others whole with ``write(path, value)``.
    ``close()`` checks that every element was written, then writes orbax's tree metadata;
    a folder without it is not a checkpoint.
    """

    def __init__(self, directory: str | os.PathLike, layout: Mapping[Path, tuple[tuple[int, ...], Any]],
                 stacked: Iterable[Path] = ()):
        self.directory = os.path.abspath(os.fspath(directory))
        os.makedirs(self.directory, exist_ok=False)
        self._stacked = set(stacked)
        self._layout = {p: (tuple(shape), np.dtype(dt)) for p, (shape, dt) in layout.items()}
        self._arrays = {}
        self._chunks: dict[Path, tuple[int, ...]] = {}
        self._done: dict[Path, set[int] | bool] = {}
        context = ts.Context()
        for path, (shape, dt) in self._layout.items():
            chunks = self._chunks[path] = chunk_shape(shape, dt.itemsize, path in self._stacked)
            folder = os.path.join(self.directory, param_folder(path))
            self._arrays[path] = ts.open(_zarr3_spec(folder, shape, dt, chunks), context=context).result()
            self._done[path] = set() if path in self._stacked else False

    def write(self, path: Path, value: np.ndarray, layer: int | None = None) -> None:
        """Stores `value` as param `path` (or its slice `layer`); shape and dtype must match exactly."""
        if path not in self._layout:
            raise CheckpointError(f"{self.directory}: no parameter {'/'.join(path)!r} in this checkpoint")
        shape, dt = self._layout[path]
        expected = shape[1:] if layer is not None else shape
        value = np.asarray(value)
        if tuple(value.shape) != expected or value.dtype != dt:
            where = f"layer {layer} of " if layer is not None else ""
            raise CheckpointError(f"{self.directory}: {where}parameter {'/'.join(path)!r} expects {list(expected)} "
                                  f"{dt.name}, got {list(value.shape)} {value.dtype.name}")
        if layer is None:
            if path in self._stacked:
                raise CheckpointError(f"{self.directory}: parameter {'/'.join(path)!r} is written per layer")
            target, chunks = self._arrays[path], self._chunks[path]
        else:
            if path not in self._stacked or not 0 <= layer < shape[0]:
                raise CheckpointError(f"{self.directory}: parameter {'/'.join(path)!r} has no layer {layer}")
            target, chunks = self._arrays[path][layer], self._chunks[path][1:]
        # Chunk by chunk: tensorstore copies what it is given, so this bounds its copy to one chunk.
        for block in chunk_blocks(value.shape, chunks):
            target[block].write(value[block]).result()
        if layer is None:
            self._done[path] = True
        else:
            self._done[path].add(layer)

    def close(self) -> None:
        """Checks completeness and writes orbax's ``_METADATA`` and ``_CHECKPOINT_METADATA``."""
        for path, done in self._done.items():
            shape = self._layout[path][0]
            if path in self._stacked:
                missing = sorted(set(range(shape[0])) - done)
                if missing:
                    raise CheckpointError(f"{self.directory}: parameter {'/'.join(path)!r} is missing "
                                          f"layer(s) {missing}")
            elif not done:
                raise CheckpointError(f"{self.directory}: parameter {'/'.join(path)!r} was never written")
        tree = {str(path): {"key_metadata": [{"key": k, "key_type": 2} for k in path],  # 2: a dict key
                            "value_metadata": {"value_type": "jax.Array", "skip_deserialize": False}}
                for path in self._layout}
        meta = {"tree_metadata": tree, "use_ocdbt": False, "use_zarr3": True,
                "store_array_data_equal_to_fill_value": True, "custom_metadata": None}
        with open(os.path.join(self.directory, ORBAX_METADATA), "w") as f:
            json.dump(meta, f)
        now = time.time_ns()
        with open(os.path.join(self.directory, ORBAX_STEP_METADATA), "w") as f:
            json.dump({"item_handlers": ORBAX_HANDLER, "metrics": {}, "performance_metrics": {},
                       "init_timestamp_nsecs": now, "commit_timestamp_nsecs": now, "custom_metadata": {}}, f)


class ParamsReader:
    """Reads an orbax params checkpoint one parameter or one layer at a time, on the host.

    Folders written by ``ParamsWriter`` are read slice by slice with tensorstore; other orbax
    PyTree checkpoints (e.g. OCDBT ones from ``save_params``) one whole parameter at a time.
    """

    def __init__(self, directory: str | os.PathLike):
        self.directory = os.path.abspath(os.fspath(directory))
        meta_path = os.path.join(self.directory, ORBAX_METADATA)
        if not os.path.isdir(self.directory):
            raise CheckpointError(f"{self.directory}: missing the {PARAMS_DIR}/ folder of an mdu_jax checkpoint")
        try:
            with open(meta_path) as f:
                meta = json.load(f)
            entries = meta["tree_metadata"]
        except (OSError, json.JSONDecodeError, KeyError, TypeError) as e:
            raise CheckpointError(f"{meta_path}: not an orbax PyTree checkpoint ({e!r})") from e
        self.paths: list[Path] = [tuple(k["key"] for k in e["key_metadata"]) for e in entries.values()]
        self.plain = meta.get("use_ocdbt") is False and meta.get("use_zarr3") is True
        self._arrays: dict[Path, Any] = {}
        self._orbax_meta = None
        self._cached: tuple[Path | None, np.ndarray | None] = (None, None)

    def location(self, path: Path) -> str:
        return os.path.join(self.directory, param_folder(path)) if self.plain else self.directory

    def _array(self, path: Path):
        if path not in self._arrays:
            folder = self.location(path)
            try:
                self._arrays[path] = ts.open(_zarr3_spec(folder)).result()
            except ValueError as e:
                raise CheckpointError(f"{folder}: unreadable array of parameter {'/'.join(path)!r} ({e})") from e
        return self._arrays[path]

    def layout(self) -> dict[Path, tuple[tuple[int, ...], np.dtype]]:
        """{path: (shape, dtype)} of every stored parameter, read from metadata only."""
        if self.plain:
            out = {}
            for p in self.paths:
                a = self._array(p)
                out[p] = (tuple(a.shape), np.dtype(a.dtype.numpy_dtype))
            return out
        if self._orbax_meta is None:
            with ocp.PyTreeCheckpointer() as ckptr:
                self._orbax_meta = flatten_paths(dict(ckptr.metadata(self.directory).item_metadata.tree))
        return {p: (tuple(m.shape), np.dtype(m.dtype)) for p, m in self._orbax_meta.items()}

    def read(self, path: Path, layer: int | None = None) -> np.ndarray:
        """Param `path` (or its slice `layer` of the stacked axis) as a host numpy array."""
        if self.plain:
            array = self._array(path)
            return np.asarray((array[layer] if layer is not None else array).read().result())
        if self._cached[0] != path:
            self._cached = (None, None)  # free the previous parameter before reading the next
            self._cached = (path, self._restore_whole(path))
        whole = self._cached[1]
        return whole[layer] if layer is not None else whole

    def _restore_whole(self, path: Path) -> np.ndarray:
        shape, dtype = self.layout()[path]
        item, args = {}, {}
        _set(item, path, jax.ShapeDtypeStruct(shape, dtype))
        _set(args, path, ocp.RestoreArgs(restore_type=np.ndarray, dtype=dtype))
        with ocp.PyTreeCheckpointer() as ckptr:
            out = ckptr.restore(self.directory, args=ocp.args.PyTreeRestore(item=item, restore_args=args,
                                                                            partial_restore=True))
        return np.asarray(get_path(out, path))


def _set(tree: dict, path: Path, value) -> None:
    for k in path[:-1]:
        tree = tree.setdefault(k, {})
    tree[path[-1]] = value


def check_params(cfg: ModelConfig, found: Mapping[Path, tuple[tuple[int, ...], Any]], *, where: str,
                 locate: Callable[[Path], str] | None = None, dtype=None) -> None:
    """Checks a stored or in-memory params layout {path: (shape, dtype)} against `cfg`.

    Raises CheckpointError naming `where` (or ``locate(path)``), the parameter, and expected vs
    actual shape; dtypes must equal `dtype` when given, else be floating point.
    """
    locate = locate or (lambda path: where)
    expected = {p: s.shape for p, s in flatten_paths(param_specs(cfg)).items()}
    missing = [p for p in expected if p not in found]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise CheckpointError(f"{where}: missing parameter {'/'.join(missing[0])!r}{more} required by the "
                              f"{cfg.family} config")
    unexpected = [p for p in found if p not in expected]
    if unexpected:
        more = f" (and {len(unexpected) - 1} more)" if len(unexpected) > 1 else ""
        raise CheckpointError(f"{locate(unexpected[0])}: unexpected parameter {'/'.join(unexpected[0])!r}{more}: "
                              f"not part of a {cfg.family} model with this config")
    for path, shape in expected.items():
        actual, dt = found[path]
        if tuple(actual) != tuple(shape):
            raise CheckpointError(f"{locate(path)}: parameter {'/'.join(path)!r} has shape {list(actual)}, "
                                  f"expected {list(shape)} from config.json")
        dt = np.dtype(dt)
        if dtype is not None and dt != np.dtype(dtype):
            raise CheckpointError(f"{locate(path)}: parameter {'/'.join(path)!r} has dtype {dt.name}, "
                                  f"expected {np.dtype(dtype).name}")
        if dtype is None and not np.issubdtype(dt, np.floating) and dt.name != "bfloat16":
            raise CheckpointError(f"{locate(path)}: parameter {'/'.join(path)!r} has dtype {dt.name}, "
                                  "expected a floating-point dtype")


def save_params(directory: str | os.PathLike, params) -> None:
    """Writes a params pytree as an orbax checkpoint at `directory` (which must not exist)."""
    directory = os.path.abspath(os.fspath(directory))
    with ocp.StandardCheckpointer() as ckptr:
        ckptr.save(directory, params)
        ckptr.wait_until_finished()


def restore_params(directory: str | os.PathLike, abstract) -> Any:
    """Restores a params pytree; `abstract` leaves (ShapeDtypeStruct) may carry target shardings.

    A leaf whose dtype differs from the stored one is cast while reading.
    """
    directory = os.path.abspath(os.fspath(directory))
    with ocp.StandardCheckpointer() as ckptr:
        return ckptr.restore(directory, abstract)


def load_converted(path: str | os.PathLike, *, shardings=None, tokenizer: bool = True,
                   trust_remote_code: bool = False, **overrides):
    """(cfg, params, tokenizer) from a converted folder; params restored straight into `shardings`.

    `shardings` is a params-shaped pytree of ``jax.sharding.Sharding`` or a callable
    ``path -> Sharding``; each device then reads only its own shard from disk. Without it every
    param lands on the first device. The stored dtype is kept unless `param_dtype` is
    overridden (then orbax casts while reading). Other `overrides` are ModelConfig fields.
    """
    path = os.fspath(path)
    info = read_marker(path)
    stored = info["param_dtype"]
    wanted = overrides.pop("param_dtype", stored)
    cfg_stored = ModelConfig.from_hf(path, param_dtype=stored, **overrides)
    params_dir = os.path.join(path, PARAMS_DIR)
    reader = ParamsReader(params_dir)
    check_params(cfg_stored, reader.layout(), where=params_dir, locate=reader.location,
                 dtype=cfg_stored.weight_dtype)
    cfg = cfg_stored.replace(param_dtype=wanted)
    default = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    abstract = jax.tree_util.tree_map_with_path(
        lambda kp, a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=(
            default if shardings is None else _sharding_at(shardings, kp))),
        abstract_params(cfg))
    params = restore_params(params_dir, abstract)
    tok = load_tokenizer(path, cfg, trust_remote_code=trust_remote_code) if tokenizer and has_tokenizer(path) else None
    return cfg, params, tok


def _sharding_at(shardings, keypath):
    path = tuple(k.key for k in keypath)
    return shardings(path) if callable(shardings) else get_path(shardings, path)


__all__ = ["is_converted_checkpoint", "load_converted", "save_params", "restore_params", "write_marker",
           "read_marker", "ParamsWriter", "ParamsReader", "check_params", "stacked_paths", "chunk_shape",
           "flatten_paths"]
