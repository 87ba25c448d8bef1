"""RWKU evaluation of a masked diffusion LM (reference-metrics 7; MDU's Dream script, reference-mdlm 7.3).

``evaluate_rwku(cfg, params, tokenizer, subject=..., profile=...)`` scores one unlearning target.
Two profiles:

- ``rwku`` (default): RWKU's own recipes (``LLaMA-Factory/src/llmtuner/eval/*.py``) adapted to a
  masked diffusion LM. Generations are greedy, cut at EOS / end of turn.
- ``mdu``: MDU's ``scripts/eval_rwku_dream.py``, the script behind the paper's RWKU numbers. It
  was written for Dream; LLaDA gets the literal transfer (its own chat template and sampler).
  Generations are greedy, every generated token is decoded with special tokens skipped (no cut
  at EOS, as the script decodes ``sequences[max_len:]``), then stripped.

What each set does under each profile:

- forget probes (levels 1-3) and neighbour probes (levels 1-2), ROUGE-L recall against
  ``answer`` (lower is better on the forget set, higher on neighbours):
  rwku: RWKU's prompts (``probe_prompt``: instruction + 'Question: ...' in the user turn,
  'Answer:' after the assistant header), 32 new tokens in 32 steps (RWKU generates 30; 32 is a
  LLaDA block), cut at the first newline, an empty output becomes 'NOANSWER', the pip
  ``rouge`` package's ROUGE-L recall. mdu: the query alone as the user turn, 64 new tokens in 64
  steps (Dream 'entropy', LLaDA 'low_confidence' in one block), rouge_score's ROUGE-L recall
  with stemming.
- MIA (both profiles; the script has none): the per-token NLL (LLaDA's Monte Carlo estimator
  divided by the length; no chat template) of the forget passages (FM) and the unrelated
  retain passages (RM). RWKU reports the LOSS; after unlearning FM should be higher than RM.
- MMLU (``mmlu_acc``): rwku: every row of the target, 5-shot from the row's ``examples``; the
  letter among ' A'..' D' with the highest likelihood after 'Answer:' (exact from one forward
  pass when each letter is one token). Known differences from RWKU's prompt: no 'Question: '
  before each question and no 'Please following the previous examples and answer the given
  question.' line. mdu: only the first 100 rows (``MDU_MMLU_ROWS``); ``mdu_mmlu_prompt``
  ('The following are multiple choice questions (with answers) about {task}.', five
  'Question: ...\\nA. ...\\nAnswer: X' examples, the question, 'Answer:') as one user turn with
  the generation prompt; 5 new tokens (``MDU_MMLU_NEW_TOKENS``) with the profile's steps (64,
  the script's: Dream's floor schedule then reveals the 5 tokens in the last 4 steps; LLaDA's
  official schedule, one block of 5, reveals one token per step, so 5 effective steps); correct
  if the first character of the stripped generation, uppercased, is the gold letter. The
  script takes the first 100 rows of the whole Hub split, not of the target: with the Hub
  (``data_dir=None``) this does the same; a local folder holds one target's rows, so there it
  is that target's first 100.
- TruthfulQA MC1 (``truthfulqa_mc1``): rwku: zero-shot 'Q: {question}' user turn and 'A:'
  after the header (RWKU prepends its 6-example QA primer); each choice is scored by its summed
  log-likelihood (MDLM estimator) and the highest wins. mdu: each choice is rendered as
  [user question, assistant choice] with the chat template and no generation prompt, scored by
  ``sequence_ar_nll`` (one unmasked forward pass, mean next-token NLL over the whole sequence,
  prompt included) and the lowest NLL wins (the first on ties).
- TriviaQA (``triviaqa_em``, ``triviaqa_f1``): rwku: zero-shot 'Please briefly answer the
  following question.\\nQuestion: ...' user turn and 'Answer:' after the header (RWKU uses a
  fixed 5-example prompt and 'A:'), 32 new tokens, cut at the first newline (RWKU stops only at
  EOS / end of turn); em = SQuAD-normalised exact match, f1 = token F1 (max over aliases; RWKU
  reports F1). mdu: generated as the mdu probes (question alone as the user turn, same
  sampler); em = 1 if any lowercased alias is a substring of the lowercased generation (the
  script's "EM"); f1 is the same token F1 as under rwku (the script has none).
- BBH (``bbh_em``) and fluency (``fluency_entropy``): the MDU script has neither, so both
  profiles use the rwku recipes: BBH's chain-of-thought prompt from the data, EM of the answer
  extracted after 'the answer is'; fluency: weighted 2/3-gram entropy of responses to the
  AlpacaEval instructions ('Instruction: ...'); ``long_gen_length`` new tokens (default 256),
  LLaDA blocks of 32, cut at EOS / end of turn.

Masked diffusion adaptation: rwku-profile likelihoods come from the MDLM estimator
(``scoring``); the mdu profile's TruthfulQA uses the script's autoregressive score as written
(see ``sequence_ar_nll``).
"""

