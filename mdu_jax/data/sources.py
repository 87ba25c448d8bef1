"""Benchmark rows from the HuggingFace Hub (through ``datasets``) or from a local copy.

TOFU (``locuslab/TOFU``): one Hub config per split (forget10, retain90, retain_perturbed,
forget10_perturbed, real_authors, world_facts, full, ...); locally ``<data_dir>/<split>.json``
(a JSON list, or JSON lines). RWKU (``jinzhuoran/RWKU``): Hub configs (forget_level1, ...,
utility_general, train_original_passage, ...) filtered by ``subject``; locally the per-target
folders written by RWKU's own preprocessing, ``<data_dir>/<rank>_<Name>/<file>.json``, whose
file names map from the Hub config names as below.
"""

from __future__ import annotations

import json
import os
from typing import Any

from mdu_jax.data.encoding import DataError

TOFU_HUB = "locuslab/TOFU"
RWKU_HUB = "jinzhuoran/RWKU"

# Hub config -> local file name (RWKU's process/data_process.py).
RWKU_FILES = {
    "forget_target": "intro", "forget_level1": "forget_level1", "forget_level2": "forget_level2",
    "forget_level3": "forget_level3", "neighbor_level1": "neighbor_level1", "neighbor_level2": "neighbor_level2",
    "mia_forget": "forget_mia", "mia_retain": "retain_mia", "utility_general": "retain_mmlu",
    "utility_reason": "retain_bbh", "utility_truthfulness": "truthful", "utility_factuality": "triviaqa",
    "utility_fluency": "fluency", "train_original_passage": "passage",
}
RWKU_ALIASES = {local: hub for hub, local in RWKU_FILES.items()}


