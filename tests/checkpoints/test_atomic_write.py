"""Whole-or-nothing writes: the target holds the old content or the new, never a part."""

import os

import pytest

from mdu_jax.checkpoints import atomic_write


def test_writes_creates_folders_and_replaces(tmp_path):
    path = tmp_path / "a" / "b" / "out.json"
    assert atomic_write.write_text(path, "first") == str(path)
    atomic_write.write_bytes(path, b"second")
    assert path.read_bytes() == b"second"
    assert os.listdir(path.parent) == ["out.json"]  # no temporary file left behind


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "out.txt"
    atomic_write.write_text(path, "old")
    with pytest.raises(TypeError):
        atomic_write.write_bytes(path, object())  # fails inside the write, after the temporary exists
    assert path.read_text() == "old" and os.listdir(tmp_path) == ["out.txt"]
