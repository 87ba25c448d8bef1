"""python -m mdu_jax.evaluate on the real TOFU files with tiny models: the JSON, its aggregates
recomputed from its own per-example values, forget quality against a retain reference, errors."""

import json
import re

import numpy as np
import pytest
import scipy.stats
from rouge_score import rouge_scorer

from mdu_jax import evaluate, metrics as M
from tests.eval.helpers import tiny_models, tofu_texts

N = 2  # rows per split
# Two length buckets: every likelihood / sampler program is compiled once or twice.
FAST = ["--max-examples", str(N), "--mc-samples", "2", "--gen-length", "4", "--steps", "4", "--buckets", "128,256",
        "--no-progress"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory, shared_data):
    folder = tmp_path_factory.mktemp("tofu_eval")
    tofu = shared_data / "tofu"
    model, retain_model = tiny_models(folder, tofu_texts(tofu, N))
    ref = folder / "retain_eval.json"
    assert evaluate.main(["--model", retain_model, "--benchmark", "tofu", "--forget-split", "forget10",
                          "--data-dir", str(tofu), "--output", str(ref), *FAST]) == 0
    out = folder / "eval.json"
    assert evaluate.main(["--model", model, "--benchmark", "tofu", "--forget-split", "forget10",
                          "--data-dir", str(tofu), "--retain-reference", str(ref), "--output", str(out), *FAST]) == 0
    return dict(folder=folder, tofu=tofu, model=model, retain_model=retain_model,
                ref=json.loads(ref.read_text()), result=json.loads(out.read_text()), ref_path=ref)


def test_json_has_every_metric_in_range(setup):
    r = setup["result"]
    a = r["aggregates"]
    assert r["benchmark"] == "tofu" and r["forget_split"] == "forget10" and r["profile"] == "open-unlearning"
    assert r["splits"] == {"forget": "forget10_perturbed", "retain": "retain_perturbed",
                           "real_authors": "real_authors_perturbed", "world_facts": "world_facts_perturbed",
                           "holdout": "holdout10"}
    for kind in ("forget", "retain", "real_authors", "world_facts", "holdout"):
        assert len(r["per_example"][kind]) == N
    unit = list(M.MODEL_UTILITY_KEYS) + ["model_utility", "forget_quality", "forget_Q_A_ROUGE", "forget_Q_A_Prob",
                                         "forget_truth_ratio", "extraction_strength", "exact_memorization",
                                         "mia_min_k", "mia_loss"]
    for key in unit:
        assert a[key] is not None and 0.0 <= a[key] <= 1.0, (key, a.get(key))
    assert np.isfinite(a["privleak"])
    assert r["retain_reference"] == str(setup["ref_path"])
    for row in r["per_example"]["forget"]:
        assert 0 < row["prob"] <= 1 and row["truth_ratio"] > 0 and len(row["perturbed_avg_nll"]) == 5
    for row in r["per_example"]["real_authors"]:
        assert len(row["perturbed_avg_nll"]) == 3


def test_aggregates_follow_from_the_per_example_values(setup):
    r, ref = setup["result"], setup["ref"]
    a, per = r["aggregates"], r["per_example"]
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    for kind, p in (("forget", "forget"), ("retain", "retain"), ("real_authors", "ra"), ("world_facts", "wf")):
        rows = per[kind]
        recall = [scorer.score(x["answer"], x["generation"])["rougeL"].recall for x in rows]
        assert a[f"{p}_Q_A_ROUGE"] == pytest.approx(np.mean(recall))
        for x in rows:
            assert x["prob"] == pytest.approx(np.exp(-x["avg_nll"]))
            correct = x.get("paraphrased_avg_nll", x["avg_nll"])
            want = np.exp(-np.mean(x["perturbed_avg_nll"])) / (np.exp(-correct) + 1e-10)
            assert x["truth_ratio"] == pytest.approx(want)
    R = np.array([x["truth_ratio"] for x in per["forget"]])
    assert a["forget_truth_ratio"] == pytest.approx(np.mean(np.minimum(R, 1 / R)))
    R = np.array([x["truth_ratio"] for x in per["retain"]])
    assert a["retain_Truth_Ratio"] == pytest.approx(np.mean(np.maximum(0, 1 - R)))
    x = per["world_facts"][0]
    p = np.exp(-x["avg_nll"])
    assert x["prob_normalised"] == pytest.approx(p / (p + np.exp(-np.array(x["perturbed_avg_nll"])).sum()))
    assert a["model_utility"] == pytest.approx(scipy.stats.hmean([a[k] for k in M.MODEL_UTILITY_KEYS]))
    ours, theirs = [x["truth_ratio"] for x in per["forget"]], [x["truth_ratio"] for x in ref["per_example"]["forget"]]
    ks = scipy.stats.ks_2samp(ours, theirs)
    assert a["forget_quality"] == pytest.approx(ks.pvalue)
    # The distances beside the p-value, and the answer-shape checks, from the same per-example values.
    assert a["forget_ks_statistic"] == pytest.approx(ks.statistic)
    assert a["forget_log_tr_w1"] == pytest.approx(scipy.stats.wasserstein_distance(np.log(ours), np.log(theirs)))
    for kind in ("forget", "retain"):
        words = [len(re.findall(r"\w+", x["generation"])) for x in per[kind]]
        assert a[f"{kind}_empty_rate"] == pytest.approx(np.mean([w == 0 for w in words]))
        assert a[f"{kind}_short_rate"] == pytest.approx(np.mean([w <= 2 for w in words]))
        assert a[f"{kind}_mean_words"] == pytest.approx(np.mean(words))
    ref_words = [len(re.findall(r"\w+", x["generation"])) for x in ref["per_example"]["forget"]]
    if np.mean(ref_words) > 0:
        assert a["forget_relative_length"] == pytest.approx(a["forget_mean_words"] / np.mean(ref_words))
    # TOFU's files carry no key facts: no fact recall; no judge was given: no fluency score.
    assert not [k for k in a if k.endswith("_fact_recall")] and "forget_judge_nll" not in a
    assert ref["aggregates"]["forget_quality"] is None  # no reference of its own
    assert a["privleak"] == pytest.approx(M.privleak(a["mia_min_k"], ref["aggregates"]["mia_min_k"]))
    assert a["mia_min_k"] == pytest.approx(M.mia_auc([x["min_k"] for x in per["forget"]],
                                                     [x["min_k"] for x in per["holdout"]]))
    assert a["extraction_strength"] == pytest.approx(np.mean([x["extraction_strength"] for x in per["forget"]]))


