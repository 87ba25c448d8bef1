"""The privacy-utility trade-off of a sweep: a table and a PNG from one TOFU result per swept value.

    sweep.plot_tradeoff([result_tau0, result_tau1], [0, 1], "tradeoff.png", baseline=result_before)
    rows = sweep.sweep_rows([([0.1, 0.5], r1), ([0.5, 1.0], r2)], param="t_range")   # timestep bands

The swept key (``param``) is ``tau`` (a number: rows sorted by it, points coloured by it) or
``t_range`` (a band [lo, hi] of diffusion times: rows kept in the given order).
"""

from __future__ import annotations

import csv
import io
import math
from typing import Any, Sequence

from mdu_jax.checkpoints import atomic_write

METRICS = ("model_utility", "forget_quality", "forget_Q_A_ROUGE", "forget_Q_A_Prob", "forget_truth_ratio",
           "retain_Q_A_ROUGE", "retain_Q_A_Prob", "privleak", "extraction_strength")
COLUMNS = ("tau",) + METRICS
Y_AXES = {"forget_quality": "forget quality (KS p-value, log scale)", "forget_Q_A_ROUGE": "forget ROUGE-L recall",
          "forget_ks_statistic": "forget KS statistic vs the retain-only model (lower is better)"}
PARAMS = ("tau", "t_range")   # a number; a band [lo, hi]


def _check_param(param: str) -> None:
    if param not in PARAMS:
        raise ValueError(f"param: expected one of {list(PARAMS)}, got {param!r}")


def value_text(value) -> str:
    """A swept value as text: '0.5' for a tau, '[0.33, 0.67]' for a band."""
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(f"{float(v):g}" for v in value) + "]"
    return f"{float(value):g}"


def sweep_rows(results: Sequence[tuple[Any, dict[str, Any]]], *, param: str = "tau",
               columns: Sequence[str] = METRICS) -> list[dict[str, Any]]:
    """One row per (swept value, TOFU result) with the `columns` aggregates (None if absent);
    sorted by value for ``tau``, in the given order for ``t_range`` bands."""
    _check_param(param)
    ordered = sorted(results, key=lambda x: float(x[0])) if param == "tau" else list(results)
    rows = []
    for value, result in ordered:
        if result.get("benchmark") != "tofu":
            raise ValueError(f"sweep result for {param}={value_text(value)}: benchmark {result.get('benchmark')!r}, "
                             "expected 'tofu'")
        aggs = result.get("aggregates", {})
        key = float(value) if param == "tau" else [float(v) for v in value]
        rows.append({param: key, **{c: aggs.get(c) for c in columns}})
    return rows


def table_text(rows: Sequence[dict], *, param: str = "tau", columns: Sequence[str] = METRICS) -> str:
    """The sweep table as aligned text (one line per swept value)."""
    def fmt(v):
        return "-" if v is None else (f"{v:.4g}" if isinstance(v, float) else str(v))
    head = [param, *columns]
    cells = [head] + [[value_text(r[param])] + [fmt(r.get(c)) for c in columns] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(head))]
    return "\n".join("  ".join(c.rjust(w) for c, w in zip(row, widths)) for row in cells)


def write_table(rows: Sequence[dict], path: str, *, param: str = "tau", columns: Sequence[str] = METRICS) -> str:
    """Writes the rows as CSV (empty cells for missing values; a band as its text '[lo, hi]')."""
    head = [param, *columns]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=head)
    w.writeheader()
    for r in rows:
        w.writerow({param: r[param] if param == "tau" else value_text(r[param]),
                    **{c: ("" if r.get(c) is None else r[c]) for c in columns}})
    return atomic_write.write_bytes(path, buf.getvalue().encode())


def plot_tradeoff(results: Sequence[dict[str, Any]], taus: Sequence[float], path: str, *,
                  baseline: dict[str, Any] | None = None, y: str | None = None, title: str | None = None) -> str:
    """The trade-off PNG of TOFU results, one per tau (``plot_rows`` of ``sweep_rows``);
    ``baseline``: the result of the model before unlearning, drawn as a star."""
    if len(results) != len(taus):
        raise ValueError(f"plot_tradeoff: {len(results)} results for {len(taus)} tau values")
    base = None
    if baseline is not None:
        base = {c: baseline.get("aggregates", {}).get(c) for c in METRICS}
    return plot_rows(sweep_rows(list(zip(taus, results))), path, y=y, title=title, baseline=base)


