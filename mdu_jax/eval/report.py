"""Plain-text tables of evaluation results."""

from __future__ import annotations

import math
import sys
from typing import Any, Sequence

# Display order; other aggregate keys follow in their own order.
ORDER = ("forget_quality", "model_utility", "forget_Q_A_ROUGE", "forget_Q_A_Prob", "forget_truth_ratio",
         "retain_Q_A_ROUGE", "retain_Q_A_Prob", "retain_Truth_Ratio", "ra_Q_A_ROUGE", "ra_Q_A_Prob_normalised",
         "ra_Truth_Ratio", "wf_Q_A_ROUGE", "wf_Q_A_Prob_normalised", "wf_Truth_Ratio", "privleak",
         "extraction_strength", "exact_memorization", "mia_min_k", "mia_loss")


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if value != 0 and (abs(value) < 1e-3 or abs(value) >= 1e5):
            return f"{value:.3e}"
        return f"{value:.4f}"
    return str(value)


def _short(path: str | None) -> str | None:
    """The last two components of a model path ('tau=0.5/final')."""
    if not path:
        return None
    parts = [p for p in str(path).replace("\\", "/").split("/") if p]
    return "/".join(parts[-2:])


def format_table(results: dict | Sequence[dict], names: Sequence[str] | None = None,
                 keys: Sequence[str] | None = None) -> str:
    """A metric-per-row table of the aggregates of one or more results (one column each)."""
    results = [results] if isinstance(results, dict) else list(results)
    if not results:
        raise ValueError("format_table: no results")
    if names is None:
        names = [_short(r.get("model")) or f"result {i}" for i, r in enumerate(results)]
    if keys is None:
        seen = [k for r in results for k in r.get("aggregates", {})]
        keys = [k for k in ORDER if k in seen] + [k for k in dict.fromkeys(seen) if k not in ORDER]
    rows = [["metric"] + [str(n) for n in names]]
    rows += [[k] + [_fmt(r.get("aggregates", {}).get(k)) for r in results] for k in keys]
    widths = [max(len(row[c]) for row in rows) for c in range(len(rows[0]))]
    def line(row):
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths)))
    head = results[0]
    title = f"{head.get('benchmark', '?').upper()} ({head.get('profile', '?')} profile)"
    sep = "-" * len(line(rows[0]))
    return "\n".join([title, line(rows[0]), sep] + [line(r) for r in rows[1:]])


def print_table(results: dict | Sequence[dict], names: Sequence[str] | None = None,
                keys: Sequence[str] | None = None, file=None) -> None:
    """Prints ``format_table(results, names, keys)`` (to stdout by default)."""
    print(format_table(results, names, keys), file=file or sys.stdout)
