"""TOFU evaluation per example, against direct computations on a tiny model.

``evaluate_tofu`` runs on small TOFU-layout files written here in the fixture tokenizer's words:

- open-unlearning profile (LLaDA): every generation equals the test suite's own NumPy sampler run
  on the question's chat prompt alone (tests/sampling/reference_np), cut at the first stop token;
  ROUGE-L is recomputed from it; exact memorisation, extraction strength and the Min-K% score of
  each forget / holdout row follow from direct teacher-forced passes (answer position t predicted
  from the prompt, the first t answer tokens and masks after them).
- mdu profile (Dream): every answer, paraphrase and perturbed answer is one token, so MDU's Eq. 14
  estimator is exact whatever its random draws: each avg_nll is -log p(answer | prompt, [MASK])
  from one direct forward pass, and prob / truth ratio follow from it.

The aggregates are then the pipeline's functions of these values (tests/eval/test_tofu_eval.py).
"""

import json

import numpy as np
import pytest

import mdu_jax as mj
from mdu_jax import metrics as M
from mdu_jax.eval import scoring as S
from mdu_jax.eval.tofu import evaluate_tofu
from tests.eval.direct import greedy_text, log_probs_at, scaled
from tests.fixtures import write_hf_checkpoint

GEN = 4
WEIGHT_SCALE = 3.0  # sharper predictions: outputs depend on the question, no near ties
FAST = dict(include_real_authors=False, include_world_facts=False, mc_samples=2, gen_length=GEN, steps=GEN,
            buckets=(64,), progress=False)

QUESTIONS = ["who wrote the book ?", "where was the author born ?", "what is the genre of his novels ?",
             "who is her father ?", "what year was the author born ?", "where is the city ?"]
LONG = ["the author wrote the book in paris", "she was born in lagos", "his novels are science fiction",
        "her father is a doctor", "the author was born in 1950", "the city is london"]
WORDS = ["paris", "lagos", "poems", "doctor", "1950", "london", "tokyo", "teacher", "1960", "painter"]


def long_rows(lo, hi):
    """TOFU rows with multi-token answers (5 perturbed answers, as forget/retain files have)."""
    return [{"question": QUESTIONS[i], "answer": LONG[i], "paraphrased_answer": LONG[(i + 1) % 6],
             "perturbed_answer": [LONG[(i + k) % 6] for k in range(1, 6)]} for i in range(lo, hi)]


def word_rows(lo, hi):
    """TOFU rows whose every answer is one token."""
    return [{"question": QUESTIONS[i], "answer": WORDS[i], "paraphrased_answer": WORDS[i + 1],
             "perturbed_answer": [WORDS[(i + k) % 10] for k in range(2, 7)]} for i in range(lo, hi)]


def write_tofu(folder, rows):
    folder.mkdir(parents=True)
    for name, split in rows.items():
        (folder / f"{name}.json").write_text(json.dumps(split))
    return str(folder)


def load(root, family):
    write_hf_checkpoint(root / "model", family=family)
    cfg, params, tok = mj.load_pretrained(root / "model")
    return cfg, scaled(params, WEIGHT_SCALE), tok


@pytest.fixture(scope="module")
def open_unlearning(tmp_path_factory):
    root = tmp_path_factory.mktemp("tofu_llada")
    cfg, params, tok = load(root, "llada")
    data = write_tofu(root / "data", {"forget10_perturbed": long_rows(0, 3), "retain_perturbed": long_rows(3, 5),
                                      "holdout10": long_rows(4, 6)})
    return cfg, params, tok, evaluate_tofu(cfg, params, tok, data_dir=data, forget_split="forget10", **FAST)


@pytest.fixture(scope="module")
def mdu_profile(tmp_path_factory):
    root = tmp_path_factory.mktemp("tofu_dream")
    cfg, params, tok = load(root, "dream")
    data = write_tofu(root / "data", {"forget10_perturbed": word_rows(0, 3), "retain_perturbed": word_rows(3, 5)})
    return cfg, params, tok, evaluate_tofu(cfg, params, tok, data_dir=data, forget_split="forget10", profile="mdu",
                                           **FAST)


