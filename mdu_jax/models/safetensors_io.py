"""Memory-mapped reading and streaming writing of safetensors files, without torch.

A safetensors file is an 8-byte little-endian header length, a JSON header mapping each tensor
name to {dtype, shape, data_offsets}, then the raw bytes. Reading maps the file and returns
zero-copy numpy views (bf16 through ``ml_dtypes``), so a checkpoint is read one tensor at a
time without loading whole shards.
"""

from __future__ import annotations

import json
import os
import struct
from typing import Any, Iterable, Iterator

import ml_dtypes
import numpy as np

DTYPES: dict[str, np.dtype] = {
    "BF16": np.dtype(ml_dtypes.bfloat16),
    "F16": np.dtype(np.float16),
    "F32": np.dtype(np.float32),
    "F64": np.dtype(np.float64),
    "I8": np.dtype(np.int8),
    "U8": np.dtype(np.uint8),
    "I16": np.dtype(np.int16),
    "I32": np.dtype(np.int32),
    "I64": np.dtype(np.int64),
    "BOOL": np.dtype(np.bool_),
    "F8_E4M3": np.dtype(ml_dtypes.float8_e4m3fn),
    "F8_E5M2": np.dtype(ml_dtypes.float8_e5m2),
}
DTYPE_NAMES = {v: k for k, v in DTYPES.items()}
SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"


class CheckpointError(ValueError):
    """A checkpoint file is missing, malformed, or does not match the model it should hold."""


def dtype_name(dtype) -> str:
    """The safetensors dtype string ('BF16', 'F32', ...) of a numpy/jax dtype."""
    dt = np.dtype(dtype)
    if dt not in DTYPE_NAMES:
        raise CheckpointError(f"dtype {dt} has no safetensors name")
    return DTYPE_NAMES[dt]


