"""Sequential unlearning and the timestep-band sweep on the demo world: the forget groups, the
configs' clear errors (nothing written), the tables, and one tiny end-to-end run of each that
shares its SFT model and twin (plumbing, not conclusions: 20 SFT steps teach nothing)."""

import glob
import json
import os

import matplotlib.image
import pytest
import yaml

from mdu_jax.demo import pipeline, sequential, sequential_report
from mdu_jax.demo.world import build_world
from mdu_jax.eval import sweep
from mdu_jax.eval.subsets import forget_subset
from mdu_jax.train import main as train_main
from mdu_jax.typed_config import ConfigKeyError

from tests.demo.conftest import TINY

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _valid_png(path):
    with open(path, "rb") as f:
        assert f.read(8) == PNG_MAGIC, path
    img = matplotlib.image.imread(path)
    assert img.ndim == 3 and img[..., :3].std() > 0.05


def test_forget_groups_partition_the_forget_authors_in_order():
    world = build_world(**pipeline.DemoConfig().world_kwargs())  # 4 forget authors
    for k, sizes in ((2, [2, 2]), (3, [2, 1, 1]), (4, [1, 1, 1, 1])):
        groups = sequential.forget_groups(world, k)
        assert [len(g) for g in groups] == sizes
        assert [i for g in groups for i in g] == list(world.forget)  # disjoint, complete, in order
    with pytest.raises(ConfigKeyError, match="5 groups of the world's 4 forget authors"):
        sequential.forget_groups(world, 5)


def _config(tmp_path, text):
    path = tmp_path / "s.yaml"
    path.write_text(text)
    return str(path)


@pytest.mark.parametrize("extra, message", [
    ("sequential: {groups: 3}\n", "sequential.groups: 3 groups of the world's 2 forget authors"),
    ("sequential: {groups: 1}\n", "sequential.groups: expected >= 2 rounds"),
    ("sequential: {groups: 2}\ntaus: [0.5, 1.0]\n", "taus / t_bands: sequential unlearning runs one objective"),
    ("sequential: {groups: 2}\neval: {max_examples: 4}\n", "eval.max_examples: 4 leaves some of the 10 forget"),
])
def test_a_bad_sequential_config_is_a_clear_error_and_writes_nothing(tmp_path, capsys, extra, message):
    config = _config(tmp_path, "demo: {size: ci}\n" + extra)
    assert train_main(["--config", config, f"output_dir={tmp_path / 'never'}"]) == 2
    assert message in capsys.readouterr().err and not (tmp_path / "never").exists()


@pytest.mark.parametrize("bands, message", [
    ("[[0.5, 0.2]]", "t_bands[0]: [0.5, 0.2] is not a band"),
    ("[[0.2, 0.5], [0.4, 1.5]]", "t_bands[1]: [0.4, 1.5] is not a band"),
    ("[[0.0, 0.3]]", "at t = 0 nothing is masked"),
    ("[[0.3, 0.3]]", "expected [lo, hi] with 0 < lo < hi <= 1"),
    ("[]", "t_bands: expected at least one band"),
    ("[[0.1, 0.5], [0.1, 0.5]]", "t_bands: expected distinct bands"),
])
def test_a_bad_band_is_a_clear_error_and_writes_nothing(tmp_path, capsys, bands, message):
    config = _config(tmp_path, f"demo: {{size: ci}}\nt_bands: {bands}\n")
    assert train_main(["--config", config, f"output_dir={tmp_path / 'never'}"]) == 2
    assert message in capsys.readouterr().err and not (tmp_path / "never").exists()


