"""RWKU evaluation of a masked diffusion LM (reference-metrics 7; MDU's Dream script, reference-mdlm 7.3).

``evaluate_rwku(cfg, params, tokenizer, subject=..., ...)`` scores one unlearning target:

- forget probes, levels 1-3 (cloze, QA, adversarial) and neighbour probes, levels 1-2: greedy
  generations from RWKU's prompts inside the chat template, scored by ROUGE-L recall (profile
  ``rwku``: the pip ``rouge`` package's definition, generations cut at the first newline, empty
  ones replaced by 'NOANSWER'; profile ``mdu``: the query alone as the user turn, 64 new tokens,
  rouge_score's ROUGE-L recall). Lower is better on the forget set, higher on neighbours.
- MIA: the per-token NLL (LLaDA's Monte Carlo estimator divided by the length; no chat
  template) of the forget passages (FM) and the unrelated retain passages (RM). RWKU reports
  the LOSS; after unlearning FM should be higher than RM.
- utility: MMLU (5-shot; the letter with the highest likelihood after 'Answer:'), TruthfulQA
  MC1 (the choice with the highest summed log-likelihood; zero-shot 'Q: ... A:' here, RWKU
  uses a 6-example primer), TriviaQA (token F1 and EM, zero-shot QA prompt; RWKU uses 5 fixed
  examples), BBH (chain-of-thought prompt from the data, EM of the extracted answer) and
  fluency (weighted 2/3-gram entropy of responses to AlpacaEval instructions).

Masked diffusion adaptation: likelihoods come from the MDLM estimator (``scoring``); a one-token
answer (an MMLU letter) is scored exactly.
"""

from __future__ import annotations

import ast
import time
from typing import Any, Sequence

import numpy as np

from mdu_jax import metrics as M
from mdu_jax.data.encoding import DataError
from mdu_jax.data.sources import load_rwku
from mdu_jax.eval import results as R
from mdu_jax.eval import scoring as S
from mdu_jax.models.config import ModelConfig

PROFILES = ("rwku", "mdu")
PROBE_SETS = ("forget_level1", "forget_level2", "forget_level3", "neighbor_level1", "neighbor_level2")
UTILITY_SETS = {"mmlu": "utility_general", "truthfulqa": "utility_truthfulness", "triviaqa": "utility_factuality",
                "bbh": "utility_reason", "fluency": "utility_fluency"}
LETTERS = "ABCD"
FILL = "Please complete the blank in the following question.\nQuestion: {}\n"
ANSWER = "Please briefly answer the following question.\nQuestion: {}\n"


def _literal(value):
    """RWKU's local files store lists / dicts as Python reprs; the Hub has real ones."""
    return ast.literal_eval(value) if isinstance(value, str) else value


def probe_prompt(row: dict, level: int) -> tuple[str, str]:
    """(user turn, text after the assistant header) of an RWKU probe (RWKU's eval_forget.py)."""
    query = row["query"]
    if level == 1:
        return FILL.format(query), "Answer:"
    kind = row.get("type", "")
    if level == 3 and kind == "affirmative suffix":
        return ANSWER.format(query).rstrip("\n"), ""
    if level == 3 and kind == "incontext learning":
        return f"Please briefly answer the following question.\n{query}\n", "Answer:"
    return ANSWER.format(query), "Answer:"


def sampler_settings(cfg: ModelConfig, profile: str, **overrides) -> dict[str, Any]:
    """rwku: 32 new tokens (RWKU's 30, rounded to a LLaDA block), 32 steps; mdu: 64 tokens, 64
    steps (Dream entropy, LLaDA low-confidence in one block). ``overrides`` (not None) win."""
    n = 32 if profile == "rwku" else 64
    base = dict(gen_length=n, steps=n, block_length=None,
                algorithm="low_confidence" if cfg.family == "llada" else "entropy", schedule="official")
    base.update({k: v for k, v in overrides.items() if v is not None})
    if cfg.family == "dream" or (base["block_length"] and base["gen_length"] % base["block_length"]):
        base["block_length"] = None
    return base


def _load(config: str, subject, data_dir, max_examples):
    rows = load_rwku(config, subject, data_dir)
    return rows[:max_examples]