def test_mdu_profile(setup, tmp_path):
    out = tmp_path / "mdu.json"
    assert evaluate.main(["--model", setup["model"], "--benchmark", "tofu", "--profile", "mdu", "--forget-split",
                          "forget10", "--data-dir", str(setup["tofu"]), "--no-real-authors", "--no-world-facts",
                          "--output", str(out), *FAST]) == 0
    r = json.loads(out.read_text())
    a = r["aggregates"]
    assert r["settings"]["estimator"] == "eq14" and r["settings"]["seed"] == 42
    # The open-unlearning profile's names (issue 16 item 8: one naming for both profiles), and the
    # answer-shape checks every profile reports (issue 15: degenerate forgetting).
    shape = {f"{s}_{k}" for s in ("forget", "retain") for k in ("empty_rate", "short_rate", "mean_words")}
    assert set(a) == {"forget_Q_A_ROUGE", "forget_Q_A_Prob", "forget_truth_ratio", "retain_Q_A_ROUGE",
                      "retain_Q_A_Prob", "retain_Truth_Ratio",
                      # issue 19: TOFU's axes from the profile's own estimators (no reference: no FQ)
                      "model_utility", "forget_quality", "retain_truth_ratio_utility"} | shape
    assert a["forget_quality"] is None
    for x in r["per_example"]["forget"]:
        # raw TR: ground truth vs the first 3 perturbed answers, no min/max transform
        assert len(x["perturbed_avg_nll"]) == 3
        assert x["truth_ratio"] == pytest.approx(np.exp(x["avg_nll"] - np.mean(x["perturbed_avg_nll"])))
    assert a["forget_truth_ratio"] == pytest.approx(np.mean([x["truth_ratio"] for x in r["per_example"]["forget"]]))


def test_bad_inputs_are_clear_errors(setup, tmp_path, capsys):
    tofu = str(setup["tofu"])
    common = ["--benchmark", "tofu", "--data-dir", tofu, *FAST]
    # A split that does not exist.
    assert evaluate.main(["--model", setup["model"], "--forget-split", "forget07", *common]) == 2
    err = capsys.readouterr().err
    assert "no split 'forget07_perturbed'" in err and "forget10_perturbed" in err
    # A folder that is not a checkpoint.
    assert evaluate.main(["--model", tofu, *common]) == 2
    assert "neither an HF checkpoint" in capsys.readouterr().err
    # A retain reference evaluated on another forget split.
    other = tmp_path / "retain_forget01.json"
    assert evaluate.main(["--model", setup["retain_model"], "--forget-split", "forget01", "--no-real-authors",
                          "--no-world-facts", "--no-privacy", "--output", str(other), *common]) == 0
    capsys.readouterr()
    assert evaluate.main(["--model", setup["model"], "--forget-split", "forget10", "--retain-reference", str(other),
                          "--output", str(tmp_path / "x.json"), *common]) == 2
    err = capsys.readouterr().err
    assert "made for forget split 'forget01'" in err and "'forget10'" in err
    assert not (tmp_path / "x.json").exists()
    # A reference on other rows of the same split, and a file that is not a result.
    assert evaluate.main(["--model", setup["model"], "--retain-reference", str(setup["ref_path"]),
                          "--max-examples", "1", *common[:-len(FAST)], *FAST[2:]]) == 2
    assert "different rows" in capsys.readouterr().err
    bogus = tmp_path / "bogus.json"
    bogus.write_text("{}")
    assert evaluate.main(["--model", setup["model"], "--retain-reference", str(bogus), *common]) == 2
    assert "not an mdu_jax evaluation result" in capsys.readouterr().err


def test_dream_model_and_python_api(tmp_path, shared_data):
    """evaluate_tofu as the demo calls it (a training split name for retain), on a tiny Dream."""
    import mdu_jax as mj
    from mdu_jax.eval.report import format_table
    from mdu_jax.eval.tofu import evaluate_tofu

    (model,) = tiny_models(tmp_path, tofu_texts(shared_data / "tofu", 1), seeds=(0,), family="dream")
    cfg, params, tok = mj.load_pretrained(model)
    r = evaluate_tofu(cfg, params, tok, data_dir=str(shared_data / "tofu"), forget_split="forget10",
                      retain_split="retain90", include_real_authors=False, include_world_facts=False,
                      max_examples=1, mc_samples=2, gen_length=4, steps=4, buckets=(128, 256), progress=False)
    assert r["family"] == "dream" and r["splits"]["retain"] == "retain_perturbed"
    assert r["settings"]["algorithm"] == "entropy"
    a = r["aggregates"]
    assert 0 <= a["model_utility"] <= 1 and 0 <= a["extraction_strength"] <= 1 and a["forget_quality"] is None
    assert any("harmonic mean of 3 components" in n for n in r["notes"])
    table = format_table(r)
    assert "model_utility" in table and "TOFU (open-unlearning profile)" in table