class SafetensorsFile:
    """One .safetensors file, memory-mapped: ``names()``, ``shape(n)``, ``dtype(n)``, ``get(n)``."""

    def __init__(self, path: str | os.PathLike):
        self.path = os.fspath(path)
        if not os.path.isfile(self.path):
            raise CheckpointError(f"{self.path}: no such safetensors file")
        size = os.path.getsize(self.path)
        with open(self.path, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                raise CheckpointError(f"{self.path}: too short to be a safetensors file")
            (n,) = struct.unpack("<Q", head)
            if n > size - 8:
                raise CheckpointError(f"{self.path}: header length {n} exceeds the file size {size}")
            try:
                header = json.loads(f.read(n))
            except (json.JSONDecodeError, UnicodeDecodeError) as e:
                raise CheckpointError(f"{self.path}: unreadable safetensors header ({e})") from e
        self.metadata: dict[str, str] = header.pop("__metadata__", None) or {}
        self._header: dict[str, dict[str, Any]] = header
        self._data_start = 8 + n
        for name, info in header.items():
            begin, end = info["data_offsets"]
            if info["dtype"] not in DTYPES:
                raise CheckpointError(f"{self.path}: tensor {name!r} has unsupported dtype {info['dtype']}")
            expected = int(np.prod(info["shape"], dtype=np.int64)) * DTYPES[info["dtype"]].itemsize
            if end - begin != expected or self._data_start + end > size:
                raise CheckpointError(f"{self.path}: tensor {name!r} has inconsistent byte range "
                                      f"[{begin}, {end}) for shape {info['shape']} {info['dtype']}")
        self._mmap = None

    def names(self) -> list[str]:
        return list(self._header)

    def shape(self, name: str) -> tuple[int, ...]:
        return tuple(self._header[name]["shape"])

    def dtype(self, name: str) -> str:
        return self._header[name]["dtype"]

    def nbytes(self, name: str) -> int:
        begin, end = self._header[name]["data_offsets"]
        return end - begin

    def get(self, name: str) -> np.ndarray:
        """A read-only, zero-copy view of tensor `name` (pages are read on first touch)."""
        if name not in self._header:
            raise CheckpointError(f"{self.path}: no tensor {name!r}")
        if self._mmap is None:
            self._mmap = np.memmap(self.path, dtype=np.uint8, mode="r")
        info = self._header[name]
        begin, end = info["data_offsets"]
        raw = self._mmap[self._data_start + begin:self._data_start + end]
        return raw.view(DTYPES[info["dtype"]]).reshape(info["shape"])

    def release(self) -> None:
        """Drops this object's file mapping; pages are unmapped once no view from ``get`` is alive.

        Streaming converters call it after each tensor so that the pages they touched stop
        counting towards the process's resident memory.
        """
        self._mmap = None


class CheckpointReader:
    """A HF checkpoint folder: ``model.safetensors`` or ``model.safetensors.index.json`` + shards.

    Maps each tensor name to its shard; validates that the index names existing shards that
    hold exactly the tensors it claims.
    """

    def __init__(self, folder: str | os.PathLike):
        self.folder = os.fspath(folder)
        index_path = os.path.join(self.folder, INDEX_FILE)
        single_path = os.path.join(self.folder, SINGLE_FILE)
        self.files: dict[str, SafetensorsFile] = {}
        self.where: dict[str, str] = {}
        if os.path.isfile(index_path):
            try:
                with open(index_path) as f:
                    index = json.load(f)
                weight_map = index["weight_map"]
            except (json.JSONDecodeError, KeyError, TypeError) as e:
                raise CheckpointError(f"{index_path}: not a valid safetensors index ({e!r})") from e
            for shard in sorted(set(weight_map.values())):
                shard_path = os.path.join(self.folder, shard)
                if not os.path.isfile(shard_path):
                    names = sorted(n for n, s in weight_map.items() if s == shard)
                    raise CheckpointError(f"{index_path}: names shard {shard!r}, which does not exist "
                                          f"(it should hold {len(names)} tensor(s), e.g. {names[0]!r})")
                self.files[shard] = SafetensorsFile(shard_path)
            for name, shard in weight_map.items():
                if name not in self.files[shard]._header:
                    raise CheckpointError(f"{index_path}: tensor {name!r} is mapped to {shard!r}, "
                                          "which does not contain it")
                self.where[name] = shard
            for shard, sf in self.files.items():
                for name in sf.names():
                    if name not in self.where:
                        raise CheckpointError(f"{sf.path}: tensor {name!r} is not listed in {INDEX_FILE}")
        elif os.path.isfile(single_path):
            self.files[SINGLE_FILE] = SafetensorsFile(single_path)
            self.where = {n: SINGLE_FILE for n in self.files[SINGLE_FILE].names()}
        else:
            raise CheckpointError(f"{self.folder}: no {SINGLE_FILE} or {INDEX_FILE} found")

    def names(self) -> list[str]:
        return list(self.where)

    def file_of(self, name: str) -> str:
        return self.files[self.where[name]].path

    def shape(self, name: str) -> tuple[int, ...]:
        return self.files[self.where[name]].shape(name)

    def dtype(self, name: str) -> str:
        return self.files[self.where[name]].dtype(name)

    def get(self, name: str) -> np.ndarray:
        return self.files[self.where[name]].get(name)

    def nbytes(self, name: str) -> int:
        return self.files[self.where[name]].nbytes(name)

    def release(self) -> None:
        """Drops every shard's file mapping (see ``SafetensorsFile.release``)."""
        for f in self.files.values():
            f.release()

    def total_bytes(self) -> int:
        return sum(f.nbytes(n) for f in self.files.values() for n in f.names())


class SafetensorsWriter:
    """Writes one safetensors file tensor by tensor; the header is fixed up front.

    ``entries`` lists (name, shape, dtype_name) in file order; call ``write(name, array)`` for
    each in that order, then ``close()``. Only one tensor is held in memory at a time.
    """

    def __init__(self, path: str | os.PathLike, entries: Iterable[tuple[str, tuple[int, ...], str]],
                 metadata: dict[str, str] | None = None):
        self.path = os.fspath(path)
        header: dict[str, Any] = {}
        if metadata:
            header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
        offset = 0
        self._order: list[str] = []
        self._expected: dict[str, tuple[tuple[int, ...], str]] = {}
        for name, shape, dt in entries:
            nbytes = int(np.prod(shape, dtype=np.int64)) * DTYPES[dt].itemsize
            header[name] = {"dtype": dt, "shape": list(shape), "data_offsets": [offset, offset + nbytes]}
            offset += nbytes
            self._order.append(name)
            self._expected[name] = (tuple(shape), dt)
        blob = json.dumps(header, separators=(",", ":")).encode()
        blob += b" " * (-len(blob) % 8)  # align the data section to 8 bytes
        self._f = open(self.path, "wb")
        self._f.write(struct.pack("<Q", len(blob)))
        self._f.write(blob)
        self._next = 0

    def write(self, name: str, array: np.ndarray) -> None:
        if self._next >= len(self._order) or self._order[self._next] != name:
            expected = self._order[self._next] if self._next < len(self._order) else None
            raise CheckpointError(f"{self.path}: expected tensor {expected!r} next, got {name!r}")
        shape, dt = self._expected[name]
        array = np.asarray(array)
        if tuple(array.shape) != shape or dtype_name(array.dtype) != dt:
            raise CheckpointError(f"{self.path}: tensor {name!r} expected {list(shape)} {dt}, "
                                  f"got {list(array.shape)} {dtype_name(array.dtype)}")
        # Write the array's own buffer: tobytes() would briefly hold a second copy of the tensor.
        self._f.write(np.ascontiguousarray(array).reshape(-1).view(np.uint8))
        self._next += 1

    def close(self) -> None:
        if self._next != len(self._order):
            self._f.close()
            raise CheckpointError(f"{self.path}: closed after {self._next} of {len(self._order)} tensors")
        self._f.close()

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.close()
        else:
            self._f.close()


def save_file(path: str | os.PathLike, tensors: dict[str, np.ndarray], metadata: dict[str, str] | None = None) -> None:
    """Writes a dict of numpy arrays (bf16 via ml_dtypes allowed) as one safetensors file."""
    entries = [(n, tuple(a.shape), dtype_name(a.dtype)) for n, a in tensors.items()]
    with SafetensorsWriter(path, entries, metadata) as w:
        for n, a in tensors.items():
            w.write(n, a)


def iter_tensors(reader: CheckpointReader) -> Iterator[tuple[str, np.ndarray]]:
    for name in reader.names():
        yield name, reader.get(name)
