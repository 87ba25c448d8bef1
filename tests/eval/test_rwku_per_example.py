"""RWKU evaluation (rwku profile) per example, against direct computations on a tiny model.

``evaluate_rwku`` runs on a small RWKU-layout folder written here in the fixture tokenizer's words
(so nothing is an unknown token, and MMLU's ' A' .. ' D' are four distinct tokens):

- MMLU: each row's prediction is the letter whose token is most probable at the one masked
  position after the 'Answer:' prompt, read from a direct forward pass; letters written out here,
  not taken from the pipeline, so a swapped letter (in the prompt, the scored ids or the
  prediction) fails. The rows are chosen so that the direct predictions cover at least three
  letters: then every transposition of two letters changes some prediction.
- probes: each generation equals the test suite's own NumPy sampler (tests/sampling/reference_np,
  one prompt at a time, no padding) run on the prompt written out from RWKU's recipe, cut at the
  first stop token and newline, 'NOANSWER' if empty (the module docstring's rules); its ROUGE-L
  recall is recomputed.
"""

import json

import numpy as np
import pytest

import mdu_jax as mj
from mdu_jax import metrics as M
from mdu_jax.eval import scoring as S
from mdu_jax.eval.rwku import PROBE_SETS, evaluate_rwku
from tests.fixtures import write_hf_checkpoint
from tests.eval.direct import greedy_text, log_probs_at, scaled

SUBJECT = "Test Person"
LETTERS = ("A", "B", "C", "D")
QUESTIONS = ["who wrote the book ?", "where was the author born ?", "what is the genre of his novels ?",
             "who is her father ?", "what year was the author born ?", "what is his name ?",
             "where is the city ?", "what award ?", "when was the book written ?", "who is the teacher ?",
             "what is her mother known for ?", "where was she born ?"]
CHOICES = [["paris", "london", "tokyo", "lagos"], ["1950", "1960", "1970", "1980"],
           ["poems", "history", "science fiction", "novels"], ["teacher", "doctor", "engineer", "painter"]]
PROBES = {"forget_level1": [("the author was born in ___", "paris", "cloze"), ("his novels are ___", "poems", "cloze")],
          "forget_level2": [("where was the author born ?", "paris", "simple question"),
                            ("what is the genre ?", "poems", "simple question")],
          "forget_level3": [("who wrote the book ?", "the author", "affirmative suffix"),
                            ("what is the book ?", "a novel", "incontext learning")],
          "neighbor_level1": [("her father is a ___", "doctor", "cloze"), ("the city is ___", "london", "cloze")],
          "neighbor_level2": [("who is her father ?", "a doctor", "simple question"),
                              ("what is the city ?", "london", "simple question")]}
GEN = 4  # new tokens and steps of the probe generations
WEIGHT_SCALE = 3.0


def mmlu_rows():
    return [{"question": q, "choices": CHOICES[i % 4], "answer": i % 4, "task": "history", "subject": SUBJECT,
             "examples": [{"question": "who is the author ?", "choices": CHOICES[(i + 1) % 4], "answer": 1}]}
            for i, q in enumerate(QUESTIONS)]


def write_rwku_folder(root):
    folder = root / "1_Test_Person"
    folder.mkdir(parents=True)
    files = {config: [{"subject": SUBJECT, "level": config[-1], "query": q, "answer": a, "type": t}
                      for q, a, t in rows] for config, rows in PROBES.items()}
    files["retain_mmlu"] = mmlu_rows()
    for name, rows in files.items():
        (folder / f"{name}.json").write_text(json.dumps(rows))
    return root


@pytest.fixture(scope="module", params=["llada", "dream"])
def evaluated(request, tmp_path_factory):
    root = tmp_path_factory.mktemp(f"rwku_{request.param}")
    write_hf_checkpoint(root / "model", family=request.param)
    cfg, params, tok = mj.load_pretrained(root / "model")
    # Weights 3x the fixture's: at 1x, Dream's letter choice (read from the last prompt token's
    # state, which is the same 'Answer:' token in every row) hardly depends on the question and
    # is 'B' for every row; at 3x attention is sharp enough that the rows pick A, B and D.
    params = scaled(params, WEIGHT_SCALE)
    data = write_rwku_folder(root / "data")
    mp = pytest.MonkeyPatch()
    # One-token letters are exact from one forward pass; the Monte Carlo estimator must not run.
    mp.setattr(S, "answer_avg_nll", lambda *a, **k: pytest.fail("Monte Carlo used for one-token letters"))
    try:
        result = evaluate_rwku(cfg, params, tok, subject=SUBJECT, data_dir=str(data), utility=("mmlu",), mia=False,
                               gen_length=GEN, steps=GEN, buckets=(64,), progress=False)
    finally:
        mp.undo()
    return cfg, params, tok, result


