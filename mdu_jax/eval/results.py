"""Result JSON files: atomic writing, reading, and the retain-reference checks of forget quality."""

from __future__ import annotations

import hashlib
import json
import math
import os
from typing import Any

import numpy as np

from mdu_jax.checkpoints import atomic_write

FORMAT = "mdu_jax.eval/1"

# TOFU aggregates of the MDU profile were once named apart from the open-unlearning profile's;
# both profiles now use the right-hand names, and read_result renames old files' keys.
LEGACY_MDU_NAMES = {f"{p}_{old}": f"{p}_{new}" for p in ("forget", "retain", "ra", "wf")
                    for old, new in (("rougeL_recall", "Q_A_ROUGE"), ("prob", "Q_A_Prob"))}
LEGACY_MDU_NAMES.update({f"{p}_truth_ratio": f"{p}_Truth_Ratio" for p in ("retain", "ra", "wf")})


class ResultError(ValueError):
    """A result / retain-reference file is missing, unreadable, or does not fit this evaluation."""


def fingerprint(texts) -> str:
    """A short sha256 of a list of strings (which rows an evaluation used, in order)."""
    return hashlib.sha256(json.dumps(list(texts), ensure_ascii=False).encode("utf-8")).hexdigest()[:16]


def _plain(x):
    """JSON-safe copy: numpy scalars/arrays to Python, non-finite floats to None."""
    if isinstance(x, dict):
        return {str(k): _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    if isinstance(x, np.ndarray):
        return _plain(x.tolist())
    if isinstance(x, np.generic):
        x = x.item()
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def write_result(result: dict[str, Any], path: str | os.PathLike) -> str:
    """Writes ``result`` as JSON at ``path`` (temp file + rename: never half written)."""
    return atomic_write.write_text(path, json.dumps(_plain(result), indent=1, ensure_ascii=False) + "\n")


def read_result(path: str | os.PathLike) -> dict[str, Any]:
    """A result JSON written by ``write_result`` (errors name the file); aggregates of older MDU-profile
    TOFU results are renamed to the current names (``LEGACY_MDU_NAMES``)."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ResultError(f"{path}: no such result file")
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except json.JSONDecodeError as e:
        raise ResultError(f"{path}: not valid JSON ({e.msg} at line {e.lineno})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ResultError(f"{path}: not an mdu_jax evaluation result (expected \"format\": \"{FORMAT}\")")
    aggs = data.get("aggregates")
    if data.get("benchmark") == "tofu" and data.get("profile") == "mdu" and isinstance(aggs, dict):
        data["aggregates"] = {LEGACY_MDU_NAMES.get(k, k): v for k, v in aggs.items()}
    return data


def retain_reference(ref: str | os.PathLike | dict, *, forget_split: str, forget_fingerprint: str,
                     profile: str) -> dict[str, Any]:
    """The retain-only model's {'truth_ratios', 'mia_min_k', 'generations', 'source'} for forget
    quality, privleak and the relative answer length ('generations': its forget generations).

    ``ref`` is a TOFU result (path or dict) of the retain model evaluated by this code on the
    same forget split and the same rows; anything else is a ``ResultError`` that says what differs.
    """
    source = os.fspath(ref) if not isinstance(ref, dict) else "<dict>"
    data = read_result(ref) if not isinstance(ref, dict) else ref
    if data.get("benchmark") != "tofu":
        raise ResultError(f"retain reference {source}: benchmark is {data.get('benchmark')!r}, expected 'tofu'")
    if data.get("forget_split") != forget_split:
        raise ResultError(f"retain reference {source} was made for forget split {data.get('forget_split')!r}, "
                          f"but this evaluation uses {forget_split!r}; evaluate the retain model with "
                          f"--forget-split {forget_split}")
    if data.get("profile") != profile:
        raise ResultError(f"retain reference {source}: profile {data.get('profile')!r}, this evaluation "
                          f"uses {profile!r}")
    ref_fp = data.get("fingerprints", {}).get("forget")
    if ref_fp != forget_fingerprint:
        n = len(data.get("per_example", {}).get("forget", []))
        raise ResultError(f"retain reference {source}: made on different rows of {forget_split!r} ({n} rows, "
                          f"fingerprint {ref_fp}, here {forget_fingerprint}); use the same --max-examples")
    rows = data.get("per_example", {}).get("forget", [])
    ratios = [r.get("truth_ratio") for r in rows]
    if not ratios or any(r is None for r in ratios):
        raise ResultError(f"retain reference {source}: no per-example forget truth ratios")
    gens = [r.get("generation") for r in rows]
    return {"truth_ratios": np.asarray(ratios, dtype=np.float64),
            "mia_min_k": data.get("aggregates", {}).get("mia_min_k"),
            "generations": gens if all(isinstance(g, str) for g in gens) else None, "source": source}
