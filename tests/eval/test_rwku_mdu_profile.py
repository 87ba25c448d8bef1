"""evaluate_rwku(profile='mdu') follows MDU's scripts/eval_rwku_dream.py (reference-mdlm 7.3) for the
utility sets: MMLU (first 100 rows, 5 generated tokens, first-character rule), TruthfulQA MC1
(whole-sequence autoregressive NLL from one forward pass, lowest wins) and TriviaQA (substring rule).

Tiny models from tests.fixtures.write_hf_checkpoint (word-level tokenizer: most RWKU words become
<unk>, which changes nothing about the rules tested here) on real rows of ../shared/data/rwku.
"""

import functools
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.special import log_softmax

import mdu_jax
from mdu_jax import evaluate, metrics as M
from mdu_jax.data.sources import load_rwku
from mdu_jax.eval import rwku
from mdu_jax.eval import scoring as S
from mdu_jax.eval.rwku import PROBE_SETS
from tests.fixtures import write_hf_checkpoint

SUBJECT = "Stephen King"
BUCKETS = (64, 256, 1024, 4096)


def _load(folder, family):
    write_hf_checkpoint(folder, family)
    return mdu_jax.load_pretrained(str(folder))


@pytest.fixture(scope="module", params=["llada", "dream"])
def model(request, tmp_path_factory):
    return _load(tmp_path_factory.mktemp(f"rwku_mdu_{request.param}"), request.param)


@pytest.fixture(scope="module")
def llada(tmp_path_factory):
    return _load(tmp_path_factory.mktemp("rwku_mdu_llada_only"), "llada")


class FakeGenerations:
    """Stands in for rwku.mdu_generations: records every call; call k answers replies[k] (else 'x')."""

    def __init__(self, replies=None):
        self.calls, self.replies = [], dict(replies or {})

    def __call__(self, cfg, params, tokenizer, prompts, *, gen_length, steps, progress=None, **kw):
        self.calls.append(dict(prompts=[list(p) for p in prompts], gen_length=gen_length, steps=steps, **kw))
        if progress is not None:
            progress.update(len(prompts))
        reply = self.replies.get(len(self.calls) - 1)
        return list(reply) if reply is not None else ["x"] * len(prompts)


def _run(model, data, **kw):
    cfg, params, tok = model
    args = dict(subject=SUBJECT, data_dir=data, mia=False, profile="mdu", progress=False, buckets=BUCKETS,
                rows_per_forward=8)
    args.update(kw)
    return rwku.evaluate_rwku(cfg, params, tok, **args)


@functools.lru_cache(maxsize=None)
def _jit_forward(cfg):
    """mdu_jax.forward compiled once per config and shape (run op by op, it compiled one small
    program per operation and sequence length, most of the TruthfulQA test's time)."""
    return jax.jit(functools.partial(mdu_jax.forward, cfg))


def _template_ids(tok, messages, add_generation_prompt):
    out = tok.apply_chat_template(messages, tokenize=True, add_generation_prompt=add_generation_prompt)
    return [int(i) for i in (out["input_ids"] if hasattr(out, "keys") else out)]


def test_mdu_mmlu_prompt_is_the_scripts_five_shot_prompt(shared_data):
    row = load_rwku("utility_general", SUBJECT, shared_data / "rwku")[0]
    prompt = rwku.mdu_mmlu_prompt(row)
    assert prompt.startswith(
        "The following are multiple choice questions (with answers) about abstract algebra.\n\n"
        "Question: Find all c in Z_3 such that Z_3[x]/(x^2 + c) is a field.\nA. 0\nB. 1\nC. 2\nD. 3\nAnswer: B\n\n"
        "Question: Statement 1 | If aH is an element of a factor group")
    assert prompt.endswith(
        "Question: Statement 1 | For any two groups G and G', there exists a homomorphism of G into G'. "
        "Statement 2 | Every homomorphism is a one-to-one map.\nA. True, True\nB. False, False\nC. True, False\n"
        "D. False, True\nAnswer:")
    assert prompt.count("Question: ") == 6 and prompt.count("\nAnswer: ") == 5