def _probes(ctx, config: str, rows: list[dict], bar) -> tuple[list[dict], float]:
    tok, profile = ctx["tokenizer"], ctx["profile"]
    level = int(config[-1])
    for i, r in enumerate(rows):
        for key in ("query", "answer"):
            if not isinstance(r.get(key), str):
                raise DataError(f"RWKU {config} row {i}: missing {key!r}")
    if profile == "rwku":
        prompts = [S.chat_prompt_ids(tok, *probe_prompt(r, level)) for r in rows]
    else:
        prompts = [S.chat_prompt_ids(tok, r["query"]) for r in rows]
    gens = S.generate_texts(ctx["cfg"], ctx["params"], tok, prompts, batch_size=ctx["batch_size"],
                            cut_newline=profile == "rwku", progress=bar, buckets=ctx["buckets"], **ctx["sampler"])
    per = []
    for i, (r, g) in enumerate(zip(rows, gens)):
        if profile == "rwku":
            g = g or "NOANSWER"
            score = M.rwku_rouge_l_recall(g, r["answer"])
        else:
            score = M.rouge_scores(r["answer"], g)["rougeL_recall"]
        per.append({"index": i, "query": r["query"], "answer": r["answer"], "type": r.get("type"),
                    "generation": g, "rougeL_recall": score})
    return per, float(np.mean([p["rougeL_recall"] for p in per]))


def _mia(ctx, rows_fm, rows_rm, max_tokens: int, bar) -> tuple[dict, dict]:
    cfg, tok = ctx["cfg"], ctx["tokenizer"]
    prefix = [int(cfg.bos_token_id)] if cfg.bos_token_id is not None and 0 <= cfg.bos_token_id < cfg.vocab_size else []
    if cfg.family == "dream" and not prefix:
        raise ValueError("RWKU MIA: Dream needs a BOS token to score a text from its first token")
    texts = [r["text"] for r in rows_fm + rows_rm]
    pairs = [(prefix, [int(t) for t in tok(t, add_special_tokens=False)["input_ids"]][:max_tokens]) for t in texts]
    nll = S.answer_avg_nll(cfg, ctx["params"], pairs, estimator="llada", mc_samples=ctx["mc_samples"],
                           seed=ctx["seed"], rows_per_forward=ctx["rows_per_forward"], buckets=ctx["buckets"],
                           progress=bar)
    nf = len(rows_fm)
    rec = [{"avg_nll": float(v), "tokens": len(p[1])} for v, p in zip(nll, pairs)]
    per = {"mia_forget": [dict(index=i, **r) for i, r in enumerate(rec[:nf])],
           "mia_retain": [dict(index=i, **r) for i, r in enumerate(rec[nf:])]}
    aggs = {"mia_forget_loss": float(np.mean(nll[:nf])), "mia_retain_loss": float(np.mean(nll[nf:]))}
    return per, aggs


def _mmlu(ctx, rows, bar) -> tuple[list[dict], float]:
    tok = ctx["tokenizer"]
    letter_ids = [[int(t) for t in tok(" " + c, add_special_tokens=False)["input_ids"]] for c in LETTERS]

    def block(q, choices):
        return q + "\n" + "".join(f"{LETTERS[k]}. {c}\n" for k, c in enumerate(choices))

    pairs, gold = [], []
    for r in rows:
        choices, examples = _literal(r["choices"]), _literal(r.get("examples") or [])
        subject = str(r.get("task", "")).replace("_", " ")
        text = f"The following are multiple choice questions (with answers) about {subject}.\n\n"
        for ex in examples:
            text += block(ex["question"], _literal(ex["choices"])) + f"Answer: {LETTERS[int(ex['answer'])]}\n\n"
        prompt = S.chat_prompt_ids(tok, text + block(r["question"], choices), "Answer:")
        pairs += [(prompt, ids) for ids in letter_ids]
        gold.append(int(r["answer"]))
    ll = -S.answer_avg_nll(ctx["cfg"], ctx["params"], pairs, estimator="llada", mc_samples=ctx["mc_samples"],
                           seed=ctx["seed"], rows_per_forward=ctx["rows_per_forward"], buckets=ctx["buckets"],
                           progress=bar)
    ll = ll.reshape(len(rows), 4) * np.asarray([len(i) for i in letter_ids])
    per = [{"index": i, "prediction": LETTERS[int(np.argmax(s))], "answer": LETTERS[g],
            "correct": int(np.argmax(s) == g)} for i, (s, g) in enumerate(zip(ll, gold))]
    return per, float(np.mean([p["correct"] for p in per]))


