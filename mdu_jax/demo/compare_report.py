"""The comparison's outputs: a Markdown table (mean +- sd over seeds, paired p-values against the
reference method) and the privacy-utility PNG (one marker per method, error bars = sd over seeds)."""

from __future__ import annotations

import io
import math
import textwrap
from typing import Any, Sequence

from mdu_jax.checkpoints import atomic_write

# (column header, aggregate key) of the table, in order.
COLUMNS = [("forget KS stat", "forget_ks_statistic"), ("forget quality (KS p)", "forget_quality"),
           ("model utility", "model_utility"), ("forget fact recall", "forget_fact_recall"),
           ("retain fact recall", "retain_fact_recall"), ("forget answer prob", "forget_Q_A_Prob"),
           ("forget <=2 words", "forget_short_rate"), ("forget length / twin's", "forget_relative_length"),
           ("forget NLL (twin judge)", "forget_judge_nll")]
# Keys whose paired tests against the reference get a p-value column.
TESTED = ("forget_ks_statistic", "model_utility", "forget_fact_recall")


def _cell(ms: Sequence[float] | None) -> str:
    if ms is None or not math.isfinite(ms[0]):
        return "-"
    return f"{ms[0]:.3f} ± {ms[1]:.3f}"


def _p(test: dict | None) -> str:
    if test is None:
        return ""
    return "-" if test.get("p") is None else f"{test['p']:.3g}"


def markdown_table(rows: Sequence[dict[str, Any]], reference: str) -> str:
    """The comparison table: one row per method (its selected grid cell), mean ± sd over seeds
    of ``COLUMNS``, and the paired t-test p-values (over seeds) of ``TESTED`` against `reference`.

    rows: {name, lr, steps, kept_floor, seeds, summary {key: (mean, sd)}, tests {key: {p, ...}}}.
    """
    head = (["method", "lr", "steps", "seeds", "utility floor kept"] + [h for h, _ in COLUMNS]
            + [f"p vs {reference}: {k}" for k in TESTED])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r["name"], f"{r['lr']:g}", str(r["steps"]), str(r["seeds"]), "yes" if r["kept_floor"] else "NO"]
        cells += [_cell(r["summary"].get(k)) for _, k in COLUMNS]
        cells += [_p(r["tests"].get(k)) if r["name"] != reference else "(reference)" for k in TESTED]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


# The plot's panels: (aggregate key, y-axis label, the twin's value on that axis or None: its own key).
PANELS = (("forget_ks_statistic", "forget KS statistic vs the twin (lower is better)", 0.0),
          ("forget_fact_recall", "forget fact recall (key fact in the greedy answer)", None))


def plot_comparison(rows: Sequence[dict[str, Any]], path: str, *, before: dict[str, float],
                    twin: dict[str, float], utility_floor: float, title: str) -> str:
    """Two panels against model utility: the forget KS statistic (lower: closer to the retain-only
    twin; 40 questions move it in steps of 0.025) and forget fact recall (what the model still
    says). One marker per method at its selected cell with sd error bars over seeds; the SFT model
    (star), the twin (diamond) and the declared utility floor (dashed). Writes a PNG at `path`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(PANELS), figsize=(11.0, 5.0), dpi=120)
    markers = "os^vD<>pPhX*"
    for ax, (key, ylabel, twin_value) in zip(axes, PANELS):
        for i, r in enumerate(rows):
            (ux, sx), (ky, sy) = r["summary"]["model_utility"], r["summary"].get(key, (math.nan, math.nan))
            if not (math.isfinite(ux) and math.isfinite(ky)):
                continue
            ax.errorbar([ux], [ky], xerr=[sx], yerr=[sy], fmt=markers[i % len(markers)], markersize=8, capsize=4,
                        label=r["name"], zorder=3)
        if before.get("model_utility") is not None and before.get(key) is not None:
            ax.scatter([before["model_utility"]], [before[key]], marker="*", s=220, color="tab:red",
                       edgecolors="black", zorder=4, label="before unlearning (SFT)")
        twin_y = twin.get(key) if twin_value is None else twin_value
        if twin.get("model_utility") is not None and twin_y is not None:
            ax.scatter([twin["model_utility"]], [twin_y], marker="d", s=120, color="0.3", edgecolors="black",
                       zorder=4, label="retain-only twin")
        ax.axvline(utility_floor, color="0.4", linestyle="--", linewidth=1, label="utility floor (selection rule)")
        ax.set_xlabel("model utility (harmonic mean), mean ± sd over seeds")
        ax.set_ylabel(ylabel)
        ax.grid(True, alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, fontsize=8, loc="lower center", ncol=min(6, len(labels)))
    fig.suptitle("\n".join(textwrap.wrap(title, 110)), fontsize=10)
    fig.tight_layout(rect=(0, 0.12, 1, 1))
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return atomic_write.write_bytes(path, buf.getvalue())