def load_jsonl_or_json(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Rows of a JSON list file or a JSON-lines file; errors name the file (and line)."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise DataError(f"{path}: no such data file")
    with open(path, encoding="utf-8") as f:
        text = f.read()
    if not text.strip():
        raise DataError(f"{path}: the file is empty")
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        data = []
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                data.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise DataError(f"{path}:{n}: not valid JSON or JSON lines ({e.msg})") from None
    if isinstance(data, dict):
        data = [data]
    if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
        raise DataError(f"{path}: expected a list of JSON objects")
    return data


def _local_tofu(split: str, data_dir: str) -> list[dict[str, Any]]:
    for ext in (".json", ".jsonl"):
        path = os.path.join(data_dir, split + ext)
        if os.path.isfile(path):
            return load_jsonl_or_json(path)
    available = sorted(f.rsplit(".", 1)[0] for f in os.listdir(data_dir) if f.endswith((".json", ".jsonl")))
    raise DataError(f"{data_dir}: no split {split!r} (no {split}.json); available: {available}")


def load_tofu(split: str, data_dir: str | os.PathLike | None = None) -> list[dict[str, Any]]:
    """TOFU rows of `split` (dicts with question, answer, and the split's extra fields)."""
    if data_dir is not None:
        data_dir = os.fspath(data_dir)
        if not os.path.isdir(data_dir):
            raise DataError(f"{data_dir}: no such data folder")
        rows = _local_tofu(split, data_dir)
    else:
        rows = _hub_rows(TOFU_HUB, split, "train")
    if not rows:
        raise DataError(f"TOFU split {split!r} is empty")
    return rows


def rwku_target_dir(data_dir: str, subject: str | None) -> str:
    """The local folder of one RWKU target ('<rank>_<Name_with_underscores>')."""
    targets = sorted(d for d in os.listdir(data_dir) if os.path.isdir(os.path.join(data_dir, d)))
    if not targets:
        raise DataError(f"{data_dir}: no RWKU target folders ('<rank>_<Name>') in it")
    if subject is None:
        if len(targets) == 1:
            return os.path.join(data_dir, targets[0])
        raise DataError(f"{data_dir}: holds {len(targets)} RWKU targets; choose one with a subject, e.g. "
                        f"{targets[0].split('_', 1)[-1].replace('_', ' ')!r}")
    want = subject.replace(" ", "_")
    for d in targets:
        if d.split("_", 1)[-1] == want or d == want:
            return os.path.join(data_dir, d)
    names = [d.split("_", 1)[-1].replace("_", " ") for d in targets]
    raise DataError(f"{data_dir}: no RWKU target {subject!r}; available: {names}")


def _rank(folder_name: str) -> int:
    head = folder_name.split("_", 1)[0]
    return int(head) if head.isdigit() else 1 << 30


def load_rwku_split_head(config: str, n: int, data_dir: str | os.PathLike | None = None) -> list[dict[str, Any]]:
    """The first `n` rows of RWKU's whole `config` split, every target's rows included (what MDU's
    eval_rwku_dream.py reads for MMLU: the Hub split's first 100 rows, not the target's).

    Hub: the split's first `n` rows. Local copy: the per-target folders concatenated in rank
    order (``<rank>_<Name>``), the order RWKU's Hub splits list their targets in; a copy without
    the rank-1 target therefore starts elsewhere than the Hub split (a DataError says so).
    """
    hub_config = RWKU_ALIASES.get(config, config)
    if hub_config not in RWKU_FILES:
        raise DataError(f"unknown RWKU config {config!r}; known: {sorted(RWKU_FILES)}")
    if data_dir is None:
        return _hub_rows(RWKU_HUB, hub_config, "test")[:n]
    data_dir = os.fspath(data_dir)
    if not os.path.isdir(data_dir):
        raise DataError(f"{data_dir}: no such data folder")
    targets = sorted((d for d in os.listdir(data_dir) if os.path.isdir(os.path.join(data_dir, d))), key=_rank)
    if not targets or _rank(targets[0]) != 1:
        raise DataError(f"{data_dir}: the first rows of RWKU's {hub_config!r} split belong to target 1, which this "
                        f"copy lacks (folders: {targets[:3]}...)")
    rows: list[dict[str, Any]] = []
    for d in targets:
        if len(rows) >= n:
            break
        rows.extend(load_jsonl_or_json(os.path.join(data_dir, d, RWKU_FILES[hub_config] + ".json")))
    return rows[:n]


def load_rwku(config: str, subject: str | None = None, data_dir: str | os.PathLike | None = None) -> list[dict[str, Any]]:
    """RWKU rows of a Hub `config` (or its local file name, e.g. 'passage'), for one `subject`."""
    hub_config = RWKU_ALIASES.get(config, config)
    if hub_config not in RWKU_FILES:
        raise DataError(f"unknown RWKU config {config!r}; known: {sorted(RWKU_FILES)}")
    if data_dir is not None:
        data_dir = os.fspath(data_dir)
        if not os.path.isdir(data_dir):
            raise DataError(f"{data_dir}: no such data folder")
        folder = rwku_target_dir(data_dir, subject)
        rows = load_jsonl_or_json(os.path.join(folder, RWKU_FILES[hub_config] + ".json"))
    else:
        rows = _hub_rows(RWKU_HUB, hub_config, "test" if hub_config != "train_original_passage" else "train")
        if subject is not None:
            rows = [r for r in rows if r.get("subject") == subject]
    if not rows:
        raise DataError(f"RWKU {hub_config!r} has no rows for subject {subject!r}")
    return rows


def _hub_rows(repo: str, config: str, split: str) -> list[dict[str, Any]]:
    """Rows of a Hub dataset config through ``datasets`` (what users run; needs the network)."""
    import datasets  # Hub downloads only (tests/layout/test_function_imports.py says why)

    try:
        ds = datasets.load_dataset(repo, config, split=split)
    except Exception as e:  # noqa: BLE001 - datasets raises many types; name the request
        raise DataError(f"could not load {repo!r} config {config!r} split {split!r} from the Hub ({e}); "
                        "pass a local copy with data_dir") from e
    return [dict(r) for r in ds]