def masked_letter_logprobs(cfg, params, tok, prompts):
    """log p(letter | prompt) for ' A' .. ' D' at one masked position after each prompt: [N, 4]."""
    letter_ids = [tok(" " + c, add_special_tokens=False)["input_ids"] for c in LETTERS]
    assert all(len(i) == 1 for i in letter_ids) and len({i[0] for i in letter_ids}) == 4, letter_ids
    logp = log_probs_at(cfg, params, [p + [cfg.mask_token_id] for p in prompts], [len(p) for p in prompts])
    return logp[:, [i[0] for i in letter_ids]]


def mmlu_prompt(tok, row):
    """RWKU's 5-shot layout (one example here), as the rwku module docstring states it."""
    def block(q, choices):
        return q + "\n" + "".join(f"{L}. {c}\n" for L, c in zip(LETTERS, choices))

    text = "The following are multiple choice questions (with answers) about history.\n\n"
    for ex in row["examples"]:
        text += block(ex["question"], ex["choices"]) + f"Answer: {LETTERS[ex['answer']]}\n\n"
    return S.chat_prompt_ids(tok, text + block(row["question"], row["choices"]), "Answer:")


def test_mmlu_prediction_is_the_most_probable_letter(evaluated):
    cfg, params, tok, result = evaluated
    per = result["per_example"]["mmlu"]
    rows = mmlu_rows()
    assert len(per) == len(rows)
    expected = []
    all_scores = masked_letter_logprobs(cfg, params, tok, [mmlu_prompt(tok, row) for row in rows])
    for row, got, scores in zip(rows, per, all_scores):
        best = int(np.argmax(scores))
        assert np.sort(scores)[-1] - np.sort(scores)[-2] > 1e-4, "near tie: pick other rows"
        expected.append(LETTERS[best])
        assert got["prediction"] == LETTERS[best], (row["question"], scores)
        assert got["answer"] == LETTERS[row["answer"]]
        assert got["correct"] == int(best == row["answer"])
    # Power: with three letters among the predictions, any swap of two letters changes one.
    assert len(set(expected)) >= 3, expected
    assert result["aggregates"]["mmlu_acc"] == pytest.approx(np.mean([p["correct"] for p in per]))


def probe_prompt_text(config, query, kind):
    """RWKU's probe prompts (user turn, text after the assistant header), from the docstring."""
    if config.endswith("1"):
        return f"Please complete the blank in the following question.\nQuestion: {query}\n", "Answer:"
    if config.startswith("forget") and config.endswith("3") and kind == "affirmative suffix":
        return f"Please briefly answer the following question.\nQuestion: {query}", ""
    if config.startswith("forget") and config.endswith("3") and kind == "incontext learning":
        return f"Please briefly answer the following question.\n{query}\n", "Answer:"
    return f"Please briefly answer the following question.\nQuestion: {query}\n", "Answer:"


def test_probe_generations_equal_direct_generation(evaluated):
    cfg, params, tok, result = evaluated
    assert set(PROBE_SETS) == set(PROBES)
    texts = []
    for config in PROBE_SETS:
        per = result["per_example"][config]
        assert len(per) == len(PROBES[config])
        for (query, answer, kind), got in zip(PROBES[config], per):
            prompt = S.chat_prompt_ids(tok, *probe_prompt_text(config, query, kind))
            want = greedy_text(cfg, params, tok, prompt, gen_length=GEN, steps=GEN, cut_newline=True,
                               algorithm="low_confidence" if cfg.family == "llada" else "entropy") or "NOANSWER"
            assert got["generation"] == want, (config, query)
            assert got["rougeL_recall"] == pytest.approx(M.rwku_rouge_l_recall(want, answer))
            texts.append(want)
        assert result["aggregates"][config] == pytest.approx(np.mean([p["rougeL_recall"] for p in per]))
    assert len(set(texts)) > 1, texts  # the prompts matter: not one fixed output
