"""The anchor probe against probabilities computed one row at a time from the model's forward pass."""

import json

import jax
import numpy as np
import pytest

import mdu_jax as mj
from mdu_jax.demo.assets import DemoConfig, prepare_demo
from mdu_jax.eval import scoring as S
from mdu_jax.eval.anchor_probe import STATS, VIEWS, anchor_probe


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    assets = prepare_demo(DemoConfig.ci(num_people=8, hidden_size=32, num_layers=1, num_heads=2,
                                        intermediate_size=64), tmp_path_factory.mktemp("probe") / "demo")
    rows = json.loads(open(f"{assets.data_dir}/{assets.split_names['forget']}.json").read())[:3]
    return mj.load_pretrained(assets.model_dir), rows


def test_fully_masked_views_match_row_by_row_forward(demo):
    (cfg, params, tok), rows = demo
    got = anchor_probe(cfg, params, tok, rows, ratios=[1.0], rows_per_forward=4)
    assert set(got) == set(VIEWS) and set(got["prompt_masked"]) == {"1"}
    want = {v: {k: [] for k in STATS} for v in VIEWS}
    for row in rows:
        prompt, response = S.response_ids(tok, row["question"], row["answer"])
        n = S.content_length(tok, response)  # answer tokens, not the end-of-turn tail
        views = {"conditional": prompt, "prompt_masked": [cfg.mask_token_id] * len(prompt)}
        for view, head in views.items():
            ids = np.asarray([head + [cfg.mask_token_id] * len(response)], np.int32)
            p = np.asarray(jax.nn.softmax(mj.forward(cfg, params, ids)[0].astype(np.float32), axis=-1))
            for j in range(n):
                pos, true = len(prompt) + j, response[j]
                want[view]["p_true"].append(p[pos, true])
                want[view]["p_eos"].append(p[pos, cfg.eos_token_id])
                want[view]["argmax_eos"].append(float(p[pos].argmax() == cfg.eos_token_id))
                want[view]["argmax_true"].append(float(p[pos].argmax() == true))
    for view in VIEWS:
        stats = got[view]["1"]
        assert stats["positions"] == len(want[view]["p_true"])
        for key in ("p_true", "p_eos", "argmax_eos", "argmax_true"):
            assert stats[key] == pytest.approx(np.mean(want[view][key]), rel=1e-4, abs=1e-6), (view, key)
        assert stats["p_eos"] <= stats["p_special"] <= 1.0
    # The two views differ only in the prompt, and the model does read the prompt.
    assert got["conditional"]["1"]["p_true"] != got["prompt_masked"]["1"]["p_true"]


def test_partial_masking_is_seeded_and_ratios_are_checked(demo):
    (cfg, params, tok), rows = demo
    a = anchor_probe(cfg, params, tok, rows, ratios=[0.5, 0.2], draws=3, seed=1, rows_per_forward=8)
    b = anchor_probe(cfg, params, tok, rows, ratios=[0.5, 0.2], draws=3, seed=1, rows_per_forward=8)
    assert a == b
    assert a["prompt_masked"]["0.5"]["positions"] > a["prompt_masked"]["0.2"]["positions"] >= 3 * len(rows)
    with pytest.raises(ValueError, match=r"ratios must lie in \(0, 1\]"):
        anchor_probe(cfg, params, tok, rows, ratios=[0.0])
    with pytest.raises(ValueError, match="no rows"):
        anchor_probe(cfg, params, tok, [], ratios=[1.0])
