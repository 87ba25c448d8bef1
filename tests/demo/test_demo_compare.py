"""The method comparison on the demo world: its statistics (hand-computed), its config (declared
rule, clear errors) and a tiny end-to-end run of the real pipeline."""

import json
import math
import os

import numpy as np
import pytest
from scipy import stats

from mdu_jax.demo import compare, compare_stats
from mdu_jax.train import main as train_main
from mdu_jax.typed_config import ConfigKeyError

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SHIPPED = os.path.join(ROOT, "configs", "demo_compare.yaml")


def test_mean_and_sample_sd():
    assert compare_stats.mean_sd([1.0, 2.0, 4.0]) == pytest.approx((7 / 3, math.sqrt(7 / 3)))  # ddof 1
    assert compare_stats.mean_sd([0.5]) == (0.5, 0.0)
    m, s = compare_stats.mean_sd([None, float("nan")])
    assert math.isnan(m) and math.isnan(s)


def test_selection_rule_takes_the_best_forget_metric_among_cells_that_keep_utility():
    def seeds(*pairs):  # (KS statistic, utility) per seed
        return {i: {"forget_ks_statistic": ks, "model_utility": u} for i, (ks, u) in enumerate(pairs)}

    # cell -> {seed: aggregates}; the KS statistic is lower-is-better
    cells = {"a": seeds((0.1, 0.50), (0.1, 0.52)), "b": seeds((0.3, 0.80), (0.2, 0.80)),
             "c": seeds((0.6, 0.90), (0.6, 0.90))}
    kw = dict(metric="forget_ks_statistic", utility_key="model_utility")
    assert compare_stats.select_cell(cells, utility_floor=0.75, **kw) == ("b", True)   # a is below the floor
    assert compare_stats.select_cell(cells, utility_floor=0.40, **kw) == ("a", True)
    assert compare_stats.select_cell(cells, utility_floor=0.95, **kw) == ("c", False)  # none keeps it: best utility
    assert compare_stats.select_cell(cells, utility_floor=0.0, metric="model_utility", utility_key="model_utility") \
        == ("c", True)


def test_paired_test_over_seeds_is_scipys_ttest_rel():
    ref = {0: {"x": 1.0}, 1: {"x": 2.0}, 2: {"x": 3.0}, 3: {"x": 5.0}}
    mine = {0: {"x": 1.5}, 1: {"x": 2.1}, 2: {"x": 3.9}, 4: {"x": 9.0}}  # seed 4 has no partner
    got = compare_stats.paired_test(mine, ref, "x")
    assert got["n"] == 3 and got["mean_diff"] == pytest.approx((0.5 + 0.1 + 0.9) / 3)
    d = np.array([0.5, 0.1, 0.9])
    t = d.mean() / (d.std(ddof=1) / math.sqrt(3))  # the paired t statistic by hand
    assert got["p"] == pytest.approx(2 * stats.t.sf(abs(t), df=2), rel=1e-9)
    assert compare_stats.paired_test({0: {"x": 1.0}, 1: {"x": 2.0}}, {0: {"x": 0.0}, 1: {"x": 1.0}}, "x")["p"] is None
    # Differences equal up to float rounding (-0.1 twice, as 0.3 - 0.4 and 0.4 - 0.5, 6e-17 apart) have no
    # t statistic either; scipy would report a spurious p ~ 1e-16.
    assert np.ptp([0.3 - 0.4, 0.4 - 0.5]) > 0
    assert compare_stats.paired_test({0: {"x": 0.3}, 1: {"x": 0.4}}, {0: {"x": 0.4}, 1: {"x": 0.5}}, "x")["p"] is None


def test_paired_question_test_is_a_wilcoxon_signed_rank_test():
    a, b = [0.9, 0.8, 0.7, 0.95, 0.6, 0.85], [0.5, 0.81, 0.2, 0.3, 0.65, 0.1]
    got = compare_stats.paired_question_test(a, b)
    assert got["n"] == 6 and got["p"] == pytest.approx(stats.wilcoxon(a, b).pvalue)
    assert compare_stats.paired_question_test([1.0, 2.0], [1.0, 2.0])["p"] is None
    with pytest.raises(ValueError, match=r"\(3,\) values against \(2,\)"):
        compare_stats.paired_question_test([1, 2, 3], [1, 2])


