"""The probes' curves (recovery vs reveal ratio, held-out knowledge vs relearning steps) as PNGs
beside probes.json, from a synthetic probe result (the command's own run is checked in
test_probe_command.py)."""

import math

import matplotlib.image
import pytest

from mdu_jax.eval.probes import plots

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _knowledge(recall, prob):
    return {"fact_recall": recall, "rougeL_recall": 0.5, "prob": prob, "generations": []}


def _result():
    curve = lambda accs: {"ratios": [0.25, 0.5, 0.9], "token_accuracy": accs, "exact_match": accs,  # noqa: E731
                          "hidden_tokens": [6, 4, 1]}
    relearn = lambda before, after5, after20: {  # noqa: E731
        "train_rows": 2, "held_out_rows": 2, "before": _knowledge(*before),
        "steps": {"20": {"held_out": _knowledge(*after20), "train": _knowledge(1.0, 0.9), "final_loss": 0.1},
                  "0": {"held_out": _knowledge(*before), "train": _knowledge(0.0, 0.1), "final_loss": None},
                  "5": {"held_out": _knowledge(*after5), "train": _knowledge(0.5, 0.5), "final_loss": 0.5}}}
    return {"probes": {
        "infilling": {"unlearned": {"random": curve([0.3, 0.4, 0.5]), "prefix": curve([0.2, 0.3, 0.4])},
                      "twin": {"random": curve([0.6, 0.7, 0.8]), "prefix": curve([0.5, 0.6, 0.7])}},
        "relearn": {"unlearned": relearn((0.1, 0.2), (0.3, 0.5), (0.6, 0.8)),
                    "twin": relearn((0.0, 0.1), (0.0, 0.1), (0.05, 0.2))},
        "quantization": {}}}


def _valid_png(path):
    with open(path, "rb") as f:
        assert f.read(8) == PNG_MAGIC, path
    img = matplotlib.image.imread(path)
    assert img.ndim == 3 and img.shape[0] > 300 and img[..., :3].std() > 0.05  # drawn, not blank


def test_relearning_curve_starts_before_relearning_and_follows_the_step_counts():
    r = _result()["probes"]["relearn"]["unlearned"]
    assert plots.relearn_curve(r, "fact_recall") == ([0, 5, 20], [0.1, 0.3, 0.6])
    assert plots.relearn_curve(r, "prob") == ([0, 5, 20], [0.2, 0.5, 0.8])
    r["steps"]["5"]["held_out"]["fact_recall"] = None
    xs, ys = plots.relearn_curve(r, "fact_recall")
    assert xs == [0, 5, 20] and math.isnan(ys[1])


def test_plots_are_written_beside_the_json_for_the_probes_that_have_curves(tmp_path):
    written = plots.write_probe_plots(_result(), str(tmp_path / "probes.json"))
    assert written == {"infilling": str(tmp_path / "probes_infilling.png"),
                       "relearn": str(tmp_path / "probes_relearn.png")}
    for path in written.values():
        _valid_png(path)
    # One panel per reveal order: two orders draw a wider figure than one.
    one = {"probes": {"infilling": {m: {"random": c["random"]} for m, c in _result()["probes"]["infilling"].items()}}}
    only = plots.write_probe_plots(one, str(tmp_path / "one.json"))
    assert list(only) == ["infilling"]
    wide, narrow = (matplotlib.image.imread(p) for p in (written["infilling"], only["infilling"]))
    assert wide.shape[1] > 1.5 * narrow.shape[1]
    assert plots.write_probe_plots({"probes": {"generation": {}}}, str(tmp_path / "g.json")) == {}
    with pytest.raises(ValueError, match="no models"):
        plots.plot_relearn({}, str(tmp_path / "x.png"))
