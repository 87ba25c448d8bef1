"""Exact memorisation and extraction strength on teacher-forced predictions (reference-metrics 6.2, 6.3).

``pred`` holds the model's argmax prediction for each gold token y_1..y_n (the EOS already
excluded), ``gold`` the gold tokens.
"""

from __future__ import annotations

import numpy as np


def exact_memorization(pred, gold) -> float:
    """(1/n) sum_t 1[pred_t = gold_t]; 0 for n = 0."""
    p, g = np.asarray(pred).reshape(-1), np.asarray(gold).reshape(-1)
    if p.shape != g.shape:
        raise ValueError(f"exact_memorization: {p.size} predictions for {g.size} gold tokens")
    return float((p == g).mean()) if g.size else 0.0


def extraction_strength(pred, gold) -> float:
    """1 - k*/n with k* the smallest k in 0..n-1 whose predicted suffix pred[k:] equals gold[k:].

    open-unlearning's loop leaves k = n - 1 when no suffix matches, so that case gives 1/n, not 0;
    n = 0 gives 0.
    """
    p, g = np.asarray(pred).reshape(-1), np.asarray(gold).reshape(-1)
    if p.shape != g.shape:
        raise ValueError(f"extraction_strength: {p.size} predictions for {g.size} gold tokens")
    n = g.size
    if n == 0:
        return 0.0
    # The suffix from k matches iff every mismatch lies before k: k* = last mismatch + 1.
    mismatches = np.flatnonzero(p != g)
    k = 0 if mismatches.size == 0 else min(int(mismatches[-1]) + 1, n - 1)
    return 1.0 - k / n