def _truthfulqa(ctx, rows, bar) -> tuple[list[dict], float]:
    tok = ctx["tokenizer"]
    pairs, spans, gold = [], [], []
    for r in rows:
        target = _literal(r["mc1_targets"])
        prompt = S.chat_prompt_ids(tok, "Q: " + r["question"], "A:")
        start = len(pairs)
        pairs += [(prompt, [int(t) for t in tok(" " + c, add_special_tokens=False)["input_ids"]])
                  for c in target["choices"]]
        spans.append((start, len(pairs)))
        gold.append(list(target["labels"]).index(1))
    avg = S.answer_avg_nll(ctx["cfg"], ctx["params"], pairs, estimator="llada", mc_samples=ctx["mc_samples"],
                           seed=ctx["seed"], rows_per_forward=ctx["rows_per_forward"], buckets=ctx["buckets"],
                           progress=bar)
    total = -avg * np.asarray([max(1, len(a)) for _, a in pairs])  # summed log-likelihood
    per = []
    for i, ((lo, hi), g) in enumerate(zip(spans, gold)):
        pick = int(np.argmax(total[lo:hi]))
        per.append({"index": i, "prediction": pick, "answer": g, "correct": int(pick == g)})
    return per, float(np.mean([p["correct"] for p in per]))


def _generated(ctx, rows, kind: str, bar, gen_length: int) -> tuple[list[dict], dict[str, float]]:
    tok = ctx["tokenizer"]
    if kind == "triviaqa":
        prompts = [S.chat_prompt_ids(tok, ANSWER.format(r["question"]), "Answer:") for r in rows]
    elif kind == "bbh":
        prompts = []
        for r in rows:
            text = (r["cot"].strip() + "\n\nFollowing previous examples, answer the following questions and end "
                    "with 'so the answer is'\nQ: " + r["question"])
            rendered = tok.apply_chat_template([{"role": "user", "content": text}], tokenize=False,
                                               add_generation_prompt=True)
            prompts.append(S.chat_prompt_ids(tok, text, "A:" if rendered[-1:] in ("\n", " ") else " A:"))
    else:
        prompts = [S.chat_prompt_ids(tok, f"Instruction: {r['instruction']}\n") for r in rows]
    sampler = dict(ctx["sampler"])
    if kind != "triviaqa":
        block = min(gen_length, 32)  # LLaDA's instruct setting; None: one block (Dream has none)
        sampler.update(gen_length=gen_length, steps=gen_length,
                       block_length=None if ctx["cfg"].family == "dream" or gen_length % block else block)
    gens = S.generate_texts(ctx["cfg"], ctx["params"], tok, prompts, batch_size=ctx["batch_size"],
                            cut_newline=kind == "triviaqa" and ctx["profile"] == "rwku", progress=bar,
                            buckets=ctx["buckets"], **sampler)
    per = []
    for i, (r, g) in enumerate(zip(rows, gens)):
        rec = {"index": i, "generation": g}
        if kind == "triviaqa":
            answers = _literal(r["answers"])
            rec.update(f1=M.token_f1(g, answers), em=M.exact_match(g, answers))
        elif kind == "bbh":
            pred = M.bbh_extract_answer(g)
            rec.update(prediction=pred, answer=r["answer"], em=M.exact_match(pred, [r["answer"]]))
        else:
            rec["entropy"] = M.fluency_entropy(g)
        per.append(rec)
    if kind == "triviaqa":
        aggs = {"triviaqa_f1": float(np.mean([p["f1"] for p in per])),
                "triviaqa_em": float(np.mean([p["em"] for p in per]))}
    elif kind == "bbh":
        aggs = {"bbh_em": float(np.mean([p["em"] for p in per]))}
    else:
        aggs = {"fluency_entropy": float(np.mean([p["entropy"] for p in per]))}
    return per, aggs


