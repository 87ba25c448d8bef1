"""python -m mdu_jax.evaluate --benchmark rwku on one target of ../shared/data/rwku with a tiny model."""

import json

import numpy as np
import pytest

from mdu_jax import evaluate, metrics as M
from mdu_jax.data.sources import load_rwku
from mdu_jax.eval.rwku import PROBE_SETS, probe_prompt
from tests.eval.helpers import tiny_models

SUBJECT = "Stephen King"
FAST = ["--max-examples", "1", "--mc-samples", "2", "--gen-length", "4", "--steps", "4", "--long-gen-length", "4",
        "--buckets", "256,1024,2048", "--no-progress"]


@pytest.fixture(scope="module")
def rwku_run(tmp_path_factory, shared_data):
    folder = tmp_path_factory.mktemp("rwku_eval")
    data = shared_data / "rwku"
    texts = [r["query"] + " " + r["answer"] for c in PROBE_SETS for r in load_rwku(c, SUBJECT, data)]
    texts += [r["text"] for r in load_rwku("mia_forget", SUBJECT, data)[:3]]
    (model,) = tiny_models(folder, texts, seeds=(0,))
    out = folder / "rwku.json"
    assert evaluate.main(["--model", model, "--benchmark", "rwku", "--subject", SUBJECT, "--data-dir", str(data),
                          "--output", str(out), *FAST]) == 0
    return dict(result=json.loads(out.read_text()), model=model, data=data)


def test_rwku_json(rwku_run):
    r = rwku_run["result"]
    a, per = r["aggregates"], r["per_example"]
    assert r["benchmark"] == "rwku" and r["profile"] == "rwku" and r["subject"] == SUBJECT
    for key in PROBE_SETS + ("forget_all", "neighbor_all", "mmlu_acc", "truthfulqa_mc1", "triviaqa_f1",
                             "triviaqa_em", "bbh_em"):
        assert 0.0 <= a[key] <= 1.0, key
    assert a["mia_forget_loss"] > 0 and a["mia_retain_loss"] > 0 and a["fluency_entropy"] >= 0
    for c in PROBE_SETS:
        (row,) = per[c]
        assert row["generation"] and "\n" not in row["generation"]  # cut at newline, NOANSWER if empty
        assert a[c] == pytest.approx(M.rwku_rouge_l_recall(row["generation"], row["answer"]))
    assert per["mmlu"][0]["prediction"] in "ABCD"
    assert len(per["mia_forget"]) == len(per["mia_retain"]) == 1


def test_rwku_prompts():
    row = {"query": "Q?", "type": "affirmative suffix"}
    assert probe_prompt({"query": "He wrote ___"}, 1) == (
        "Please complete the blank in the following question.\nQuestion: He wrote ___\n", "Answer:")
    assert probe_prompt(row, 3) == ("Please briefly answer the following question.\nQuestion: Q?", "")
    assert probe_prompt({"query": "Q?", "type": "incontext learning"}, 3) == (
        "Please briefly answer the following question.\nQ?\n", "Answer:")
    assert probe_prompt({"query": "Q?", "type": "role play"}, 3)[0].endswith("Question: Q?\n")


def test_rwku_unknown_subject(rwku_run, capsys):
    assert evaluate.main(["--model", rwku_run["model"], "--benchmark", "rwku", "--subject", "Nobody",
                          "--data-dir", str(rwku_run["data"]), *FAST]) == 2
    err = capsys.readouterr().err
    assert "no RWKU target 'Nobody'" in err and "Stephen King" in err
