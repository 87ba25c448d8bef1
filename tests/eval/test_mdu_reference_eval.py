"""The mdu profile evaluates as MDU's scripts do, and places their scoring on TOFU's two axes
(issue 19, items 5 and 6):

- TOFU generations decode every generated token (special tokens skipped, no cut at EOS);
- ``python -m mdu_jax.evaluate --profile mdu`` loads the weights in bfloat16 unless told;
- RWKU's MMLU takes the first 100 rows of the whole split (target 1's, in a local copy), not
  the evaluated target's;
- with ``--retain-reference`` (the retain-only model under the same profile) it prints forget
  quality and model utility computed from the profile's own per-example values (Eq. 14).
"""

import json

import numpy as np
import pytest
import scipy.stats

from mdu_jax import evaluate
from mdu_jax.data.sources import load_rwku
from mdu_jax.eval import rwku
from mdu_jax.eval import scoring as S
from mdu_jax.eval.rwku import PROBE_SETS
from mdu_jax.sampling.sampler import GenerationOutput
from mdu_jax.sampling import prompts as prompts_lib
from tests.eval.helpers import tiny_models, tofu_texts
from tests.eval.test_rwku_mdu_profile import FakeGenerations, _run, llada  # noqa: F401 (fixture)

N = 2
FAST = ["--max-examples", str(N), "--mc-samples", "2", "--gen-length", "4", "--steps", "4", "--buckets", "128,256",
        "--no-progress", "--no-real-authors"]


# ------------------------------------------------------------------ decoding (item 5)


def test_generation_text_keeps_what_follows_eos_when_every_token_is_decoded(llada, monkeypatch):
    cfg, params, tok = llada
    vocab = tok.get_vocab()
    eot = vocab["<|eot_id|>"]
    gen = [vocab["the"], vocab["book"], cfg.eos_token_id, vocab["paris"], eot, vocab["london"]]
    seen = []

    def fake_generate(cfg_, params_, prompts, *, tokenizer, stop_token_ids, stop_early, **kw):
        seen.append((list(stop_token_ids), stop_early))
        tokens = np.asarray([gen] * len(prompts), np.int32)
        stop = (cfg_.eos_token_id,) if stop_token_ids is None else tuple(stop_token_ids)
        return GenerationOutput(tokens, prompts_lib.decode(tokenizer, tokens, stop, True))

    monkeypatch.setattr(S, "generate", fake_generate)
    every = S.generate_texts(cfg, params, tok, [[2, 3]], gen_length=6, steps=6, stop_at_eos=False)
    cut = S.generate_texts(cfg, params, tok, [[2, 3]], gen_length=6, steps=6)
    # The reference: tokenizer.decode(all generated ids, skip_special_tokens=True).strip()
    assert every == [tok.decode(gen, skip_special_tokens=True).strip()] == ["the book paris london"]
    assert cut == ["the book"]
    assert seen[0] == ([], False) and seen[1][1] is True and cfg.eos_token_id in seen[1][0]


# ------------------------------------------------------------------ RWKU MMLU rows (item 5)


def test_mdu_mmlu_reads_the_splits_first_rows_whatever_the_target(llada, shared_data, monkeypatch):
    data = shared_data / "rwku"
    fake = FakeGenerations()
    monkeypatch.setattr(rwku, "mdu_generations", fake)
    result = _run(llada, data, utility=("mmlu",), subject="Confucius")      # target 2
    (mmlu_call,) = [c for c in fake.calls if c["gen_length"] == rwku.MDU_MMLU_NEW_TOKENS]
    first_target = load_rwku("utility_general", "Stephen King", data)[:100]  # target 1 opens the split
    own = load_rwku("utility_general", "Confucius", data)[:100]
    tok = llada[2]
    assert mmlu_call["prompts"] == [S.chat_prompt_ids(tok, rwku.mdu_mmlu_prompt(r)) for r in first_target]
    assert len(result["per_example"]["mmlu"]) == 100
    assert [r["question"] for r in own] != [r["question"] for r in first_target]