from __future__ import annotations

import ast
import functools
import time
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from mdu_jax import metrics as M
from mdu_jax.data.encoding import DataError
from mdu_jax.data.sources import load_rwku
from mdu_jax.eval import results as R
from mdu_jax.eval import scoring as S
from mdu_jax.models.config import ModelConfig
from mdu_jax.models.transformer import hidden_states, logits_from_hidden
from mdu_jax.sampling import generate
from mdu_jax.sampling.prompts import bucket_length

PROFILES = ("rwku", "mdu")
PROBE_SETS = ("forget_level1", "forget_level2", "forget_level3", "neighbor_level1", "neighbor_level2")
UTILITY_SETS = {"mmlu": "utility_general", "truthfulqa": "utility_truthfulness", "triviaqa": "utility_factuality",
                "bbh": "utility_reason", "fluency": "utility_fluency"}
LETTERS = "ABCD"
FILL = "Please complete the blank in the following question.\nQuestion: {}\n"
ANSWER = "Please briefly answer the following question.\nQuestion: {}\n"
MDU_MMLU_ROWS = 100  # eval_rwku_dream.py: eval_mmlu(max_samples=100)
MDU_MMLU_NEW_TOKENS = 5  # the yaml's max_new_tokens_short


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


def mdu_mmlu_prompt(row: dict) -> str:
    """The user turn of MDU's MMLU prompt for one RWKU ``utility_general`` row (5-shot from the
    row's ``examples``; the script's eval_mmlu): header, 'Question: q\\nA. c ...\\nAnswer: X\\n\\n'
    per example, then the question ending in '\\nAnswer:'."""
    def block(sample) -> str:
        return "Question: " + sample["question"] + "".join(
            f"\n{LETTERS[j]}. {c}" for j, c in enumerate(_literal(sample["choices"]))) + "\nAnswer:"

    subject = str(row.get("task", "")).replace("_", " ")
    text = f"The following are multiple choice questions (with answers) about {subject}.\n\n"
    for ex in _literal(row.get("examples") or []):
        text += block(ex) + f" {LETTERS[int(ex['answer'])]}\n\n"
    return text + block(row)


def chat_ids(tokenizer, messages: Sequence[dict], add_generation_prompt: bool) -> list[int]:
    """Token ids of ``messages`` rendered with the tokenizer's chat template."""
    out = tokenizer.apply_chat_template(list(messages), tokenize=True, add_generation_prompt=add_generation_prompt)
    if isinstance(out, dict) or hasattr(out, "keys"):
        out = out["input_ids"]
    return [int(i) for i in out]


def mdu_generations(cfg: ModelConfig, params, tokenizer, prompts: Sequence[list[int]], *, gen_length: int,
                    steps: int, block_length: int | None = None, algorithm: str | None = None,
                    schedule: str = "official", batch_size: int = 32, buckets: Sequence[int] | None = None,
                    progress=None, chunk: int = 128) -> list[str]:
    """Greedy generations decoded as MDU's RWKU script does: all ``gen_length`` generated tokens
    with special tokens skipped (nothing is cut at EOS / end of turn), stripped. ``progress``
    (a tqdm bar) advances per prompt."""
    texts: list[str] = []
    for lo in range(0, len(prompts), chunk):
        part = list(prompts[lo:lo + chunk])
        out = generate(cfg, params, part, tokenizer=tokenizer, gen_length=gen_length, steps=steps,
                       block_length=block_length, temperature=0.0, algorithm=algorithm, schedule=schedule,
                       batch_size=batch_size, stop_token_ids=(), prompt_buckets=buckets)
        texts += [t.strip() for t in out.texts]
        if progress is not None:
            progress.update(len(part))
    return texts


