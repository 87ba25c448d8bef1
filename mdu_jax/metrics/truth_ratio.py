"""Truth ratio (reference-metrics 3) and the MDU paper's raw variant (reference-mdlm 7.1).

R = geo-mean over perturbed answers of their per-token probabilities, divided by the correct
answer's per-token probability: ``exp(-mean_j nll_wrong_j) / (exp(-nll_correct) + 1e-10)``.
"""

from __future__ import annotations

import numpy as np


def truth_ratio(correct_avg_nll, wrong_avg_nll) -> np.ndarray:
    """float64 [N]: R_i from per-token average NLLs, correct [N] and wrong [N, K] (nats/token).

    The wrong NLLs are averaged before exponentiating (open-unlearning's ``aggregate_to_1D``).
    """
    c = np.asarray(correct_avg_nll, dtype=np.float64)
    w = np.asarray(wrong_avg_nll, dtype=np.float64)
    if w.ndim != 2 or w.shape[0] != c.shape[0]:
        raise ValueError(f"wrong_avg_nll: expected shape [{c.shape[0]}, K], got {list(w.shape)}")
    return np.exp(-w.mean(axis=1)) / (np.exp(-c) + 1e-10)


def forget_truth_ratio(ratios) -> float:
    """mean_i min(R_i, 1 / (R_i + 1e-10)), in [0, 1] ('closer_to_1_better', forget set)."""
    r = np.asarray(ratios, dtype=np.float64)
    return float(np.mean(np.minimum(r, 1.0 / (r + 1e-10))))


def retain_truth_ratio(ratios) -> float:
    """mean_i max(0, 1 - R_i) ('true_better': retain, real authors, world facts)."""
    r = np.asarray(ratios, dtype=np.float64)
    return float(np.mean(np.maximum(0.0, 1.0 - r)))


def mdu_truth_ratio(gt_avg_nll, perturbed_avg_nll, num_perturbed: int = 3) -> np.ndarray:
    """float64 [N]: the MDU scripts' raw TR = exp(nll_gt - mean of the first ``num_perturbed``
    perturbed NLLs) (ground-truth answer, not the paraphrase; no min/max transform)."""
    g = np.asarray(gt_avg_nll, dtype=np.float64)
    p = np.asarray(perturbed_avg_nll, dtype=np.float64)
    if p.ndim != 2 or p.shape[0] != g.shape[0]:
        raise ValueError(f"perturbed_avg_nll: expected shape [{g.shape[0]}, K], got {list(p.shape)}")
    return np.exp(g - p[:, :num_perturbed].mean(axis=1))
