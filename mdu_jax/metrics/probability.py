"""Answer probabilities from per-token average NLLs (reference-metrics 0 and 2)."""

from __future__ import annotations

import numpy as np


def prob_from_avg_nll(avg_nll) -> np.ndarray:
    """exp(-avg_nll): the per-token geometric-mean probability P(a|q)^(1/|a|) (float64, same shape)."""
    return np.exp(-np.asarray(avg_nll, dtype=np.float64))


def normalised_probability(p_correct, p_wrong) -> np.ndarray:
    """float64 [N]: p / (p + sum_j p_wrong_j + 1e-10), open-unlearning's ``probability_w_options``.

    p_correct [N] and p_wrong [N, K] are per-token-normalised probabilities.
    """
    p = np.asarray(p_correct, dtype=np.float64)
    w = np.asarray(p_wrong, dtype=np.float64)
    if w.ndim != 2 or w.shape[0] != p.shape[0]:
        raise ValueError(f"p_wrong: expected shape [{p.shape[0]}, K], got {list(w.shape)}")
    return p / (p + w.sum(axis=1) + 1e-10)