def test_shipped_configs_resolve_and_share_the_demo_cache():
    default = pipeline.load_demo_config(os.path.join(ROOT, "configs", "demo.yaml"), [])
    seq = sequential.load_sequential_config(os.path.join(ROOT, "configs", "demo_sequential.yaml"), [])
    bands = pipeline.load_demo_config(os.path.join(ROOT, "configs", "demo_t_bands.yaml"), [])
    for run in (seq, bands):
        assert (run.demo, run.eval, run.output_dir, run.objective) == (default.demo, default.eval, default.output_dir,
                                                                       default.objective)
    assert sequential.plan(seq)[1] and len(bands.t_bands) >= 4
    swept, variants = pipeline.sweep_objectives(bands)
    assert swept == "t_range" and [o.t_range for _, o in variants] == bands.t_bands
    # The band [time_eps, 1] draws t exactly as the unbanded objective does: the control.
    assert [default.objective.time_eps, 1.0] in bands.t_bands


def test_band_sweep_rows_keep_the_band_order_and_name_each_band(tmp_path):
    def result(mu, ks):
        return {"benchmark": "tofu", "aggregates": {"model_utility": mu, "forget_ks_statistic": ks,
                                                     "forget_Q_A_ROUGE": 0.5, "forget_fact_recall": ks}}
    pairs = [([0.67, 1.0], result(0.7, 0.4)), ([0.001, 0.33], result(0.6, 0.2)), ([0.001, 1.0], result(0.5, 0.1))]
    cols = ("model_utility", "forget_ks_statistic", "forget_fact_recall")
    rows = sweep.sweep_rows(pairs, param="t_range", columns=cols)
    assert [r["t_range"] for r in rows] == [[0.67, 1.0], [0.001, 0.33], [0.001, 1.0]]  # not sorted
    text = sweep.table_text(rows, param="t_range", columns=cols)
    assert len(text.splitlines()) == 4 and "[0.001, 0.33]" in text.splitlines()[2]
    csv_text = open(sweep.write_table(rows, str(tmp_path / "b.csv"), param="t_range", columns=cols)).read()
    assert csv_text.splitlines()[1].startswith('"[0.67, 1]",0.7,0.4')
    _valid_png(sweep.plot_rows(rows, str(tmp_path / "b.png"), y="forget_ks_statistic", param="t_range"))
    with pytest.raises(ValueError, match="param: expected one of"):
        sweep.sweep_rows(pairs, param="lr")


def _rounds():
    def group(recall):
        return {"rows": 5, "forget_fact_recall": recall, "forget_Q_A_Prob": 0.5, "forget_Q_A_ROUGE": 0.5,
                "forget_short_rate": 0.0, "forget_ks_statistic": 0.2, "forget_quality": 0.9}
    rounds = [{"round": r, "unlearned_group": r or None, "aggregates": {"model_utility": 0.7},
               "groups": [group(0.9 - 0.4 * r), group(0.8 - 0.1 * r)]} for r in range(3)]
    return rounds, {"aggregates": {"model_utility": 0.6}, "groups": [group(0.0), group(0.1)]}


def test_the_table_has_every_group_after_every_round():
    rounds, twin = _rounds()
    groups = [{"group": 1, "people": ["A B"]}, {"group": 2, "people": ["C D"]}]
    table = sequential_report.markdown_tables(rounds, twin, groups)
    assert "| 2 | 2 (C D) | 0.700 |" in table
    assert "| 2 | 1 | unlearned in round 1 | 5 | 0.100 |" in table      # round 1's group, after round 2
    assert "| 1 | 2 | not yet unlearned | 5 | 0.700 |" in table
    assert "| retain-only twin | 2 | never saw it (floor) | 5 | 0.100 |" in table


@pytest.fixture(scope="module")
def tiny_out(tmp_path_factory, tiny_cache):
    """One output folder for both end-to-end runs, holding the session's tiny SFT model, twin and
    their evaluations (tests/demo/conftest.py): both runs start at unlearning."""
    return tiny_cache(tmp_path_factory.mktemp("demo_seq") / "run")


