"""The demo's printed table and bar plot: the usual TOFU numbers next to the ones that expose
degenerate forgetting (fact recall, empty / short answers, answer length and fluency)."""

from __future__ import annotations

import os

# (label, aggregate key) of every table row, in print order.
ROWS = [("forget fact recall", "forget_fact_recall"), ("retain fact recall", "retain_fact_recall"),
        ("forget ROUGE-L recall", "forget_Q_A_ROUGE"), ("retain ROUGE-L recall", "retain_Q_A_ROUGE"),
        ("forget answer probability", "forget_Q_A_Prob"), ("retain answer probability", "retain_Q_A_Prob"),
        ("forget truth ratio", "forget_truth_ratio"), ("forget quality (KS p)", "forget_quality"),
        ("forget KS statistic", "forget_ks_statistic"), ("forget log-TR W1 (nats)", "forget_log_tr_w1"),
        ("model utility", "model_utility"),
        ("forget empty answers", "forget_empty_rate"), ("forget answers <= 2 words", "forget_short_rate"),
        ("forget length / twin's", "forget_relative_length"),
        ("forget answer NLL (twin judge)", "forget_judge_nll")]

# Bars of the plot: the rows on a [0, 1] scale.
PLOT_KEYS = ("forget_fact_recall", "retain_fact_recall", "forget_Q_A_ROUGE", "retain_Q_A_ROUGE", "forget_Q_A_Prob",
             "retain_Q_A_Prob", "forget_ks_statistic", "model_utility", "forget_empty_rate", "forget_short_rate")


def summary_table(results_by_name: dict[str, dict]) -> str:
    """A plain-text table of the headline metrics (rows) of each evaluated model (columns)."""
    names = list(results_by_name)
    width = max(len(label) for label, _ in ROWS) + 2
    col = max(14, max(len(n) for n in names) + 2)
    lines = [f"{'metric':<{width}}" + "".join(f"{n:>{col}}" for n in names)]
    for label, key in ROWS:
        cells = []
        for n in names:
            v = results_by_name[n]["aggregates"].get(key)
            cells.append(f"{v:>{col}.4g}" if isinstance(v, (int, float)) else f"{'-':>{col}}")
        lines.append(f"{label:<{width}}" + "".join(cells))
    return "\n".join(lines)


def plot_bars(results_by_name: dict[str, dict], path: str, title: str) -> str:
    """A grouped bar chart of ``PLOT_KEYS`` (those every model has) per model, written to `path`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = [k for k in PLOT_KEYS if all(isinstance(r["aggregates"].get(k), (int, float))
                                        for r in results_by_name.values())]
    fig, ax = plt.subplots(figsize=(10, 3.8))
    width = 0.8 / len(results_by_name)
    for i, (name, res) in enumerate(results_by_name.items()):
        ax.bar([j + i * width for j in range(len(keys))], [res["aggregates"][k] for k in keys], width, label=name)
    ax.set_xticks([j + width * (len(results_by_name) - 1) / 2 for j in range(len(keys))])
    ax.set_xticklabels([k.replace("_", "\n") for k in keys], fontsize=7)
    ax.set_ylim(0, 1.05)
    ax.set_title(title)
    ax.legend(fontsize=7)
    fig.tight_layout()
    tmp = path + ".tmp.png"
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    os.replace(tmp, path)
    return path
