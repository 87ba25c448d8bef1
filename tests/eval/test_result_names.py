"""One naming of TOFU aggregates for both profiles; results on disk under the MDU profile's former
names read back under the current ones (issue 16 item 8), and ``evaluate --help`` prints Min-K%."""

import json

import pytest

from mdu_jax import evaluate
from mdu_jax.eval.results import FORMAT, read_result, write_result


def test_an_mdu_profile_result_with_the_former_names_reads_with_the_current_ones(tmp_path):
    old = {"forget_rougeL_recall": 0.4, "forget_prob": 0.2, "forget_truth_ratio": 0.7, "retain_rougeL_recall": 0.9,
           "retain_prob": 0.6, "retain_truth_ratio": 0.5}
    path = tmp_path / "old.json"
    path.write_text(json.dumps({"format": FORMAT, "benchmark": "tofu", "profile": "mdu", "aggregates": old}))
    assert read_result(path)["aggregates"] == {
        "forget_Q_A_ROUGE": 0.4, "forget_Q_A_Prob": 0.2, "forget_truth_ratio": 0.7, "retain_Q_A_ROUGE": 0.9,
        "retain_Q_A_Prob": 0.6, "retain_Truth_Ratio": 0.5}


def test_open_unlearning_results_read_unchanged(tmp_path):
    aggs = {"forget_Q_A_ROUGE": 0.4, "forget_truth_ratio": 0.7, "retain_Truth_Ratio": 0.5, "model_utility": 0.3}
    path = write_result({"format": FORMAT, "benchmark": "tofu", "profile": "open-unlearning", "aggregates": aggs},
                        tmp_path / "new.json")
    assert read_result(path)["aggregates"] == aggs


def test_evaluate_help_prints_min_k_percent(capsys):
    with pytest.raises(SystemExit) as e:
        evaluate.main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "Min-K% privleak" in out and "%%" not in out
