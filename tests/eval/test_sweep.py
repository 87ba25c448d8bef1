"""The tau sweep: train MDU per tau on the demo's CI world, evaluate each, write the table and PNG;
the plot/table helpers on synthetic results."""

import csv

import matplotlib.image
import numpy as np
import pytest
import yaml

from mdu_jax import sweep_eval
from mdu_jax.demo import DemoConfig, prepare_demo
from mdu_jax.eval import sweep
from mdu_jax.eval.results import read_result


def _result(mu, fq, rouge):
    return {"benchmark": "tofu", "aggregates": {"model_utility": mu, "forget_quality": fq, "forget_Q_A_ROUGE": rouge}}


def test_rows_table_and_plot_from_results(tmp_path):
    results = [(1.0, _result(0.6, 1e-3, 0.8)), (0.0, _result(0.4, 0.2, 0.3)), (0.5, _result(0.5, 0.02, 0.5))]
    rows = sweep.sweep_rows(results)
    assert [r["tau"] for r in rows] == [0.0, 0.5, 1.0]
    assert rows[0]["forget_quality"] == 0.2 and rows[2]["model_utility"] == 0.6 and rows[1]["privleak"] is None
    path = sweep.write_table(rows, str(tmp_path / "t.csv"))
    with open(path) as f:
        read = list(csv.DictReader(f))
    assert [float(r["tau"]) for r in read] == [0.0, 0.5, 1.0] and read[1]["privleak"] == ""
    png = sweep.plot_rows(rows, str(tmp_path / "p.png"))
    img = matplotlib.image.imread(png)
    assert img.ndim == 3 and img.shape[0] > 300 and img[..., :3].std() > 0.05
    # The demo pipeline's call: results and taus, plus the model before unlearning.
    png = sweep.plot_tradeoff([r for _, r in results], [t for t, _ in results], str(tmp_path / "b.png"),
                              baseline=_result(0.7, 1e-4, 0.95))
    assert matplotlib.image.imread(png).shape == img.shape
    with pytest.raises(ValueError, match="3 results for 2 tau"):
        sweep.plot_tradeoff([r for _, r in results], [0, 1], str(tmp_path / "c.png"))
    rows[1]["forget_quality"] = None
    sweep.plot_rows(rows, str(tmp_path / "rouge.png"))  # falls back to forget ROUGE
    with pytest.raises(ValueError, match="no forget_quality"):
        sweep.plot_rows(rows, str(tmp_path / "x.png"), y="forget_quality")
    with pytest.raises(ValueError, match="expected 'tofu'"):
        sweep.sweep_rows([(0.0, {"benchmark": "rwku"})])


@pytest.mark.slow
def test_sweep_command_trains_evaluates_and_plots(tmp_path):
    assets = prepare_demo(DemoConfig.ci(), tmp_path / "demo")
    names = assets.split_names
    cfg = {"model": {"path": assets.model_dir, "dtype": "float32"},
           "data": {"benchmark": "tofu", "data_dir": assets.data_dir, "forget_split": names["forget"],
                    "retain_split": names["retain"], "max_examples": 4, "max_length": 64, "buckets": [64]},
           "objective": {"method": "mdu"}, "optim": {"lr": 1e-3, "warmup_ratio": 0.0},
           "parallel": {"mesh": {"data": 1, "fsdp": 1, "tensor": 1}, "num_devices": 1},
           "tensorboard": False, "batch_size": 4, "max_steps": 1, "output_dir": str(tmp_path / "runs")}
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    assert sweep_eval.main(["--config", str(tmp_path / "cfg.yaml"), "--taus", "0,1", "--max-examples", "2",
                            "--mc-samples", "2", "--gen-length", "4", "--steps", "4", "--buckets", "64",
                            "--no-privacy", "--no-progress"]) == 0
    runs = tmp_path / "runs"
    for tau in ("0", "1"):
        r = read_result(runs / f"tau={tau}" / "eval_tofu.json")
        assert r["tau"] == float(tau) and 0 <= r["aggregates"]["model_utility"] <= 1
        assert r["splits"]["real_authors"] == "real_authors_perturbed"  # the demo's background facts
    with open(runs / "sweep_tau.csv") as f:
        rows = list(csv.DictReader(f))
    assert [float(r["tau"]) for r in rows] == [0.0, 1.0]
    img = matplotlib.image.imread(runs / "sweep_tau.png")
    assert img.ndim == 3 and np.asarray(img[..., :3]).std() > 0.05
