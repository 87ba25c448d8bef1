"""Forget quality: the two-sample KS test p-value between truth-ratio samples (reference-metrics 4)."""

from __future__ import annotations

import numpy as np
from scipy.stats import ks_2samp


def forget_quality(model_ratios, retain_ratios) -> float:
    """Two-sided ``scipy.stats.ks_2samp`` p-value between the evaluated model's per-example
    forget-set truth ratios and the retain-only model's (high: indistinguishable, i.e. forgotten).

    The p-value is invariant to a strictly monotone transform of both samples (R vs 1/R).
    """
    a = np.asarray(model_ratios, dtype=np.float64).reshape(-1)
    b = np.asarray(retain_ratios, dtype=np.float64).reshape(-1)
    if a.size == 0 or b.size == 0:
        raise ValueError(f"forget_quality: empty sample ({a.size} model, {b.size} retain truth ratios)")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise ValueError("forget_quality: truth ratios must be finite")
    return float(ks_2samp(a, b).pvalue)
