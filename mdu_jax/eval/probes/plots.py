"""The probes' curves as PNGs, beside ``probes.json``: where a curve says more than the table.

- ``plot_infilling``: hidden-token recovery against the reveal ratio r, one line per model
  (the retain-only reference's line is the floor: what the revealed tokens alone give away),
  one panel per reveal order;
- ``plot_relearn``: the held-out forget rows' knowledge (key-fact recall or ROUGE-L recall, and
  answer probability) against the number of relearning steps, 0 being before relearning, one
  line per model.

``write_probe_plots(result, json_path)`` writes those of the two whose probe is in `result`
next to `json_path` (``probes.json`` -> ``probes_infilling.png``, ``probes_relearn.png``).
"""

from __future__ import annotations

import io
import os
from typing import Any

from mdu_jax.checkpoints import atomic_write
from mdu_jax.eval.probes.table import recall_key


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: str) -> str:
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png")
    _pyplot().close(fig)
    return atomic_write.write_bytes(path, buf.getvalue())


def plot_infilling(by_model: dict[str, dict[str, dict]], path: str) -> str:
    """Recovery of the hidden answer tokens against r, from the infilling probe's result
    ({model: {order: curve}}, curves with 'ratios' and 'token_accuracy'); writes a PNG at `path`."""
    if not by_model:
        raise ValueError("plot_infilling: no models")
    plt = _pyplot()
    orders = list(next(iter(by_model.values())))
    fig, axes = plt.subplots(1, len(orders), figsize=(5.2 * len(orders), 4.0), dpi=110, squeeze=False)
    for ax, order in zip(axes[0], orders):
        for model, curves in by_model.items():
            curve = curves[order]
            ax.plot(curve["ratios"], curve["token_accuracy"], "-o", label=model)
        ax.set_xlabel("reveal ratio r (share of the answer's tokens shown)")
        ax.set_ylabel("hidden tokens recovered")
        ax.set_ylim(-0.02, 1.02)
        ax.set_title(f"partial-reveal attack ({order} order)", fontsize=10)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    return _save(fig, path)


def relearn_curve(model_result: dict[str, Any], key: str) -> tuple[list[int], list[float]]:
    """(steps, values): the held-out rows' `key` ('fact_recall', 'rougeL_recall', 'prob') of one
    model's relearning result before relearning (step 0; a measured 0-step run gives the same
    weights) and after each step count, in step order (NaN where the value is missing)."""
    steps = sorted(int(k) for k in model_result["steps"] if int(k) > 0)
    ys = [model_result["before"].get(key)] + [model_result["steps"][str(k)]["held_out"].get(key) for k in steps]
    return [0] + steps, [float("nan") if v is None else float(v) for v in ys]


def plot_relearn(by_model: dict[str, dict[str, Any]], path: str) -> str:
    """The held-out forget rows' recall and answer probability against the relearning steps (0:
    before relearning), from the relearning probe's result ({model: {'before', 'steps': {k:
    {'held_out', ...}}}}); writes a PNG at `path`."""
    if not by_model:
        raise ValueError("plot_relearn: no models")
    plt = _pyplot()
    first = next(iter(by_model.values()))
    recall = recall_key(first["before"])
    fig, axes = plt.subplots(1, 2, figsize=(10.4, 4.0), dpi=110)
    for ax, key, name in ((axes[0], recall, recall.replace("_", " ")), (axes[1], "prob", "answer probability")):
        for model, r in by_model.items():
            ax.plot(*relearn_curve(r, key), "-o", label=model)
        ax.set_xlabel("relearning steps on the other forget rows")
        ax.set_ylabel(f"held-out forget rows: {name}")
        ax.set_ylim(-0.02, 1.02)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"relearning attack: {first['train_rows']} forget rows fine-tuned on, "
                 f"{first['held_out_rows']} held out", fontsize=10)
    return _save(fig, path)


PLOTS = {"infilling": plot_infilling, "relearn": plot_relearn}


def write_probe_plots(result: dict[str, Any], json_path: str) -> dict[str, str]:
    """{probe: PNG path} of the curves of `result` (``experiments.probes.run_probes``), each
    written beside `json_path` as ``<stem>_<probe>.png``."""
    stem = os.path.splitext(json_path)[0]
    return {probe: plot(result["probes"][probe], f"{stem}_{probe}.png")
            for probe, plot in PLOTS.items() if probe in result.get("probes", {})}


__all__ = ["plot_infilling", "relearn_curve", "plot_relearn", "write_probe_plots"]
