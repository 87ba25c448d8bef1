"""Whole-or-nothing writes: a temporary file or folder beside the target, renamed over it when complete.

``write_bytes`` / ``write_text`` for single files (result JSONs, tables, generated data);
``atomic_output_dir`` for folders (converted checkpoints, HF exports). A crash or an error never
leaves a half-written target: the temporary is removed and the target stays as it was.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from typing import Iterator

from mdu_jax.checkpoints.errors import ConversionError


def _remove(path: str) -> None:
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
    elif os.path.lexists(path):
        os.remove(path)


def write_bytes(path: str | os.PathLike, data: bytes) -> str:
    """Writes ``data`` to ``path`` (parent folders created); returns the absolute path.

    The bytes go to a temporary file beside the target, renamed over it only once fully written.
    """
    path = os.path.abspath(os.fspath(path))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        _remove(tmp)
        raise
    return path


def write_text(path: str | os.PathLike, text: str) -> str:
    """``write_bytes`` of ``text`` encoded as UTF-8."""
    return write_bytes(path, text.encode("utf-8"))


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def check_destination(dst: str | os.PathLike, *, overwrite: bool, sources: tuple = ()) -> str:
    """The absolute `dst`; ConversionError if it exists without `overwrite` or overlaps a source folder."""
    dst = os.path.abspath(os.fspath(dst))
    if os.path.lexists(dst) and not overwrite:
        raise ConversionError(f"{dst}: already exists; pass --overwrite (overwrite=True) to replace it")
    real = os.path.realpath(dst)
    for src in sources:
        if src is None:
            continue
        src = os.path.realpath(os.fspath(src))
        if os.path.commonpath([real, src]) in (real, src):
            raise ConversionError(f"{dst}: overlaps the source folder {src}; choose another destination")
    return dst


@contextlib.contextmanager
def atomic_output_dir(dst: str | os.PathLike, *, overwrite: bool = False, sources: tuple = ()) -> Iterator[str]:
    """Yields a fresh temporary folder beside `dst`; on a clean exit it becomes `dst`.

    Any exception (KeyboardInterrupt and SystemExit included) removes the temporary folder and
    leaves `dst` as it was. An existing `dst` is refused unless `overwrite`, in which case it
    is replaced only after the new folder is complete.
    """
    dst = check_destination(dst, overwrite=overwrite, sources=sources)
    parent, name = os.path.split(dst)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{name}.tmp-", dir=parent)
    os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp's 0700 would otherwise become dst's mode
    try:
        yield tmp
        if os.path.lexists(dst):
            if not overwrite:
                raise ConversionError(f"{dst}: appeared while converting; pass --overwrite to replace it")
            old = tempfile.mkdtemp(prefix=f".{name}.old-", dir=parent)
            os.rmdir(old)
            os.rename(dst, old)
            try:
                os.rename(tmp, dst)
            except BaseException:
                os.rename(old, dst)
                raise
            _remove(old)
        else:
            os.rename(tmp, dst)
    except BaseException:
        _remove(tmp)
        raise
