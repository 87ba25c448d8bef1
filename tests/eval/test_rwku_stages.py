"""evaluate_rwku runs as planned stages: progress totals that are true, no recompilation for a
shape an earlier stage compiled, and the same metric values as scoring each example alone.

One evaluation of a tiny LLaDA (BPE tokenizer fitted on the target's rows, so the text
tokenises) on two rows per set of ../shared/data/rwku's Stephen King, shared by the tests.
BBH is left out for time; fluency runs the same long-generation path (two LLaDA blocks).
"""

import logging

import numpy as np
import pytest

import mdu_jax
from mdu_jax import metrics as M
from mdu_jax.data.sources import load_rwku
from mdu_jax.eval import rwku
from mdu_jax.eval import scoring as S
from mdu_jax.eval.rwku import PROBE_SETS, probe_prompt
from mdu_jax.likelihood import row_scores
from mdu_jax.sampling import generate
from mdu_jax.sampling.prompts import bucket_length
from tests.eval.helpers import tiny_models

SUBJECT = "Stephen King"
UTILITY = ("mmlu", "truthfulqa", "triviaqa", "fluency")
# Coarse buckets: every probe and TriviaQA prompt fits one canvas, so their stages share one program.
SETTINGS = dict(max_examples=2, mc_samples=4, gen_length=8, steps=8, long_gen_length=64, seed=3,
                buckets=(256, 1024, 4096), rows_per_forward=16)


class RecordingBar:
    """A progress bar that records its total and every update."""

    def __init__(self, total, desc):
        self.total, self.desc, self.updates, self.closed = total, desc, [], False

    def update(self, n):
        self.updates.append(n)

    def close(self):
        self.closed = True


@pytest.fixture(scope="module")
def run(tmp_path_factory, shared_data):
    folder = tmp_path_factory.mktemp("rwku_stages")
    data = shared_data / "rwku"
    texts = [r["query"] + " " + r["answer"] for c in PROBE_SETS for r in load_rwku(c, SUBJECT, data)]
    texts += [r["text"] for r in load_rwku("mia_forget", SUBJECT, data)[:3]]
    (path,) = tiny_models(folder, texts, seeds=(0,))
    cfg, params, tok = mdu_jax.load_pretrained(path)
    bars = []

    def factory(total, desc):
        bars.append(RecordingBar(total, desc))
        return bars[-1]

    logged = []
    handler = logging.Handler(logging.INFO)
    handler.emit = lambda record: logged.append((record.getMessage(), len(bars)))
    logger = logging.getLogger("mdu_jax.eval.stages")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        result = rwku.evaluate_rwku(cfg, params, tok, subject=SUBJECT, data_dir=data, utility=UTILITY,
                                    progress=factory, **SETTINGS)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    return dict(result=result, bars=bars, logged=logged, cfg=cfg, params=params, tok=tok, data=data)


def test_each_stage_bar_counts_exactly_its_planned_passes(run):
    records, bars = run["result"]["stages"], run["bars"]
    names = list(PROBE_SETS) + ["mia"] + list(UTILITY)
    assert [r["name"] for r in records] == names and len(bars) == len(names)
    for record, bar in zip(records, bars):
        assert record["name"] in bar.desc and bar.closed
        assert bar.total == record["passes"] == sum(bar.updates) > 0, record["name"]
        assert sum(s["passes"] for s in record["shapes"]) == record["passes"]
        assert record["seconds"] >= 0 and record["compile_seconds"] >= 0
    # The long generation reports per block (2 of 32 steps), not once per batch.
    fluency = bars[names.index("fluency")]
    assert len(fluency.updates) >= 2 and max(fluency.updates) <= 32


def test_the_plan_is_logged_before_the_work(run):
    (plan, bars_open) = [(m, n) for m, n in run["logged"] if "forward passes" in m][0]
    records = run["result"]["stages"]
    assert bars_open == 0  # logged before the first stage started
    total = sum(r["passes"] for r in records)
    assert plan.startswith(f"RWKU {SUBJECT} (rwku profile): {len(records)} stages, {total} forward passes")
    lines = plan.split("\n")
    for r in records:
        (line,) = [x for x in lines if x.startswith(r["name"] + " ")]
        counts = {}
        for s in r["shapes"]:
            counts[(s["rows"], s["length"])] = counts.get((s["rows"], s["length"]), 0) + s["passes"]
        assert f" {r['passes']} " in line and all(f"{n} x [{a} x {b}]" in line for (a, b), n in counts.items())


def test_a_stage_whose_shapes_an_earlier_stage_compiled_compiles_nothing(run):
    seen = set()
    reused = 0
    for record in run["result"]["stages"]:
        shapes = {(s["program"], s["rows"], s["length"]) for s in record["shapes"]}
        if shapes <= seen:
            assert record["compiles"] == 0, record
            reused += 1
        seen |= shapes
    # forget 2-3, neighbour 1-2 and TriviaQA reuse forget level 1's program.
    assert reused >= 5
    first = run["result"]["stages"][0]
    assert first["compiles"] >= 1  # the counter does see compilations