# ------------------------------------------------------------------ TOFU axes (items 5 and 6)


@pytest.fixture(scope="module")
def mdu_results(tmp_path_factory, shared_data):
    folder = tmp_path_factory.mktemp("tofu_mdu_axes")
    tofu = shared_data / "tofu"
    model, retain_model = tiny_models(folder, tofu_texts(tofu, N))
    common = ["--benchmark", "tofu", "--profile", "mdu", "--forget-split", "forget10", "--data-dir", str(tofu), *FAST]
    ref = folder / "retain_mdu.json"
    assert evaluate.main(["--model", retain_model, "--output", str(ref), *common]) == 0
    return dict(model=model, ref=ref, tofu=tofu, common=common, folder=folder)


def test_mdu_profile_prints_forget_quality_and_model_utility(mdu_results, capsys):
    capsys.readouterr()
    out = mdu_results["folder"] / "mdu.json"
    assert evaluate.main(["--model", mdu_results["model"], "--retain-reference", str(mdu_results["ref"]),
                          "--output", str(out), *mdu_results["common"]]) == 0
    table = capsys.readouterr().out
    r, ref = json.loads(out.read_text()), json.loads(mdu_results["ref"].read_text())
    a, per = r["aggregates"], r["per_example"]
    assert r["profile"] == "mdu" and r["settings"]["decode"] == "all"
    assert r["settings"]["dtype"] == "bfloat16" and r["settings"]["param_dtype"] == "bfloat16"
    for key in ("forget_quality", "model_utility"):
        line = [ln for ln in table.splitlines() if ln.startswith(key)]
        assert line and float(line[0].split()[-1]) == pytest.approx(a[key], rel=1e-3, abs=1e-4)
    # Forget quality: KS p-value of the raw Eq. 14 truth ratios against the retain model's.
    ks = scipy.stats.ks_2samp([x["truth_ratio"] for x in per["forget"]],
                              [x["truth_ratio"] for x in ref["per_example"]["forget"]]).pvalue
    assert a["forget_quality"] == pytest.approx(ks)
    for x in per["forget"]:
        assert x["truth_ratio"] == pytest.approx(np.exp(x["avg_nll"] - np.mean(x["perturbed_avg_nll"][:3])))
    # Model utility: harmonic mean of retain (prob, ROUGE, mean max(0, 1 - R)) and world facts
    # (normalised prob, ROUGE, mean max(0, 1 - R)); real authors were left out (--no-real-authors).
    parts = []
    for kind, p, prob in (("retain", "retain", "prob"), ("world_facts", "wf", "prob_normalised")):
        rows = per[kind]
        parts += [np.mean([x[prob] for x in rows]), a[f"{p}_Q_A_ROUGE"],
                  np.mean([max(0.0, 1.0 - x["truth_ratio"]) for x in rows])]
    for x in per["world_facts"]:
        pg = np.exp(-x["avg_nll"])
        assert x["prob_normalised"] == pytest.approx(pg / (pg + np.exp(-np.array(x["perturbed_avg_nll"])).sum()))
    assert a["model_utility"] == pytest.approx(scipy.stats.hmean(parts) if min(parts) > 0 else 0.0)
    assert "6 components" in " ".join(r["notes"])


def test_mdu_reference_from_the_other_profile_is_refused(mdu_results, tmp_path, capsys):
    ou_ref = tmp_path / "retain_ou.json"
    common = [a if a != "mdu" else "open-unlearning" for a in mdu_results["common"]] + ["--no-privacy"]
    assert evaluate.main(["--model", mdu_results["model"], "--output", str(ou_ref), *common]) == 0
    capsys.readouterr()
    assert evaluate.main(["--model", mdu_results["model"], "--retain-reference", str(ou_ref),
                          "--output", str(tmp_path / "x.json"), *mdu_results["common"]]) == 2
    assert "profile 'open-unlearning'" in capsys.readouterr().err
    assert not (tmp_path / "x.json").exists()
