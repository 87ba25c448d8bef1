"""Sequential unlearning's outputs: Markdown tables (per round; per round and forget group) and the
PNG of every group's forget metrics and the model's utility against the round."""

from __future__ import annotations

import io
import math
from typing import Any, Sequence

from mdu_jax.checkpoints import atomic_write

# (column header, key) of the per-group table and of the plot's panels.
GROUP_COLUMNS = [("fact recall", "forget_fact_recall"), ("answer prob", "forget_Q_A_Prob"),
                 ("truth-ratio KS vs twin", "forget_ks_statistic"), ("forget quality (KS p)", "forget_quality"),
                 ("<=2 words", "forget_short_rate")]
ROUND_COLUMNS = [("model utility", "model_utility"), ("retain fact recall", "retain_fact_recall"),
                 ("forget fact recall, all groups", "forget_fact_recall"),
                 ("forget KS vs twin, all groups", "forget_ks_statistic")]
PANELS = [("forget fact recall", "forget_fact_recall"), ("forget answer probability", "forget_Q_A_Prob"),
          ("forget truth-ratio KS statistic vs the twin", "forget_ks_statistic")]


def _fmt(v) -> str:
    return "-" if v is None or not isinstance(v, (int, float)) or not math.isfinite(v) else f"{v:.3f}"


def status(round_index: int, group: int) -> str:
    """What round `round_index` did to `group` (both 1-based; round 0 is the SFT model)."""
    if round_index == 0:
        return "before unlearning"
    if group == round_index:
        return "unlearned this round"
    return f"unlearned in round {group}" if group < round_index else "not yet unlearned"


def markdown_tables(rounds: Sequence[dict[str, Any]], twin: dict[str, Any], groups: Sequence[dict[str, Any]]) -> str:
    """Two tables: one row per round (model utility, retain and whole-forget-split numbers), and
    one row per (round, group) with the group's forget metrics (``GROUP_COLUMNS``), then the
    twin's rows per group (the floor).

    rounds: [{round, unlearned_group, aggregates, groups: [forget_subset per group]}];
    twin: {aggregates, groups}; groups: [{group, people, questions}].
    """
    head = ["round", "unlearned group"] + [h for h, _ in ROUND_COLUMNS]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rounds:
        g = r["unlearned_group"]
        cells = [str(r["round"]), "-" if g is None else f"{g} ({', '.join(groups[g - 1]['people'])})"]
        cells += [_fmt(r["aggregates"].get(k)) for _, k in ROUND_COLUMNS]
        lines.append("| " + " | ".join(cells) + " |")
    cells = ["retain-only twin", "-"] + [_fmt(twin["aggregates"].get(k)) for _, k in ROUND_COLUMNS]
    lines.append("| " + " | ".join(cells) + " |")
    head = ["after round", "forget group", "status", "questions"] + [h for h, _ in GROUP_COLUMNS]
    lines += ["", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rounds:
        for j, m in enumerate(r["groups"], 1):
            cells = [str(r["round"]), str(j), status(r["round"], j), str(m["rows"])]
            lines.append("| " + " | ".join(cells + [_fmt(m.get(k)) for _, k in GROUP_COLUMNS]) + " |")
    for j, m in enumerate(twin["groups"], 1):
        cells = ["retain-only twin", str(j), "never saw it (floor)", str(m["rows"])]
        lines.append("| " + " | ".join(cells + [_fmt(m.get(k)) for _, k in GROUP_COLUMNS]) + " |")
    return "\n".join(lines)


def plot_rounds(rounds: Sequence[dict[str, Any]], twin: dict[str, Any], path: str, *, title: str) -> str:
    """Four panels against the round (0 = the SFT model): each group's forget fact recall, forget
    answer probability and truth-ratio KS statistic vs the twin (one line per group, a large
    marker at the round that unlearned it, the twin's value dotted in the group's colour), and
    model utility with retain fact recall. Writes a PNG at `path`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    xs = [r["round"] for r in rounds]
    n_groups = len(rounds[0]["groups"])
    fig, axes = plt.subplots(2, 2, figsize=(10, 7), dpi=110)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, (name, key) in zip(axes.flat, PANELS):
        for j in range(n_groups):
            c = colours[j % len(colours)]
            ys = [r["groups"][j].get(key) for r in rounds]
            ys = [float("nan") if v is None else v for v in ys]
            ax.plot(xs, ys, "-o", color=c, markersize=4, label=f"group {j + 1}")
            if j + 1 < len(rounds):
                ax.plot([j + 1], [ys[j + 1]], "o", color=c, markersize=10, markeredgecolor="black")
            floor = twin["groups"][j].get(key)
            if floor is not None:
                ax.axhline(floor, color=c, linestyle=":", linewidth=1)
        ax.set_title(name, fontsize=9)
        ax.set_xticks(xs)
        ax.grid(True, alpha=0.3)
    ax = axes.flat[3]
    for name, key, style in (("model utility", "model_utility", "-s"), ("retain fact recall", "retain_fact_recall", "-^")):
        ys = [r["aggregates"].get(key) for r in rounds]
        ax.plot(xs, [float("nan") if v is None else v for v in ys], style, color="0.3", label=name)
    ax.set_title("model utility and retain fact recall", fontsize=9)
    ax.set_xticks(xs)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7)
    axes.flat[0].legend(fontsize=7, title="large marker: its round; dotted: twin", title_fontsize=7)
    for ax in axes[1]:
        ax.set_xlabel("round (0: before unlearning)")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return atomic_write.write_bytes(path, buf.getvalue())
