"""Fact recall and the fluency judge in the TOFU evaluation, on the demo world's files (which carry
each answer's key fact), with tiny random models."""

import json

import jax
import numpy as np
import pytest

import mdu_jax as mj
from mdu_jax import metrics as M
from mdu_jax.demo.assets import DemoConfig, prepare_demo
from mdu_jax.demo.model import write_demo_model
from mdu_jax.eval import answer_checks as A
from mdu_jax.eval import scoring as S
from mdu_jax.eval.tofu import evaluate_tofu

TINY = dict(hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64)


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    root = tmp_path_factory.mktemp("answer_checks")
    assets = prepare_demo(DemoConfig.ci(num_people=8, **TINY), root / "demo")
    write_demo_model(root / "judge", assets.tokenizer_dir, seed=7, **TINY)
    model, judge = mj.load_pretrained(assets.model_dir), mj.load_pretrained(root / "judge")
    return assets, model, judge


def test_the_judge_scores_an_empty_answer_exactly(demo):
    """An empty answer is the end-of-turn token alone: a one-token answer, which the estimator
    scores exactly as -log p(eot | prompt, one masked position) under the judge."""
    assets, (cfg, params, tok), (jcfg, jparams, _) = demo
    questions = [r["question"] for r in json.loads(open(f"{assets.data_dir}/{assets.split_names['forget']}.json").read())[:2]]
    got = A.judge_nll((jcfg, jparams), tok, questions, ["", ""], mc_samples=4, seed=0, rows_per_forward=16,
                      buckets=[64])
    for q, value in zip(questions, got):
        prompt, response = S.response_ids(tok, q, "")
        assert len(response) == 1  # the end-of-turn tail only
        ids = np.asarray([prompt + [jcfg.mask_token_id]], np.int32)
        logits = mj.forward(jcfg, jparams, ids)[0, len(prompt)].astype(np.float32)
        want = -float(jax.nn.log_softmax(logits)[response[0]])
        assert value == pytest.approx(want, rel=1e-4, abs=1e-5)
    with pytest.raises(ValueError, match="judge must share"):
        A.judge_nll((cfg.__class__(**{**cfg.__dict__, "vocab_size": 8}), jparams), tok, questions, ["", ""],
                    mc_samples=4, seed=0, rows_per_forward=16, buckets=[64])


def test_tofu_evaluation_reports_fact_recall_shape_and_fluency(demo):
    assets, (cfg, params, tok), (jcfg, jparams, _) = demo
    r = evaluate_tofu(cfg, params, tok, data_dir=assets.data_dir, forget_split=assets.split_names["forget"],
                      max_examples=3, mc_samples=2, gen_length=6, steps=6, block_length=6, privacy=False,
                      fluency_judge=(jcfg, jparams), buckets=[64], rows_per_forward=16, progress=False)
    a, per = r["aggregates"], r["per_example"]
    for kind, prefix in (("forget", "forget"), ("retain", "retain"), ("real_authors", "ra"), ("world_facts", "wf")):
        rows = per[kind]
        assert all(x["fact"] in x["answer"] for x in rows)
        hits = [M.contains_fact(x["generation"], x["fact"]) for x in rows]
        assert [x["fact_hit"] for x in rows] == hits
        assert a[f"{prefix}_fact_recall"] == pytest.approx(np.mean(hits))
    judged = [x["judge_avg_nll"] for x in per["forget"]]
    assert a["forget_judge_nll"] == pytest.approx(np.mean(judged)) and all(v > 0 for v in judged)
    # The judge, not the evaluated model, scored the generations.
    again = A.judge_nll((jcfg, jparams), tok, [x["question"] for x in per["forget"]],
                        [x["generation"] for x in per["forget"]], mc_samples=2, seed=r["settings"]["seed"] + 104729,
                        rows_per_forward=16, buckets=[64])
    np.testing.assert_allclose(judged, again, rtol=1e-6)
    own = A.judge_nll((cfg, params), tok, [x["question"] for x in per["forget"]],
                      [x["generation"] for x in per["forget"]], mc_samples=2, seed=r["settings"]["seed"] + 104729,
                      rows_per_forward=16, buckets=[64])
    assert not np.allclose(judged, own)