_AR_TRACES = [0]


@functools.partial(jax.jit, static_argnames=("cfg",))
def _ar_nll_sums(cfg: ModelConfig, params, input_ids, attention_mask):
    """float32 [R] summed next-token NLL and [R] number of scored tokens (see ``sequence_ar_nll``)."""
    _AR_TRACES[0] += 1  # runs once per trace
    h = hidden_states(cfg, params, input_ids, attention_mask)
    # The script's logits[:-1] vs ids[1:] on the model's raw output. forward() already shifts
    # Dream right by one (our position i holds raw position i-1), so Dream's raw logits[:-1] are
    # our [1:]; LLaDA's raw logits are ours, taken literally.
    h = h[:, 1:] if cfg.shifts_logits else h[:, :-1]
    logits = logits_from_hidden(cfg, params, h).astype(jnp.float32)
    targets = input_ids[:, 1:]
    target_logit = jnp.take_along_axis(logits, targets[..., None], axis=-1)[..., 0]
    valid = attention_mask[:, 1:] > 0
    # where, not a product: Dream's fully masked padding rows need not be finite.
    nll = jnp.where(valid, jax.nn.logsumexp(logits, axis=-1) - target_logit, 0.0)
    return jnp.sum(nll, axis=-1), jnp.sum(valid.astype(jnp.float32), axis=-1)


def ar_programs() -> int:
    """How many ``sequence_ar_nll`` programs have been traced (one per cfg, row count, bucket)."""
    return _AR_TRACES[0]


def sequence_ar_nll(cfg: ModelConfig, params, sequences: Sequence[list[int]], *, rows_per_forward: int = 64,
                    buckets: Sequence[int] | None = None, progress=None) -> np.ndarray:
    """float64 [N]: MDU's TruthfulQA score of each token sequence, the mean autoregressive NLL
    (nats) over the whole sequence: one unmasked forward pass (no mask token anywhere) and
    cross-entropy of the raw logits at positions 0..T-2 against tokens 1..T-1, divided by T-1.

    MDU wrote this for Dream, whose raw logit at i predicts token i+1, so for Dream it is a true
    next-token NLL (our logits[:, 1:] against ids[:, 1:]). For LLaDA it is the literal transfer of
    the same recipe to LLaDA's native logits (logits[:, :-1] against ids[:, 1:]), whose position i
    predicts token i itself: it is not a likelihood of the sequence, only what the script would
    compute. Sequences are right-padded (attention mask 0) into ``rows_per_forward`` rows per
    length bucket (``buckets``, default the sampler's ladder), so each bucket compiles once.
    A one-token sequence scores 0.
    """
    out = np.zeros(len(sequences), dtype=np.float64)
    by_bucket: dict[int, list[int]] = {}
    for n, seq in enumerate(sequences):
        if not seq:
            raise ValueError(f"sequence_ar_nll: sequence {n} is empty")
        by_bucket.setdefault(bucket_length(len(seq), buckets), []).append(n)
    R = int(rows_per_forward)
    for T, members in sorted(by_bucket.items()):
        for lo in range(0, len(members), R):
            chunk = members[lo:lo + R]
            # Spare rows repeat the first sequence: an all-padding Dream row would mask every query.
            padded = chunk + [chunk[0]] * (R - len(chunk))
            ids = np.full((R, T), cfg.pad_token_id, dtype=np.int32)
            attn = np.zeros((R, T), dtype=np.int32)
            for r, n in enumerate(padded):
                ids[r, :len(sequences[n])] = sequences[n]
                attn[r, :len(sequences[n])] = 1
            total, count = (np.asarray(x, dtype=np.float64) for x in _ar_nll_sums(cfg, params, ids, attn))
            out[chunk] = total[:len(chunk)] / np.maximum(count[:len(chunk)], 1.0)
            if progress is not None:
                progress.update(len(chunk))
    return out