def test_mdu_mmlu_first_100_rows_and_first_character_rule(llada, shared_data, monkeypatch):
    cfg, params, tok = llada
    data = shared_data / "rwku"
    rows = load_rwku("utility_general", SUBJECT, data)
    assert len(rows) > 100
    replies, expected = [], []
    for i, r in enumerate(rows[:100]):
        gold = "ABCD"[int(r["answer"])]
        wrong = "ABCD"[(int(r["answer"]) + 1) % 4]
        case = i % 4
        if case == 0:
            replies.append(f" {gold.lower()}) because ...")  # stripped, uppercased: correct
            expected.append(1)
        elif case == 1:
            replies.append(f"{wrong}. not {gold}")  # the first character decides
            expected.append(0)
        elif case == 2:
            replies.append(f"Answer: {gold}")  # first character 'A'
            expected.append(int(gold == "A"))
        else:
            replies.append("")
            expected.append(0)
    assert 0 < sum(expected) < 100
    fake = FakeGenerations({len(PROBE_SETS): replies})  # the probes are calls 0..4, MMLU is next
    monkeypatch.setattr(rwku, "mdu_generations", fake)
    result = _run(llada, data, utility=("mmlu",))

    (mmlu_call,) = [c for c in fake.calls if c["gen_length"] == rwku.MDU_MMLU_NEW_TOKENS]
    assert mmlu_call is fake.calls[len(PROBE_SETS)]
    assert mmlu_call["prompts"] == [S.chat_prompt_ids(tok, rwku.mdu_mmlu_prompt(r)) for r in rows[:100]]
    assert mmlu_call["steps"] == 64 and mmlu_call["block_length"] is None
    per = result["per_example"]["mmlu"]
    assert [p["correct"] for p in per] == expected
    assert [p["answer"] for p in per] == ["ABCD"[int(r["answer"])] for r in rows[:100]]
    assert result["aggregates"]["mmlu_acc"] == pytest.approx(np.mean(expected))
    assert result["settings"]["mmlu_rows"] == 100 and result["settings"]["mmlu_gen_length"] == 5

    fake = FakeGenerations()
    monkeypatch.setattr(rwku, "mdu_generations", fake)
    small = _run(llada, data, utility=("mmlu",), max_examples=3)
    assert len(fake.calls[len(PROBE_SETS)]["prompts"]) == 3 and len(small["per_example"]["mmlu"]) == 3


def test_mdu_triviaqa_any_alias_substring_rule(llada, shared_data, monkeypatch):
    cfg, params, tok = llada
    data = shared_data / "rwku"
    rows = load_rwku("utility_factuality", SUBJECT, data)[:3]
    aliases = [list(r["answers"]) for r in rows]
    replies = [f"I think it was {aliases[0][-1].upper()}!", "zq zq", f"  {aliases[2][0]}  "]
    assert not any(a.lower() in "zq zq" for a in aliases[1])
    fake = FakeGenerations({len(PROBE_SETS): replies})
    monkeypatch.setattr(rwku, "mdu_generations", fake)
    result = _run(llada, data, utility=("triviaqa",), max_examples=3)

    call, probe_call = fake.calls[len(PROBE_SETS)], fake.calls[0]
    assert call["prompts"] == [S.chat_prompt_ids(tok, r["question"]) for r in rows]  # question alone
    assert call["gen_length"] == probe_call["gen_length"] == 64 and call["steps"] == probe_call["steps"] == 64
    per = result["per_example"]["triviaqa"]
    assert [p["em"] for p in per] == [1.0, 0.0, 1.0]
    assert per[2]["f1"] == 1.0 and per[1]["f1"] == 0.0
    assert result["aggregates"]["triviaqa_em"] == pytest.approx(2 / 3)
    assert result["aggregates"]["triviaqa_f1"] == pytest.approx(np.mean([M.token_f1(g, a)
                                                                          for g, a in zip(replies, aliases)]))