@pytest.mark.slow
def test_sequential_rounds_report_every_earlier_group_and_resume(tiny_out, tmp_path, monkeypatch, capsys):
    config = _config(tmp_path, TINY + "sequential: {groups: 2}\n")
    run = sequential.load_sequential_config(config, [f"output_dir={tiny_out}"])
    calls = []
    real = pipeline._unlearn

    def recording(run_, assets, start_dir, out_dir, cache, progress, forget_people=None):
        calls.append((start_dir, forget_people))
        return real(run_, assets, start_dir, out_dir, cache, progress, forget_people)

    monkeypatch.setattr(pipeline, "_unlearn", recording)
    # run_sequential, not the command line: that one also turns on JAX's process-wide compilation cache.
    summary = sequential.run_sequential(run, progress=False)
    out = tiny_out / "sequential"
    world = build_world(**pipeline.demo_config(run).world_kwargs())
    groups = sequential.forget_groups(world, 2)
    # Round 1 unlearns group 1 from the SFT model, round 2 group 2 from round 1's model.
    assert calls == [(summary["rounds"][0]["model"], groups[0]), (str(out / "round1" / "final"), groups[1])]
    for name in ("sequential.json", "sequential.md"):
        assert (out / name).stat().st_size > 0
    _valid_png(out / "sequential.png")
    saved = json.loads((out / "sequential.json").read_text())
    assert saved["tables"] == summary["tables"] and [r["round"] for r in saved["rounds"]] == [0, 1, 2]
    assert "retain-only twin" in saved["reference"]
    # After round 2, group 1 (unlearned in round 1) is reported, read off round 2's own evaluation.
    group1 = [f.question for i in groups[0] for f in world.people[i].facts]
    round2_eval = json.loads((out / "round2" / "eval.json").read_text())
    (twin_path,) = glob.glob(str(tiny_out / "cache" / "eval-twin-*.json"))
    twin = json.loads(open(twin_path).read())
    got = saved["rounds"][2]["groups"][0]
    assert got == pytest.approx(forget_subset(round2_eval, group1, reference=twin))
    assert got["rows"] == 5 and 0.0 <= got["forget_ks_statistic"] <= 1.0
    table = (out / "sequential.md").read_text()
    assert "| 2 | 1 | unlearned in round 1 |" in table and "| 2 | 2 | unlearned this round |" in table
    # Resume: round 1 finished and kept, round 2 interrupted (no round.json): only round 2 trains.
    round1 = (out / "round1" / "round.json").read_text()
    (out / "round2" / "round.json").unlink()
    calls.clear()
    again = sequential.run_sequential(run, progress=False)
    assert calls == [(str(out / "round1" / "final"), groups[1])]  # round 2 only, from round 1's model
    assert (out / "round1" / "round.json").read_text() == round1
    assert again["rounds"][1] == summary["rounds"][1]


@pytest.mark.slow
def test_band_sweep_writes_one_row_per_band(tiny_out, tmp_path):
    config = _config(tmp_path, TINY + "t_bands: [[0.5, 1.0], [0.001, 0.5]]\n")
    run = pipeline.load_demo_config(config, [f"output_dir={tiny_out}"])
    summary = pipeline.run_demo(run, progress=False)
    assert [r["t_range"] for r in summary["sweep"]] == [[0.5, 1.0], [0.001, 0.5]]
    lines = (tiny_out / "sweep_t_range.csv").read_text().splitlines()
    assert len(lines) == 3 and lines[1].startswith('"[0.5, 1]",') and lines[2].startswith('"[0.001, 0.5]",')
    assert all(0.0 <= r["model_utility"] <= 1.0 and r["retain_fact_recall"] is not None for r in summary["sweep"])
    _valid_png(tiny_out / "t_band_tradeoff.png")
    assert set(summary["models"]) >= {"mdu_tau1_t0.5-1", "mdu_tau1_t0.001-0.5"}
    # Each band's run trained with its band: the run config records objective.t_range.
    for folder, band in (("mdu_tau1_t0.5-1", [0.5, 1.0]), ("mdu_tau1_t0.001-0.5", [0.001, 0.5])):
        assert yaml.safe_load((tiny_out / folder / "config.yaml").read_text())["objective"]["t_range"] == band
