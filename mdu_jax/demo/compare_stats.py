"""The statistics of a method comparison: mean +- sd over seeds, the declared selection rule, and
paired significance tests against the reference method. Pure functions of evaluation aggregates.

A *cell* is one (method, lr, steps) point of the tuning grid; it holds one evaluation per seed,
``{seed: aggregates}``. Seeds pair runs across methods: seed s draws the same data order and
masking noise in every method's unlearning run, from the same SFT model.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import numpy as np
from scipy import stats

# metric -> +1 when higher is better, -1 when lower is better (what "better" means in the tests).
DIRECTION = {"forget_ks_statistic": -1, "forget_log_tr_w1": -1, "forget_quality": +1, "model_utility": +1,
             "forget_fact_recall": -1, "retain_fact_recall": +1, "forget_Q_A_Prob": -1, "retain_Q_A_Prob": +1,
             "forget_short_rate": -1, "forget_empty_rate": -1, "forget_judge_nll": -1,
             "forget_relative_length": +1}


def mean_sd(values: Sequence[float]) -> tuple[float, float]:
    """(mean, sample standard deviation with ddof=1; 0 for one value) of finite `values`; NaNs if none."""
    xs = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=np.float64)
    if xs.size == 0:
        return math.nan, math.nan
    return float(xs.mean()), float(xs.std(ddof=1)) if xs.size > 1 else 0.0


def cell_summary(by_seed: Mapping[int, Mapping[str, Any]], keys: Sequence[str]) -> dict[str, tuple[float, float]]:
    """{key: (mean, sd)} over the seeds of one grid cell."""
    return {k: mean_sd([a.get(k) for a in by_seed.values()]) for k in keys}


def select_cell(cells: Mapping[Any, Mapping[int, Mapping[str, Any]]], *, metric: str, utility_key: str,
                utility_floor: float) -> tuple[Any, bool]:
    """The grid cell the declared rule picks, and whether it met the utility floor.

    Rule: among cells whose mean `utility_key` is at least `utility_floor`, the best mean `metric`
    (``DIRECTION`` says whether best is lowest or highest). When no cell keeps the floor, the
    cell with the highest mean utility (returned with False, so reports can say so).
    """
    if not cells:
        raise ValueError("select_cell: no grid cells")
    sign = DIRECTION[metric]
    means = {c: (mean_sd([a.get(metric) for a in s.values()])[0], mean_sd([a.get(utility_key) for a in s.values()])[0])
             for c, s in cells.items()}
    kept = [c for c, (_, u) in means.items() if math.isfinite(u) and u >= utility_floor and math.isfinite(means[c][0])]
    if kept:
        return max(kept, key=lambda c: sign * means[c][0]), True
    return max(cells, key=lambda c: means[c][1] if math.isfinite(means[c][1]) else -math.inf), False


def paired_test(method: Mapping[int, Mapping[str, Any]], reference: Mapping[int, Mapping[str, Any]],
                key: str) -> dict[str, Any]:
    """Paired t-test (``scipy.stats.ttest_rel``, two-sided) of `key` between two methods' runs
    matched by seed: {n, mean_diff (method - reference), p}; p is None with fewer than two
    pairs or when every difference is equal up to float rounding (the t statistic is undefined;
    e.g. 0.3 - 0.4 and 0.4 - 0.5 differ by 6e-17 and would give a spurious p of 1e-16)."""
    seeds = sorted(set(method) & set(reference))
    pairs = [(method[s].get(key), reference[s].get(key)) for s in seeds]
    pairs = [(a, b) for a, b in pairs if a is not None and b is not None and math.isfinite(a) and math.isfinite(b)]
    diffs = np.asarray([a - b for a, b in pairs], dtype=np.float64)
    out: dict[str, Any] = {"n": len(pairs), "mean_diff": float(diffs.mean()) if len(pairs) else None, "p": None}
    if len(pairs) >= 2 and np.ptp(diffs) > 1e-9 * max(1.0, float(np.abs(diffs).max())):
        out["p"] = float(stats.ttest_rel([a for a, _ in pairs], [b for _, b in pairs]).pvalue)
    return out


def paired_question_test(method: Sequence[float], reference: Sequence[float]) -> dict[str, Any]:
    """Wilcoxon signed-rank test (two-sided, ``scipy.stats.wilcoxon``) of per-question values
    (e.g. forget answer probabilities, one per forget question and seed, in the same order for
    both methods): {n, median_diff, p}; p is None when every difference is zero."""
    a, b = np.asarray(method, dtype=np.float64), np.asarray(reference, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"paired_question_test: {a.shape} values against {b.shape}")
    d = a - b
    out: dict[str, Any] = {"n": int(d.size), "median_diff": float(np.median(d)) if d.size else None, "p": None}
    if d.size and np.any(d != 0):
        out["p"] = float(stats.wilcoxon(a, b).pvalue)
    return out
