"""Model utility: the harmonic mean of the nine retain / real-author / world-fact numbers
(reference-metrics 5)."""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

MODEL_UTILITY_KEYS = ("retain_Q_A_Prob", "retain_Q_A_ROUGE", "retain_Truth_Ratio",
                      "ra_Q_A_Prob_normalised", "ra_Q_A_ROUGE", "ra_Truth_Ratio",
                      "wf_Q_A_Prob_normalised", "wf_Q_A_ROUGE", "wf_Truth_Ratio")


def harmonic_mean(values: Sequence[float]) -> float:
    """n / sum(1/v) of non-negative values; 0 when any value is 0 (as ``scipy.stats.hmean``)."""
    v = np.asarray(values, dtype=np.float64).reshape(-1)
    if v.size == 0:
        raise ValueError("harmonic_mean: no values")
    if (v < 0).any() or not np.isfinite(v).all():
        raise ValueError(f"harmonic_mean: values must be finite and >= 0, got {v.tolist()}")
    if (v == 0).any():
        return 0.0
    return float(v.size / np.sum(1.0 / v))


def model_utility(aggregates: Mapping[str, float], keys: Sequence[str] = MODEL_UTILITY_KEYS,
                  require_all: bool = False) -> tuple[float, list[str]]:
    """(harmonic mean of the ``keys`` present in ``aggregates``, the keys used).

    With ``require_all`` a missing key is an error; otherwise the mean runs over what is present
    (e.g. only the three retain numbers when real authors / world facts are not evaluated).
    """
    used = [k for k in keys if aggregates.get(k) is not None]
    missing = [k for k in keys if k not in used]
    if require_all and missing:
        raise ValueError(f"model_utility: missing components {missing}")
    if not used:
        raise ValueError(f"model_utility: none of {list(keys)} is present")
    return harmonic_mean([aggregates[k] for k in used]), used
