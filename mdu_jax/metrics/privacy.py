"""Membership-inference scores, their AUC, and privleak (reference-metrics 6.4, 6.5).

Every score is signed like a loss: higher means "less likely a member".
"""

from __future__ import annotations

import zlib

import numpy as np


def _k_smallest_mean(values, k: float) -> float:
    v = np.sort(np.asarray(values, dtype=np.float64).reshape(-1))
    if v.size == 0:
        raise ValueError("min-k: no token scores")
    m = max(1, int(v.size * k))
    return float(v[:m].mean())


def min_k_score(token_logprobs, k: float = 0.4) -> float:
    """Min-K%: -mean of the max(1, int(n k)) smallest token log-probs (TOFU/MUSE use k = 0.4)."""
    return -_k_smallest_mean(token_logprobs, k)


def min_k_plus_plus_score(token_logprobs, mu, sigma, k: float = 0.4) -> float:
    """Min-K%++: -mean of the m smallest z_t = (log p(y_t) - mu_t) / sigma_t, where mu_t and
    sigma_t are the mean and standard deviation of log p under the model's own distribution at
    that position (sigma clamped below at sqrt(1e-6))."""
    lp = np.asarray(token_logprobs, dtype=np.float64)
    s = np.sqrt(np.maximum(np.asarray(sigma, dtype=np.float64) ** 2, 1e-6))
    return -_k_smallest_mean((lp - np.asarray(mu, dtype=np.float64)) / s, k)


def zlib_score(avg_nll: float, text: str) -> float:
    """avg_nll / len(zlib.compress(text.encode('utf-8')))."""
    return float(avg_nll) / len(zlib.compress(text.encode("utf-8")))


def mia_auc(member_scores, nonmember_scores) -> float:
    """ROC AUC with members labelled 0 and non-members 1, scores higher = non-member (as
    ``sklearn.metrics.roc_auc_score(labels, scores)``): P(nonmember > member) + P(tie) / 2."""
    a = np.asarray(member_scores, dtype=np.float64).reshape(-1)
    b = np.asarray(nonmember_scores, dtype=np.float64).reshape(-1)
    if a.size == 0 or b.size == 0:
        raise ValueError(f"mia_auc: needs members and non-members, got {a.size} and {b.size}")
    greater = (b[None, :] > a[:, None]).sum()
    ties = (b[None, :] == a[:, None]).sum()
    return float((greater + 0.5 * ties) / (a.size * b.size))


def privleak(auc_model: float, auc_retain: float = 0.5) -> float:
    """((1 - AUC_model) - (1 - AUC_retain)) / ((1 - AUC_retain) + 1e-10) * 100 (0: like the
    retain model; strongly negative: the forget set is still recognisable)."""
    ref = 1.0 - float(auc_retain)
    return ((1.0 - float(auc_model)) - ref) / (ref + 1e-10) * 100.0
