"""Forget quality and the distances behind it: how far the evaluated model's forget-set truth
ratios lie from the retain-only model's (reference-metrics 4).

The KS p-value (TOFU's forget quality) has coarse resolution on small forget sets and says
"different" or "not shown different", not how far. Beside it: the KS statistic (the largest gap
between the two empirical CDFs, in [0, 1]) and the 1-Wasserstein distance between the two
samples of log R (the mean absolute shift one sample needs to become the other, in nats per token:
log R = avg NLL of the correct answer - mean avg NLL of the perturbed ones).
"""

from __future__ import annotations

import numpy as np
from scipy.stats import ks_2samp, wasserstein_distance


def _samples(model_ratios, retain_ratios, what: str) -> tuple[np.ndarray, np.ndarray]:
    a = np.asarray(model_ratios, dtype=np.float64).reshape(-1)
    b = np.asarray(retain_ratios, dtype=np.float64).reshape(-1)
    if a.size == 0 or b.size == 0:
        raise ValueError(f"{what}: empty sample ({a.size} model, {b.size} retain truth ratios)")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise ValueError(f"{what}: truth ratios must be finite")
    return a, b


def forget_quality(model_ratios, retain_ratios) -> float:
    """Two-sided ``scipy.stats.ks_2samp`` p-value between the evaluated model's per-example
    forget-set truth ratios and the retain-only model's (high: indistinguishable, i.e. forgotten).

    The p-value is invariant to a strictly monotone transform of both samples (R vs 1/R).
    """
    a, b = _samples(model_ratios, retain_ratios, "forget_quality")
    return float(ks_2samp(a, b).pvalue)


def ks_statistic(model_ratios, retain_ratios) -> float:
    """The two-sample KS statistic sup_x |F_model(x) - F_retain(x)| in [0, 1] (0: same empirical
    distribution; 1: the samples do not overlap). Invariant to monotone transforms, like the p-value."""
    a, b = _samples(model_ratios, retain_ratios, "ks_statistic")
    return float(ks_2samp(a, b).statistic)


def log_ratio_wasserstein(model_ratios, retain_ratios) -> float:
    """The 1-Wasserstein distance between the samples of log R (nats per token):
    integral |F_model(x) - F_retain(x)| dx over x = log R. Ratios must be > 0."""
    a, b = _samples(model_ratios, retain_ratios, "log_ratio_wasserstein")
    if (a <= 0).any() or (b <= 0).any():
        raise ValueError("log_ratio_wasserstein: truth ratios must be > 0")
    return float(wasserstein_distance(np.log(a), np.log(b)))