def plot_rows(rows: Sequence[dict], path: str, *, y: str | None = None, title: str | None = None,
              baseline: dict[str, Any] | None = None, param: str = "tau") -> str:
    """Draws forget quality (or forget ROUGE, or the forget KS statistic) against model utility,
    one point per swept value joined in row order and labelled with it, and writes a PNG at ``path``.

    ``y`` None: forget quality when every row has it, else forget ROUGE. Forget quality is drawn
    on a log scale (as the TOFU papers plot log10 p), with the p = 0.05 line. ``baseline`` (a
    row without a swept value, e.g. the model before unlearning) is drawn as a star when it has
    both values. Points are coloured by tau (``param`` 'tau', with a colour bar) or by row order
    (``param`` 't_range': bands are labelled, not ordered on one axis).
    """
    _check_param(param)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    if not rows:
        raise ValueError("plot_tradeoff: no sweep rows")
    if y is None:
        y = "forget_quality" if all(r.get("forget_quality") is not None for r in rows) else "forget_Q_A_ROUGE"
    if y not in Y_AXES:
        raise ValueError(f"y: expected one of {list(Y_AXES)}, got {y!r}")
    missing = [value_text(r[param]) for r in rows if r.get(y) is None or r.get("model_utility") is None]
    if missing:
        raise ValueError(f"plot_tradeoff: rows for {param}={', '.join(missing)} have no {y} or model_utility")
    xs = [float(r["model_utility"]) for r in rows]
    ys = [float(r[y]) for r in rows]
    fig, ax = plt.subplots(figsize=(6.4, 4.8), dpi=120)
    if baseline is not None and baseline.get(y) is not None and baseline.get("model_utility") is not None:
        bx, by = float(baseline["model_utility"]), float(baseline[y])
        ax.scatter([bx], [by], marker="*", s=180, color="tab:red", edgecolors="black", zorder=3,
                   label="before unlearning")
        xs_all, ys_all = xs + [bx], ys + [by]
    else:
        xs_all, ys_all = xs, ys
    ax.plot(xs, ys, "-", color="0.6", zorder=1)
    colours = [r["tau"] for r in rows] if param == "tau" else list(range(len(rows)))
    sc = ax.scatter(xs, ys, c=colours, cmap="viridis", s=60, zorder=2, edgecolors="black")
    labels: dict[tuple[float, float], list[str]] = {}
    for r, xv, yv in zip(rows, xs, ys):  # coinciding points share one label
        labels.setdefault((xv, yv), []).append(value_text(r[param]))
    prefix = "τ=" if param == "tau" else "t in "
    for (xv, yv), values in labels.items():
        ax.annotate(prefix + ", ".join(values), (xv, yv), textcoords="offset points", xytext=(6, 6), fontsize=9)
    if y == "forget_quality":
        ax.set_yscale("log")
        ax.axhline(0.05, color="tab:red", linestyle="--", linewidth=1, label="p = 0.05")
        positive = [v for v in ys_all if v > 0]
        if positive:
            lo, hi = min(positive + [0.05]), max(positive + [0.05])
            ax.set_ylim(lo / 3, min(1.5, hi * 3))
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="best")
    if param == "tau":
        fig.colorbar(sc, ax=ax, label="τ")
    ax.set_xlabel("model utility (harmonic mean)")
    ax.set_ylabel(Y_AXES[y])
    ax.set_title(title or "MDU privacy-utility trade-off over τ")
    ax.grid(True, alpha=0.3)
    if len(set(xs_all)) == 1:  # a flat sweep: a readable window around the single x
        pad = max(abs(xs_all[0]) * 0.1, 0.05)
        ax.set_xlim(xs_all[0] - pad, xs_all[0] + pad)
    ax.xaxis.set_major_locator(MaxNLocator(6))
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return atomic_write.write_bytes(path, buf.getvalue())


def finite(v) -> bool:
    return v is not None and isinstance(v, (int, float)) and math.isfinite(v)