def truthfulqa_mdu_sequences(tokenizer, row: dict) -> list[list[int]]:
    """Per mc1 choice, the ids of [user question, assistant choice] rendered by the chat template
    without a generation prompt (MDU's TruthfulQA input)."""
    target = _literal(row["mc1_targets"])
    return [chat_ids(tokenizer, [{"role": "user", "content": row["question"]},
                                 {"role": "assistant", "content": c}], add_generation_prompt=False)
            for c in target["choices"]]


def _probes(ctx, config: str, rows: list[dict], bar) -> tuple[list[dict], float]:
    tok, profile = ctx["tokenizer"], ctx["profile"]
    level = int(config[-1])
    for i, r in enumerate(rows):
        for key in ("query", "answer"):
            if not isinstance(r.get(key), str):
                raise DataError(f"RWKU {config} row {i}: missing {key!r}")
    if profile == "rwku":
        prompts = [S.chat_prompt_ids(tok, *probe_prompt(r, level)) for r in rows]
        gens = S.generate_texts(ctx["cfg"], ctx["params"], tok, prompts, batch_size=ctx["batch_size"],
                                cut_newline=True, progress=bar, buckets=ctx["buckets"], **ctx["sampler"])
    else:
        gens = _mdu_generate(ctx, [S.chat_prompt_ids(tok, r["query"]) for r in rows], bar)
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


def _mdu_generate(ctx, prompts, bar, **overrides) -> list[str]:
    sampler = {**ctx["sampler"], **overrides}
    return mdu_generations(ctx["cfg"], ctx["params"], ctx["tokenizer"], prompts, batch_size=ctx["batch_size"],
                           buckets=ctx["buckets"], progress=bar, **sampler)


def _mmlu_mdu(ctx, rows, bar) -> tuple[list[dict], float]:
    prompts = [S.chat_prompt_ids(ctx["tokenizer"], mdu_mmlu_prompt(r)) for r in rows]
    # One LLaDA block of 5 (a longer block from the probes' settings would not divide it).
    gens = _mdu_generate(ctx, prompts, bar, gen_length=MDU_MMLU_NEW_TOKENS, block_length=None)
    per = []
    for i, (r, g) in enumerate(zip(rows, gens)):
        g = g.strip()
        pred, gold = g[:1].upper(), LETTERS[int(r["answer"])]
        per.append({"index": i, "generation": g, "prediction": pred, "answer": gold, "correct": int(pred == gold)})
    return per, float(np.mean([p["correct"] for p in per]))


def _truthfulqa_mdu(ctx, rows, bar) -> tuple[list[dict], float]:
    seqs, spans, gold = [], [], []
    for r in rows:
        labels = list(_literal(r["mc1_targets"])["labels"])
        start = len(seqs)
        seqs += truthfulqa_mdu_sequences(ctx["tokenizer"], r)
        spans.append((start, len(seqs)))
        gold.append(labels.index(1) if 1 in labels else 0)
    nll = sequence_ar_nll(ctx["cfg"], ctx["params"], seqs, rows_per_forward=ctx["rows_per_forward"],
                          buckets=ctx["buckets"])
    per = []
    for i, ((lo, hi), g) in enumerate(zip(spans, gold)):
        pick = int(np.argmin(nll[lo:hi]))  # the first of equal scores, as the script's strict '<'
        per.append({"index": i, "nll": [float(v) for v in nll[lo:hi]], "prediction": pick, "answer": g,
                    "correct": int(pick == g)})
    bar.update(len(rows))
    return per, float(np.mean([p["correct"] for p in per]))