def test_mdu_truthfulqa_score_is_the_forward_pass_nll(model, shared_data, monkeypatch):
    """Each choice's score equals the mean NLL computed from mdu_jax.forward on the unpadded
    rendered sequence (float64 log-softmax here, float32 in the batched padded run; atol 1e-5):
    Dream, raw logits[:-1] vs ids[1:] = our logits[1:]; LLaDA, its own logits[:-1] vs ids[1:]."""
    cfg, params, tok = model
    data = shared_data / "rwku"
    monkeypatch.setattr(rwku, "mdu_generations", FakeGenerations())
    result = _run(model, data, utility=("truthfulqa",), max_examples=2)
    rows = load_rwku("utility_truthfulness", SUBJECT, data)[:2]
    per = result["per_example"]["truthfulqa"]
    assert len(per) == 2
    for r, p in zip(rows, per):
        expected = []
        for choice in r["mc1_targets"]["choices"]:
            ids = _template_ids(tok, [{"role": "user", "content": r["question"]},
                                      {"role": "assistant", "content": choice}], add_generation_prompt=False)
            logits = np.asarray(_jit_forward(cfg)(params, jnp.asarray([ids], jnp.int32))[0], np.float64)
            raw = logits[1:] if cfg.family == "dream" else logits[:-1]
            lp = log_softmax(raw, axis=-1)
            expected.append(-np.mean(lp[np.arange(len(ids) - 1), ids[1:]]))
        np.testing.assert_allclose(p["nll"], expected, rtol=0, atol=1e-5)
        assert p["prediction"] == int(np.argmin(expected))
        assert p["answer"] == list(r["mc1_targets"]["labels"]).index(1)
        assert p["correct"] == int(p["prediction"] == p["answer"])
    assert result["aggregates"]["truthfulqa_mc1"] == pytest.approx(np.mean([p["correct"] for p in per]))


def test_sequence_ar_nll_compiles_once_per_length_bucket(llada):
    cfg, params, _ = llada
    rng = np.random.default_rng(0)
    seqs = [list(rng.integers(2, 90, n)) for n in (5, 9, 40, 70, 80)]  # buckets 64 and 256
    before = rwku.ar_programs()
    first = rwku.sequence_ar_nll(cfg, params, seqs, rows_per_forward=3, buckets=(64, 256))
    assert rwku.ar_programs() - before == 2
    again = rwku.sequence_ar_nll(cfg, params, seqs[::-1], rows_per_forward=3, buckets=(64, 256))
    assert rwku.ar_programs() - before == 2
    np.testing.assert_allclose(again[::-1], first, rtol=0, atol=1e-6)  # batch company does not matter


def test_evaluate_rwku_mdu_profile_writes_aggregates(tmp_path, shared_data):
    """The whole evaluation (CLI, Dream, the script's family) on one local target."""
    folder = tmp_path / "dream"
    write_hf_checkpoint(folder, "dream")
    out = tmp_path / "rwku_mdu.json"
    assert evaluate.main(["--model", str(folder), "--benchmark", "rwku", "--profile", "mdu", "--subject", SUBJECT,
                          "--data-dir", str(shared_data / "rwku"), "--output", str(out), "--max-examples", "2",
                          "--mc-samples", "2", "--gen-length", "4", "--steps", "4", "--long-gen-length", "4",
                          "--buckets", ",".join(map(str, BUCKETS)), "--rows-per-forward", "8",
                          "--no-progress"]) == 0
    r = json.loads(out.read_text())
    a, per = r["aggregates"], r["per_example"]
    assert r["profile"] == "mdu" and r["subject"] == SUBJECT and r["family"] == "dream"
    for key in PROBE_SETS + ("forget_all", "neighbor_all", "mmlu_acc", "truthfulqa_mc1", "triviaqa_em",
                             "triviaqa_f1", "bbh_em"):
        assert 0.0 <= a[key] <= 1.0, key
    assert a["mia_forget_loss"] > 0 and a["mia_retain_loss"] > 0 and a["fluency_entropy"] >= 0
    assert r["settings"]["mmlu_gen_length"] == 5 and r["settings"]["steps"] == 4
    assert len(per["mmlu"]) == 2 and len(per["truthfulqa"]) == 2 and len(per["triviaqa"]) == 2
    for p in per["mmlu"]:
        assert p["prediction"] == p["generation"][:1].upper() and p["correct"] == int(p["prediction"] == p["answer"])
    for p in per["truthfulqa"]:
        assert p["prediction"] == int(np.argmin(p["nll"])) and all(v > 0 for v in p["nll"])
    assert a["mmlu_acc"] == pytest.approx(np.mean([p["correct"] for p in per["mmlu"]]))
    assert a["triviaqa_em"] == pytest.approx(np.mean([p["em"] for p in per["triviaqa"]]))