def test_shipped_config_declares_every_method_the_grid_seeds_and_rule():
    run = compare.load_compare_config(SHIPPED, [])
    methods = {m.method for m in run.compare.methods}
    assert {"mdu", "ga", "graddiff", "npo", "simnpo", "me_gd", "idkpo"} <= methods
    assert len([m for m in run.compare.methods if m.method == "mdu"]) >= 2  # several tau
    assert len(run.compare.seeds) >= 3 and run.compare.reference == "MDU tau=1"
    assert run.compare.select_metric in compare_stats.DIRECTION and 0 < run.compare.utility_fraction <= 1
    # The comparison shares the demo's SFT cache: same world, recipe, evaluation and output folder.
    default = compare.pipeline.load_demo_config(os.path.join(ROOT, "configs", "demo.yaml"), [])
    assert (run.demo, run.eval, run.output_dir) == (default.demo, default.eval, default.output_dir)


@pytest.mark.parametrize("override, message", [
    ("compare.reference=PPO", r"compare.reference: 'PPO' is not one of the methods"),
    ("compare.select_metric=rouge", r"compare.select_metric: expected one of"),
    ("compare.seeds=[0,0,1]", r"compare.seeds: expected distinct seeds"),
    ("compare.lrs=[]", r"compare.lrs / steps / seeds: expected non-empty lists"),
])
def test_bad_compare_settings_are_clear_errors(override, message):
    with pytest.raises(ConfigKeyError, match=message):
        compare.load_compare_config(SHIPPED, [override])


def test_a_bad_method_in_the_comparison_names_the_allowed_ones(tmp_path, capsys):
    path = tmp_path / "c.yaml"
    path.write_text("demo: {size: ci}\ncompare:\n  methods: [{name: X, method: gradient_ascent}]\n  reference: X\n")
    with pytest.raises(ConfigKeyError,
                       match=r"compare.methods\[0\] \('X'\): objective.method: unknown 'gradient_ascent'"):
        compare.load_compare_config(str(path), [])
    # From the command line: exit code 2, the message on stderr, nothing written.
    assert train_main(["--config", str(path), f"output_dir={tmp_path / 'never'}"]) == 2
    assert "unknown 'gradient_ascent'" in capsys.readouterr().err and not (tmp_path / "never").exists()


@pytest.mark.slow
def test_tiny_comparison_end_to_end_writes_table_plot_and_resumes(tmp_path, capsys, tiny_cache):
    """Two methods x one cell x two seeds on a tiny world and model (plumbing, not conclusions:
    20 SFT steps teach nothing), from the session's tiny SFT model and twin (tests/demo/conftest.py)."""
    path = tmp_path / "c.yaml"
    path.write_text(
        "demo: {size: ci}\nsft: {steps: 20}\neval: {mc_samples: 2, max_examples: 4, anchor_ratios: [1.0]}\n"
        "compare:\n  methods: [{name: MDU, method: mdu, tau: 1.0}, {name: GA, method: ga}]\n"
        "  lrs: [2.5e-4]\n  steps: [2]\n  seeds: [0, 1]\n  reference: MDU\n  utility_fraction: 0.0\n")
    out = tiny_cache(tmp_path / "run")
    # run_compare, not the command line: that one also turns on JAX's process-wide compilation cache.
    summary = compare.run_compare(compare.load_compare_config(str(path), [f"output_dir={out}"]), progress=False)
    assert json.loads((out / "compare" / "compare.json").read_text())["table"] == summary["table"]
    rows = {r["name"]: r for r in summary["rows"]}
    assert set(rows) == {"MDU", "GA"} and all(r["seeds"] == 2 and r["kept_floor"] for r in rows.values())
    assert rows["GA"]["tests"]["model_utility"]["n"] == 2
    assert (out / "compare" / "compare.png").stat().st_size > 1000
    table = (out / "compare" / "compare.md").read_text()
    assert "| GA | 0.00025 | 2 | 2 | yes |" in table and "selection rule" in table
    first = capsys.readouterr().out
    # A second run keeps every finished run (no training: cell.json matches) and prints the same table.
    again = compare.run_compare(compare.load_compare_config(str(path), [f"output_dir={out}"]), progress=False)
    assert again["table"] == summary["table"] and summary["table"] in capsys.readouterr().out
    assert summary["table"] in first and again["total_s"] < summary["total_s"]