def _triviaqa_mdu(ctx, rows, bar) -> tuple[list[dict], dict[str, float]]:
    gens = _mdu_generate(ctx, [S.chat_prompt_ids(ctx["tokenizer"], r["question"]) for r in rows], bar)
    per = []
    for i, (r, g) in enumerate(zip(rows, gens)):
        g, answers = g.strip(), _literal(r["answers"])
        per.append({"index": i, "generation": g, "em": float(any(a.lower() in g.lower() for a in answers)),
                    "f1": M.token_f1(g, answers)})
    return per, {"triviaqa_em": float(np.mean([p["em"] for p in per])),
                 "triviaqa_f1": float(np.mean([p["f1"] for p in per]))}


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
    if all(len(i) == 1 for i in letter_ids):
        # One masked position: log p(letter | prompt) is exact from one forward pass, so the Monte
        # Carlo estimator (mc_samples identical passes per letter) would only cost time.
        stats = S.teacher_forced(ctx["cfg"], ctx["params"], pairs, rows_per_forward=ctx["rows_per_forward"],
                                 buckets=ctx["buckets"], progress=bar)
        ll = np.asarray([s["logp"][0] for s in stats])
    else:
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
                            cut_newline=kind == "triviaqa", progress=bar,
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
    bbh, fluency. ``profile``: 'rwku' or 'mdu' (see the module docstring). ``gen_length`` /
    ``steps`` / ``block_length`` override the profile's probe sampler (the mdu profile's MMLU keeps
    its 5 new tokens and uses ``steps``). ``long_gen_length``: new tokens for BBH / fluency
    (default 256). ``max_examples``: rows per set (the mdu profile's MMLU takes at most 100).
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
        if u == "mmlu" and profile == "mdu":
            # The script reads the first 100 rows of the whole Hub split (not filtered by subject);
            # a local folder holds only its target's rows.
            rows = load_rwku(UTILITY_SETS[u], subject if data_dir is not None else None, data_dir)
            data[UTILITY_SETS[u]] = rows[:MDU_MMLU_ROWS][:max_examples]
        else:
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
            rows, mdu = data[UTILITY_SETS[u]], profile == "mdu"
            if u == "mmlu":
                per_example[u], aggregates["mmlu_acc"] = (_mmlu_mdu if mdu else _mmlu)(ctx, rows, bar)
            elif u == "truthfulqa":
                per_example[u], aggregates["truthfulqa_mc1"] = (_truthfulqa_mdu if mdu else _truthfulqa)(ctx, rows, bar)
            elif u == "triviaqa" and mdu:
                per_example[u], aggs = _triviaqa_mdu(ctx, rows, bar)
                aggregates.update(aggs)
            else:
                per_example[u], aggs = _generated(ctx, rows, u, bar, long_gen_length)
                aggregates.update(aggs)
    finally:
        bar.close()
    settings = {"mc_samples": int(mc_samples), "seed": seed, "max_examples": max_examples,
                "long_gen_length": long_gen_length, "mia_max_tokens": mia_max_tokens, **ctx["sampler"]}
    notes = ["forget_all / neighbor_all pool every probe of the levels (RWKU's 'All' pooling is unstated)"]
    if profile == "mdu":
        settings.update(mmlu_rows=MDU_MMLU_ROWS, mmlu_gen_length=MDU_MMLU_NEW_TOKENS)
        notes += ["mdu profile: probes, MMLU, TruthfulQA and TriviaQA follow MDU's eval_rwku_dream.py; MIA, BBH "
                  "and fluency (not in the script) use the rwku recipes",
                  "mdu profile: triviaqa_em is the script's substring match; triviaqa_f1 is RWKU's token F1"]
        if cfg.family == "llada":
            notes.append("mdu profile, LLaDA: the Dream script transferred literally; TruthfulQA scores LLaDA's "
                         "logits[:-1] against ids[1:] although LLaDA's position i predicts token i")
    return {"format": R.FORMAT, "benchmark": "rwku", "profile": profile, "model": model_name, "family": cfg.family,
            "subject": subject or data[PROBE_SETS[0]][0].get("subject"),
            "settings": settings, "aggregates": aggregates, "per_example": per_example, "notes": notes,
            "seconds": round(time.time() - started, 2)}