def evaluate_rwku(cfg: ModelConfig, params, tokenizer, *, subject: str | None = None, data_dir: str | None = None,
                  utility: Sequence[str] = tuple(UTILITY_SETS), max_examples: int | None = None,
                  mc_samples: int = 128, gen_length: int | None = None, steps: int | None = None,
                  block_length: int | None = None, long_gen_length: int | None = None, profile: str = "rwku",
                  mia: bool = True, mia_max_tokens: int = 512, seed: int | None = None, batch_size: int = 32,
                  rows_per_forward: int = 64, buckets: Sequence[int] | None = None, model_name: str | None = None,
                  progress: bool = True) -> dict[str, Any]:
    """RWKU metrics of one target ``subject`` (a Hub subject name, or one of the local folders of
    ``data_dir``); returns the result dict. ``utility``: subset of mmlu, truthfulqa, triviaqa,
    bbh, fluency. ``long_gen_length``: new tokens for BBH / fluency (default 256).
    ``mia_max_tokens``: MIA passages are cut to this many tokens. ``buckets``: padded lengths of
    the compiled programs (default: the likelihood / sampler modules' ladders)."""
    if profile not in PROFILES:
        raise ValueError(f"profile: expected one of {PROFILES} for RWKU, got {profile!r}")
    if tokenizer is None:
        raise ValueError("evaluate_rwku: the model has no tokenizer (the folder needs tokenizer files)")
    unknown = [u for u in utility if u not in UTILITY_SETS]
    if unknown:
        raise ValueError(f"utility: unknown {unknown}; expected some of {list(UTILITY_SETS)}")
    started = time.time()
    seed = 0 if seed is None else int(seed)
    long_gen_length = long_gen_length or 256
    data = {c: _load(c, subject, data_dir, max_examples) for c in PROBE_SETS}
    if mia:
        data["mia_forget"] = _load("mia_forget", subject, data_dir, max_examples)
        data["mia_retain"] = _load("mia_retain", subject, data_dir, max_examples)
    for u in utility:
        data[UTILITY_SETS[u]] = _load(UTILITY_SETS[u], subject, data_dir, max_examples)
    ctx = dict(cfg=cfg, params=params, tokenizer=tokenizer, profile=profile, mc_samples=int(mc_samples), seed=seed,
               batch_size=batch_size, rows_per_forward=rows_per_forward,
               buckets=None if buckets is None else tuple(int(b) for b in buckets),
               sampler=sampler_settings(cfg, profile, gen_length=gen_length, steps=steps, block_length=block_length))
    bar = S.progress_bar(sum(len(v) for v in data.values()), "rwku", progress)
    per_example: dict[str, Any] = {}
    aggregates: dict[str, Any] = {}
    try:
        for config in PROBE_SETS:
            per_example[config], aggregates[config] = _probes(ctx, config, data[config], bar)
        for side in ("forget", "neighbor"):
            pooled = [p["rougeL_recall"] for c in PROBE_SETS if c.startswith(side) for p in per_example[c]]
            aggregates[f"{side}_all"] = float(np.mean(pooled))
        if mia:
            per, aggs = _mia(ctx, data["mia_forget"], data["mia_retain"], mia_max_tokens, bar)
            per_example.update(per)
            aggregates.update(aggs)
        for u in utility:
            rows = data[UTILITY_SETS[u]]
            if u == "mmlu":
                per_example[u], aggregates["mmlu_acc"] = _mmlu(ctx, rows, bar)
            elif u == "truthfulqa":
                per_example[u], aggregates["truthfulqa_mc1"] = _truthfulqa(ctx, rows, bar)
            else:
                per_example[u], aggs = _generated(ctx, rows, u, bar, long_gen_length)
                aggregates.update(aggs)
    finally:
        bar.close()
    return {"format": R.FORMAT, "benchmark": "rwku", "profile": profile, "model": model_name, "family": cfg.family,
            "subject": subject or data[PROBE_SETS[0]][0].get("subject"),
            "settings": {"mc_samples": int(mc_samples), "seed": seed, "max_examples": max_examples,
                         "long_gen_length": long_gen_length, "mia_max_tokens": mia_max_tokens, **ctx["sampler"]},
            "aggregates": aggregates, "per_example": per_example,
            "notes": ["forget_all / neighbor_all pool every probe of the levels (RWKU's 'All' pooling is unstated)"],
            "seconds": round(time.time() - started, 2)}
