"""Whole-or-nothing file writes: a temporary file in the same folder, renamed over the target."""

from __future__ import annotations

import os
import tempfile


def write_bytes(path: str | os.PathLike, data: bytes) -> str:
    """Writes ``data`` to ``path`` (parent folders created); returns the absolute path.

    The bytes go to a temporary file beside the target, renamed over it only once fully written,
    so a crash or an error never leaves a half-written file at ``path``.
    """
    path = os.path.abspath(os.fspath(path))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def write_text(path: str | os.PathLike, text: str) -> str:
    """``write_bytes`` of ``text`` encoded as UTF-8."""
    return write_bytes(path, text.encode("utf-8"))
