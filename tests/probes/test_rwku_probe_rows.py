"""``--probes ... --benchmark rwku``: one RWKU target's forget probes (levels 1-3) are the forget
rows and its neighbour probes the retain rows, asked as RWKU's evaluation asks them and scored by
ROUGE-L recall (no key fact), on the local copy of ../shared/data/rwku with a tiny model."""

import json

import pytest

from mdu_jax import evaluate
from mdu_jax.data.encoding import DataError
from mdu_jax.data.sources import load_rwku
from mdu_jax.eval.probes.rwku_rows import FORGET_SETS, NEIGHBOR_SETS, rwku_rows
from mdu_jax.eval.rwku import probe_prompt
from tests.eval.helpers import tiny_models

SUBJECT = "Stephen King"


def test_rows_are_the_targets_probes_in_rwkus_own_prompts(shared_data):
    data = shared_data / "rwku"
    rows = rwku_rows(SUBJECT, data, FORGET_SETS)
    raw = [(level, r) for level, c in enumerate(FORGET_SETS, 1) for r in load_rwku(c, SUBJECT, data)]
    assert len(rows) == len(raw) and {r["level"] for r in rows} == {1, 2, 3}
    for row, (level, r) in zip(rows, raw):
        assert row["question"] == probe_prompt(r, level)[0] and row["answer"] == str(r["answer"])
        assert "fact" not in row
    assert rows[0]["question"].startswith("Please complete the blank") and "___" in rows[0]["question"]
    neighbours = rwku_rows(SUBJECT, data, NEIGHBOR_SETS)
    assert len(neighbours) == sum(len(load_rwku(c, SUBJECT, data)) for c in NEIGHBOR_SETS)
    with pytest.raises(DataError, match="no RWKU target 'Nobody'"):
        rwku_rows("Nobody", data, FORGET_SETS)


def test_the_probe_command_reads_an_rwku_target(shared_data, tmp_path):
    data = shared_data / "rwku"
    texts = [r["query"] + " " + str(r["answer"]) for c in FORGET_SETS + NEIGHBOR_SETS for r in load_rwku(c, SUBJECT, data)]
    (model,) = tiny_models(tmp_path, texts, seeds=(0,))
    out = tmp_path / "probes.json"
    assert evaluate.main(["--probes", "infilling,generation", "--model", model, "--benchmark", "rwku",
                          "--subject", SUBJECT, "--data-dir", str(data), "--max-examples", "3", "--output", str(out),
                          "--reveal-ratios", "0.5", "--leak-samples", "2", "--gen-length", "4", "--steps", "4",
                          "--no-progress"]) == 0
    result = json.loads(out.read_text())
    assert result["rows"] == {"forget": 3, "retain": 3}
    assert result["data"]["benchmark"] == "rwku" and result["data"]["subject"] == SUBJECT
    assert result["data"]["forget_split"] == "+".join(FORGET_SETS)
    g = result["probes"]["generation"]["unlearned"]
    assert g["score"] == "rougeL_recall" and "paraphrased" not in g  # RWKU rows have neither facts nor paraphrases
    assert 0.0 <= g["algorithms"]["low_confidence"]["best_of_k"] <= 1.0
    assert len(result["probes"]["infilling"]["unlearned"]["random"]["token_accuracy"]) == 1