def test_metric_values_equal_scoring_each_example_alone(run):
    """Every value the batched, bucketed, early-stopping run gives equals the one computed for
    its example alone in main's layout before this planning (one prompt per batch on a canvas of
    its prompt bucket plus the slots, every step; each likelihood pair in a program sized for its
    own answer; MMLU letters one row per pass): generated texts and predictions exactly,
    likelihoods to rtol 1e-5 (fp32 sums over other padding and batch company)."""
    cfg, params, tok = run["cfg"], run["params"], run["tok"]
    result, data = run["result"], run["data"]
    per, agg = result["per_example"], result["aggregates"]
    stops = S.stop_ids(cfg, tok)

    def alone(prompt, gen_length, steps, block_length=None):
        # The canvas main's sampler used: the prompt's bucket plus the slots.
        canvas = bucket_length(len(prompt), SETTINGS["buckets"]) + gen_length
        out = generate(cfg, params, [prompt], tokenizer=tok, gen_length=gen_length, steps=steps,
                       block_length=block_length, stop_token_ids=stops, prompt_buckets=(canvas,))
        return out.texts[0]

    for config in PROBE_SETS:
        rows = load_rwku(config, SUBJECT, data)[:2]
        for r, p in zip(rows, per[config]):
            text = alone(S.chat_prompt_ids(tok, *probe_prompt(r, int(config[-1]))), 8, 8).split("\n")[0].strip()
            assert p["generation"] == (text or "NOANSWER")
        assert agg[config] == pytest.approx(np.mean([M.rwku_rouge_l_recall(p["generation"], p["answer"])
                                                     for p in per[config]]))
    for r, p in zip(load_rwku("utility_fluency", SUBJECT, data)[:2], per["fluency"]):
        assert p["generation"] == alone(S.chat_prompt_ids(tok, f"Instruction: {r['instruction']}\n"), 64, 64, 32)

    def avg_nll_alone(pairs, seed):
        out = []
        for n, (prompt, answer) in enumerate(pairs):
            P, L, mc = len(prompt), len(answer), SETTINGS["mc_samples"]
            T = bucket_length(P + L, SETTINGS["buckets"])
            ids = np.full((mc, T), cfg.pad_token_id, np.int32)
            ids[:, :P + L] = prompt + answer
            attn = np.zeros((mc, T), np.int32)
            attn[:, :P + L] = 1
            scores = row_scores(cfg, False, bucket_length(L, SETTINGS["buckets"]), params, ids, attn,
                                np.full(mc, P, np.int32), np.full(mc, L, np.int32), np.full(mc, n, np.int32),
                                np.arange(mc, dtype=np.int32), np.uint32(seed), True, np.int32(mc), np.float32(0))
            out.append(float(np.mean(np.asarray(scores, np.float64))) / L)
        return np.asarray(out)

    texts = [r["text"] for r in load_rwku("mia_forget", SUBJECT, data)[:2] + load_rwku("mia_retain", SUBJECT, data)[:2]]
    pairs = [([cfg.bos_token_id], tok(t, add_special_tokens=False)["input_ids"][:512]) for t in texts]
    mia = [p["avg_nll"] for p in per["mia_forget"] + per["mia_retain"]]
    np.testing.assert_allclose(mia, avg_nll_alone(pairs, SETTINGS["seed"]), rtol=1e-5)

    pairs, spans = [], []
    for r in load_rwku("utility_truthfulness", SUBJECT, data)[:2]:
        prompt = S.chat_prompt_ids(tok, "Q: " + r["question"], "A:")
        choices = rwku._literal(r["mc1_targets"])["choices"]
        spans.append((len(pairs), len(pairs) + len(choices)))
        pairs += [(prompt, tok(" " + c, add_special_tokens=False)["input_ids"]) for c in choices]
    totals = -avg_nll_alone(pairs, SETTINGS["seed"]) * np.asarray([len(a) for _, a in pairs])
    assert [p["prediction"] for p in per["truthfulqa"]] == [int(np.argmax(totals[lo:hi])) for lo, hi in spans]

    letters = [tok(" " + c, add_special_tokens=False)["input_ids"] for c in "ABCD"]
    assert all(len(i) == 1 for i in letters)  # the exact one-pass MMLU path
    for r, p in zip(load_rwku("utility_general", SUBJECT, data)[:2], per["mmlu"]):
        def block(q, choices):
            return q + "\n" + "".join(f"{L}. {c}\n" for L, c in zip("ABCD", rwku._literal(choices)))
        text = f"The following are multiple choice questions (with answers) about {r['task'].replace('_', ' ')}.\n\n"
        for ex in rwku._literal(r["examples"]):
            text += block(ex["question"], ex["choices"]) + f"Answer: {'ABCD'[int(ex['answer'])]}\n\n"
        prompt = S.chat_prompt_ids(tok, text + block(r["question"], r["choices"]), "Answer:")
        logp = [S.teacher_forced(cfg, params, [(prompt, i)], rows_per_forward=1)[0]["logp"][0] for i in letters]
        assert p["prediction"] == "ABCD"[int(np.argmax(logp))]
