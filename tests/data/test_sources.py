"""Benchmark rows from the local copies in ../shared/data (the Hub path is the same code's other branch)."""

import pytest

from mdu_jax.data import DataError, sources


def test_tofu_local_splits(shared_data):
    rows = sources.load_tofu("forget10", data_dir=shared_data / "tofu")
    assert len(rows) == 400 and {"question", "answer"} <= set(rows[0])
    assert len(sources.load_tofu("retain_perturbed", data_dir=shared_data / "tofu")) == 400


def test_missing_tofu_split_lists_what_exists(shared_data):
    with pytest.raises(DataError, match=r"no split 'forget20' \(no forget20.json\); available: .*'forget10'"):
        sources.load_tofu("forget20", data_dir=shared_data / "tofu")


def test_rwku_by_subject(shared_data):
    rows = sources.load_rwku("passage", subject="Stephen King", data_dir=shared_data / "rwku")
    assert rows and all(r["subject"] == "Stephen King" for r in rows)
    probes = sources.load_rwku("forget_level2", subject="Bruce Lee", data_dir=shared_data / "rwku")
    assert {"query", "answer"} <= set(probes[0])


def test_rwku_unknown_subject_and_config_are_named(shared_data):
    with pytest.raises(DataError, match=r"no RWKU target 'Nobody'; available: .*'Stephen King'"):
        sources.load_rwku("passage", subject="Nobody", data_dir=shared_data / "rwku")
    with pytest.raises(DataError, match=r"unknown RWKU config 'forget_level9'"):
        sources.load_rwku("forget_level9", subject="Stephen King", data_dir=shared_data / "rwku")


def test_bad_local_files_are_named(tmp_path):
    (tmp_path / "empty.json").write_text("")
    with pytest.raises(DataError, match=r"empty.json: the file is empty"):
        sources.load_jsonl_or_json(tmp_path / "empty.json")
    (tmp_path / "bad.jsonl").write_text('{"question": "a", "answer": "b"}\n{oops\n')
    with pytest.raises(DataError, match=r"bad.jsonl:2: not valid JSON"):
        sources.load_jsonl_or_json(tmp_path / "bad.jsonl")
    with pytest.raises(DataError, match=r"no such data file"):
        sources.load_jsonl_or_json(tmp_path / "missing.json")