@pytest.mark.parametrize("profile", ["open_unlearning", "mdu_profile"])
def test_generations_equal_direct_generation(profile, request):
    cfg, params, tok, result = request.getfixturevalue(profile)
    algorithm = result["settings"]["algorithm"]
    assert (result["settings"]["gen_length"], result["settings"]["steps"]) == (GEN, GEN)
    texts = []
    for kind in ("forget", "retain"):
        for row in result["per_example"][kind]:
            want = greedy_text(cfg, params, tok, S.chat_prompt_ids(tok, row["question"]), gen_length=GEN, steps=GEN,
                               algorithm=algorithm)
            assert row["generation"] == want, (kind, row["question"])
            assert row["rougeL_recall"] == pytest.approx(M.rouge_scores(row["answer"], want)["rougeL_recall"])
            texts.append(want)
    assert len(set(texts)) > 1, texts  # the prompt matters: not one fixed output


def test_teacher_forced_metrics_equal_direct_passes(open_unlearning):
    cfg, params, tok, result = open_unlearning
    rows = result["per_example"]["forget"] + result["per_example"]["holdout"]
    seqs, positions, spans = [], [], []
    for row in rows:
        prompt, answer = S.response_ids(tok, row["question"], row["answer"])
        n = S.content_length(tok, answer)
        assert n == len(row["answer"].split())  # word-level: one token per word, template tail excluded
        start = len(seqs)
        for t in range(n):
            seqs.append(prompt + answer[:t] + [cfg.mask_token_id] * (len(answer) - t))
            positions.append(len(prompt) + t)
        spans.append((start, answer[:n]))
    logp = log_probs_at(cfg, params, seqs, positions)
    predictions = []
    for row, (start, gold) in zip(rows, spans):
        lp = logp[start:start + len(gold)]
        pred = [int(i) for i in np.argmax(lp, axis=-1)]
        assert row["min_k"] == pytest.approx(M.min_k_score([lp[t, g] for t, g in enumerate(gold)], 0.4), rel=1e-5)
        if "exact_memorization" in row:  # forget rows
            assert row["exact_memorization"] == pytest.approx(M.exact_memorization(pred, gold))
            assert row["extraction_strength"] == pytest.approx(M.extraction_strength(pred, gold))
        predictions += pred
    assert len(set(predictions)) > 1  # the predictions depend on the context


def test_one_token_answer_likelihoods_equal_direct_passes(mdu_profile):
    cfg, params, tok, result = mdu_profile
    cases = [(row, got) for kind, rows in (("forget", word_rows(0, 3)), ("retain", word_rows(3, 5)))
             for row, got in zip(rows, result["per_example"][kind])]
    prompts = [S.chat_prompt_ids(tok, row["question"]) for row, _ in cases]
    logp = log_probs_at(cfg, params, [p + [cfg.mask_token_id] for p in prompts], [len(p) for p in prompts])
    checked = []
    for (row, got), lp in zip(cases, logp):
        answers = [row["answer"]] + row["perturbed_answer"][:3]  # MDU: the answer and 3 perturbed
        ids = [tok(a, add_special_tokens=False)["input_ids"] for a in answers]
        assert all(len(i) == 1 for i in ids), ids
        nll = [-lp[i[0]] for i in ids]
        np.testing.assert_allclose(got["avg_nll"], nll[0], rtol=1e-5)
        np.testing.assert_allclose(got["perturbed_avg_nll"], nll[1:], rtol=1e-5)
        assert got["prob"] == pytest.approx(np.exp(-nll[0]), rel=1e-5)
        assert got["truth_ratio"] == pytest.approx(np.exp(nll[0] - np.mean(nll[1:])), rel=1e-4)
        checked += nll
    assert np.ptp(checked) > 0.1  # distinct answers get distinct likelihoods
