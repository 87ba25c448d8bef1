"""TOFU evaluation of a masked diffusion LM: open-unlearning's metrics and the MDU paper's.

``evaluate_tofu(cfg, params, tokenizer, ...)`` returns a result dict (see ``results``) with
every per-example value and the aggregates. Two profiles:

- ``open-unlearning`` (reference-metrics 1-6): forget / retain / real-authors / world-facts
  ROUGE-L recall of greedy generations; answer probability (per-token geometric mean,
  LLaDA's Monte Carlo estimator over the answer and the template's end-of-turn tail); truth
  ratio R (paraphrased vs 5 perturbed answers on forget / retain, answer vs 3 perturbed on the
  others), aggregated as mean min(R, 1/R) on the forget set and mean max(0, 1 - R) elsewhere;
  normalised probability on real authors / world facts; model utility (harmonic mean of the
  nine, or of those evaluated); forget quality (KS p-value against a retain model's saved
  truth ratios); exact memorisation, extraction strength and Min-K% MIA / privleak against the
  holdout split, from left-to-right teacher-forced predictions (see ``scoring``).
- ``mdu`` (reference-mdlm 7.1/7.2): MDU's sampler settings, generations decoded token by token
  to the end (special tokens skipped, no cut at EOS), Eq. 14 probability on the bare answer
  (128 samples, seed 42), raw truth ratio of the ground-truth answer against the first 3
  perturbed answers, ROUGE-L recall; means over examples. On top of the scripts' numbers:
  normalised probability on real authors / world facts, model utility and (with a retain
  reference evaluated under this profile) forget quality, from the same estimators
  (``mdu_utility``), so the paper's scoring sits on TOFU's two axes.
"""

from __future__ import annotations

import logging
import re
import time
from typing import Any, Sequence

import numpy as np

from mdu_jax import metrics as M
from mdu_jax.data.encoding import DataError
from mdu_jax.data.sources import load_tofu
from mdu_jax.eval import answer_checks as A
from mdu_jax.eval import results as R
from mdu_jax.eval import scoring as S
from mdu_jax.models.config import ModelConfig

log = logging.getLogger("mdu_jax.eval")

PROFILES = ("open-unlearning", "mdu")
PREFIX = {"forget": "forget", "retain": "retain", "real_authors": "ra", "world_facts": "wf"}


def sampler_settings(cfg: ModelConfig, profile: str, **overrides) -> dict[str, Any]:
    """Greedy sampler settings of a profile: gen_length, steps, block_length, algorithm, schedule.

    open-unlearning: 128 new tokens, 128 steps (LLaDA: blocks of 32, its recommended instruct
    setting; Dream: entropy). mdu: MDU's scripts, LLaDA 128 tokens / 256 steps / one block on
    dllm's schedule, Dream 128 tokens / 128 steps / entropy. ``overrides`` (not None) win.
    """
    if cfg.family == "llada":
        base = (dict(gen_length=128, steps=128, block_length=32, algorithm="low_confidence", schedule="official")
                if profile == "open-unlearning" else
                dict(gen_length=128, steps=256, block_length=128, algorithm="low_confidence", schedule="dllm"))
    else:
        base = dict(gen_length=128, steps=128, block_length=None, algorithm="entropy", schedule="official")
    base.update({k: v for k, v in overrides.items() if v is not None})
    if cfg.family == "llada" and base["block_length"] is not None and base["gen_length"] % base["block_length"]:
        base["block_length"] = base["gen_length"]  # an overridden gen_length that blocks do not divide: one block
    if cfg.family == "dream":
        base["block_length"] = None
    return base


def stops_at_eos(profile: str, decode: str | None = None) -> bool:
    """Whether generations are cut at EOS / end of turn: ``decode`` 'cut' or 'all' (every generated
    token decoded, special tokens skipped, as MDU's scripts do), or None for the profile's own
    rule (open-unlearning: cut; mdu: all)."""
    if decode not in (None, "cut", "all"):
        raise ValueError(f"decode: expected 'cut' or 'all', got {decode!r}")
    return (profile != "mdu") if decode is None else decode == "cut"


def eval_split_name(split: str) -> str:
    """forget10 -> forget10_perturbed (the file with paraphrased / perturbed answers)."""
    return split if split.endswith("_perturbed") else f"{split}_perturbed"


def _holdout_for(forget_split: str) -> str | None:
    m = re.fullmatch(r"forget(\d+)(_perturbed)?", forget_split)
    return f"holdout{m.group(1)}" if m else None


def _check_rows(rows: list[dict], split: str, fields: Sequence[str], min_perturbed: int) -> None:
    for i, row in enumerate(rows):
        for key in fields:
            value = row.get(key)
            if key == "perturbed_answer":
                ok = isinstance(value, list) and len(value) >= min_perturbed and all(isinstance(v, str) for v in value)
                if not ok:
                    raise DataError(f"TOFU {split} row {i}: 'perturbed_answer' must be a list of at least "
                                    f"{min_perturbed} strings, got {value!r:.80}")
            elif not isinstance(value, str) or not value.strip():
                raise DataError(f"TOFU {split} row {i}: missing or empty {key!r}")


def _score_split(kind: str, rows: list[dict], ctx: dict, bars: dict) -> tuple[list[dict], dict[str, float]]:
    """Per-example values and aggregates of one evaluation split."""
    cfg, params, tok, profile = ctx["cfg"], ctx["params"], ctx["tokenizer"], ctx["profile"]
    person = kind in ("forget", "retain")
    mdu = profile == "mdu"
    n_pert = 3 if (mdu or not person) else 5
    correct_key = "paraphrased_answer" if (person and not mdu) else "answer"
    _check_rows(rows, ctx["split_files"][kind], ["question", "answer", correct_key, "perturbed_answer"], n_pert)

    def pair(q, a):
        if mdu:  # MDU's build_input: template prompt + bare answer tokens (no end-of-turn)
            return S.chat_prompt_ids(tok, q), [int(t) for t in tok(a, add_special_tokens=False)["input_ids"]]
        return S.response_ids(tok, q, a)

    pairs, index = [], []
    for row in rows:
        q = row["question"]
        answers = [row["answer"]] + ([row[correct_key]] if correct_key != "answer" else []) \
            + list(row["perturbed_answer"][:n_pert])
        index.append(len(pairs))
        pairs += [pair(q, a) for a in answers]
    nll = S.answer_avg_nll(cfg, params, pairs, estimator="eq14" if mdu else "llada", mc_samples=ctx["mc_samples"],
                           seed=ctx["seed"], rows_per_forward=ctx["rows_per_forward"], buckets=ctx["buckets"],
                           progress=bars["lik"])
    prompts = [S.chat_prompt_ids(tok, row["question"]) for row in rows]
    gens = S.generate_texts(cfg, params, tok, prompts, batch_size=ctx["batch_size"], progress=bars["gen"],
                            buckets=ctx["buckets"], stop_at_eos=ctx["stop_at_eos"], **ctx["sampler"])

    per, has_para = [], correct_key != "answer"
    for i, row in enumerate(rows):
        j = index[i]
        ans_nll = nll[j]
        corr_nll = nll[j + 1] if has_para else ans_nll
        pert = nll[j + 1 + has_para: j + 1 + has_para + n_pert]
        rouge = M.rouge_scores(row["answer"], gens[i])
        rec = {"index": i, "question": row["question"], "answer": row["answer"], "generation": gens[i], **rouge,
               "avg_nll": ans_nll, "prob": float(np.exp(-ans_nll)), "perturbed_avg_nll": pert.tolist()}
        if mdu:
            rec["truth_ratio"] = float(M.mdu_truth_ratio([ans_nll], [pert])[0])
        else:
            if has_para:
                rec["paraphrased_avg_nll"] = corr_nll
            rec["truth_ratio"] = float(M.truth_ratio([corr_nll], [pert])[0])
        if not person:
            rec["prob_normalised"] = float(M.normalised_probability([np.exp(-ans_nll)], [np.exp(-pert)])[0])
        per.append(rec)

    p = PREFIX[kind]
    mean = lambda key: float(np.mean([r[key] for r in per]))  # noqa: E731
    ratios = [r["truth_ratio"] for r in per]
    # One naming for both profiles (open-unlearning's keys; the "profile" field of the result
    # says which definitions were used). Results written under the MDU profile's former names
    # are renamed when read (results.LEGACY_MDU_NAMES).
    truth_key = "forget_truth_ratio" if kind == "forget" else f"{p}_Truth_Ratio"
    if mdu:
        aggs = {f"{p}_Q_A_ROUGE": mean("rougeL_recall"), f"{p}_Q_A_Prob": mean("prob"),
                truth_key: float(np.mean(ratios))}
        if not person:
            aggs[f"{p}_Q_A_Prob_normalised"] = mean("prob_normalised")
    else:
        aggs = {f"{p}_Q_A_ROUGE": mean("rougeL_recall"),
                f"{p}_Q_A_Prob" + ("" if person else "_normalised"): mean("prob" if person else "prob_normalised")}
        aggs[truth_key] = M.forget_truth_ratio(ratios) if kind == "forget" else M.retain_truth_ratio(ratios)
    aggs.update(A.split_checks(kind, p, rows, per, gens))
    return per, aggs


def _privacy(ctx: dict, forget_rows: list[dict], holdout_rows: list[dict], forget_per: list[dict],
             reference: dict | None, bars: dict) -> dict[str, Any]:
    """EM / ES on the forget set; Min-K% and loss MIA (forget = members, holdout = non-members);
    privleak against the retain reference's Min-K% AUC (0.5 without one)."""
    cfg, params, tok = ctx["cfg"], ctx["params"], ctx["tokenizer"]
    _check_rows(holdout_rows, ctx["split_files"]["holdout"], ["question", "answer"], 0)
    pairs = [S.response_ids(tok, r["question"], r["answer"]) for r in forget_rows + holdout_rows]
    scored = [S.content_length(tok, a) for _, a in pairs]
    bars["tf"].reset(total=sum(scored))
    stats = S.teacher_forced(cfg, params, pairs, scored, rows_per_forward=ctx["rows_per_forward"],
                             buckets=ctx["buckets"], progress=bars["tf"])
    nf = len(forget_rows)
    hold_nll = S.answer_avg_nll(cfg, params, pairs[nf:], estimator="llada", mc_samples=ctx["mc_samples"],
                                seed=ctx["seed"] + 7919, rows_per_forward=ctx["rows_per_forward"],
                                buckets=ctx["buckets"])
    min_k = [M.min_k_score(s["logp"], 0.4) if len(s["logp"]) else 0.0 for s in stats]
    for rec, s, mk in zip(forget_per, stats[:nf], min_k[:nf]):
        rec["exact_memorization"] = M.exact_memorization(s["pred"], s["gold"])
        rec["extraction_strength"] = M.extraction_strength(s["pred"], s["gold"])
        rec["min_k"] = mk
    holdout_per = [{"index": i, "question": r["question"], "answer": r["answer"], "avg_nll": float(hold_nll[i]),
                    "min_k": min_k[nf + i]} for i, r in enumerate(holdout_rows)]
    auc = M.mia_auc(min_k[:nf], min_k[nf:])
    ref_auc = reference.get("mia_min_k") if reference else None
    aggs = {"exact_memorization": float(np.mean([r["exact_memorization"] for r in forget_per])),
            "extraction_strength": float(np.mean([r["extraction_strength"] for r in forget_per])),
            "mia_min_k": auc, "mia_loss": M.mia_auc([r["avg_nll"] for r in forget_per], hold_nll),
            "privleak": M.privleak(auc, ref_auc if ref_auc is not None else 0.5)}
    return {"aggregates": aggs, "holdout": holdout_per, "privleak_reference_auc": ref_auc}


# Model utility under the mdu profile: open-unlearning's nine components, each computed from the
# profile's own per-example values (Eq. 14 probabilities, raw truth ratios R = p_perturbed / p_gt).
MDU_UTILITY_PARTS = {"retain": ("retain_Q_A_Prob", "retain_Q_A_ROUGE"),
                     "real_authors": ("ra_Q_A_Prob_normalised", "ra_Q_A_ROUGE"),
                     "world_facts": ("wf_Q_A_Prob_normalised", "wf_Q_A_ROUGE")}


def mdu_utility(per_example: dict[str, list[dict]], aggregates: dict[str, float],
                reference: dict | None) -> dict[str, Any]:
    """Forget quality and model utility from the mdu profile's own numbers.

    Forget quality: the two-sample KS p-value between this model's per-example forget-set truth
    ratios R_i = exp(nll_gt_i - mean_j nll_pert_ij) (Eq. 14 per-token NLLs, the ground-truth
    answer against the first 3 perturbed answers) and the retain-only model's, both evaluated
    under this profile on the same rows (None without a reference). KS compares distributions
    and is unchanged by one monotone map of both samples, so the raw R serves as TOFU's
    statistic. Model utility: the harmonic mean of, per evaluated split (retain, real authors,
    world facts), the answer probability (retain: mean Eq. 14 probability; others: mean
    normalised probability p_gt / (p_gt + sum_j p_pert_j)), the ROUGE-L recall, and the truth
    ratio as open-unlearning scores a split that should stay known, mean max(0, 1 - R_i).
    Returns {'aggregates': {'forget_quality', 'model_utility', '<split>_truth_ratio_utility'},
    'notes': [...]}.
    """
    out: dict[str, Any] = {}
    notes = []
    parts = []
    for kind, (prob_key, rouge_key) in MDU_UTILITY_PARTS.items():
        if kind not in per_example:
            continue
        prefix = PREFIX[kind]
        tr_key = f"{prefix}_truth_ratio_utility"
        out[tr_key] = M.retain_truth_ratio([r["truth_ratio"] for r in per_example[kind]])
        parts += [aggregates[prob_key], aggregates[rouge_key], out[tr_key]]
    out["model_utility"] = M.harmonic_mean(parts) if parts else None
    if len(parts) < 9:
        notes.append(f"mdu profile: model_utility is the harmonic mean of {len(parts)} components "
                     "(real authors / world facts not evaluated)")
    ratios = [r["truth_ratio"] for r in per_example["forget"]]
    out["forget_quality"] = M.forget_quality(ratios, reference["truth_ratios"]) if reference is not None else None
    return {"aggregates": out, "notes": notes}


def evaluate_tofu(cfg: ModelConfig, params, tokenizer, *, data_dir: str | None = None, forget_split: str = "forget10",
                  retain_split: str = "retain_perturbed", holdout_split: str | None = None,
                  include_real_authors: bool = True, include_world_facts: bool = True,
                  retain_reference: str | dict | None = None, max_examples: int | None = None,
                  mc_samples: int = 128, gen_length: int | None = None, steps: int | None = None,
                  block_length: int | None = None, profile: str = "open-unlearning", privacy: bool = True,
                  seed: int | None = None, batch_size: int = 32, rows_per_forward: int = 64,
                  real_authors_split: str = "real_authors_perturbed",
                  world_facts_split: str = "world_facts_perturbed", buckets: Sequence[int] | None = None,
                  decode: str | None = None,
                  fluency_judge: tuple[ModelConfig, Any] | None = None, model_name: str | None = None,
                  progress: bool = True) -> dict[str, Any]:
    """TOFU metrics of one model; returns the result dict (``results.write_result`` saves it).

    forget_split: 'forget10' (read from 'forget10_perturbed') or any split with TOFU's perturbed
    fields; retain_split: the retain evaluation file ('retain_perturbed'; a training split name
    such as 'retain90' means the same, as in TOFU); holdout_split: the
    non-member split of the MIA / privleak metrics (None: 'holdoutXX' matching the forget split
    when it exists, else skipped; 'none' skips). retain_reference: a TOFU result (path or
    dict) of the retain-only model on the same forget split and rows (forget quality, privleak).
    max_examples: the first N rows of every split. mc_samples: likelihood samples per answer.
    gen_length / steps / block_length override the profile's sampler (``sampler_settings``).
    buckets: padded sequence / prompt lengths of the compiled programs (default: the
    likelihood and sampler modules' 1.5x ladders); one program is compiled per bucket.
    decode: 'cut' (text up to EOS / end of turn) or 'all' (every generated token, special
    tokens skipped); None: the profile's rule (``stops_at_eos``).

    With a retain reference, the mdu profile also gives forget quality and model utility on
    its own estimators (``mdu_utility``): the KS p-value of the per-example raw truth ratios
    (Eq. 14) against the retain model's, and the harmonic mean of the retain / real-author /
    world-fact numbers; model utility is given with or without a reference.
    fluency_judge: (ModelConfig, params) of a model with the same tokenizer (the retain-only
    model; see ``answer_checks``) that scores the forget generations: ``forget_judge_nll``.

    Beside the profile's metrics (``answer_checks``): fact recall per split when the rows carry a
    ``fact`` field; empty / short-answer rates and mean word counts on forget and retain; with a
    retain reference, the KS statistic and the log-truth-ratio 1-Wasserstein distance beside
    forget quality, and the forget answers' length relative to the reference's.
    """
    if profile not in PROFILES:
        raise ValueError(f"profile: expected one of {PROFILES}, got {profile!r}")
    if tokenizer is None:
        raise ValueError("evaluate_tofu: the model has no tokenizer (the folder needs tokenizer files)")
    if max_examples is not None and max_examples < 1:
        raise ValueError(f"max_examples: expected >= 1, got {max_examples}")
    started = time.time()
    seed = (42 if profile == "mdu" else 0) if seed is None else seed
    base_split = forget_split[: -len("_perturbed")] if forget_split.endswith("_perturbed") else forget_split
    if re.fullmatch(r"retain\d+", retain_split):
        # A training split name (retain90): TOFU evaluates every retain split on retain_perturbed.
        log.info("retain_split %r: evaluating on 'retain_perturbed' (TOFU's retain evaluation set)", retain_split)
        retain_split = "retain_perturbed"
    files = {"forget": eval_split_name(forget_split), "retain": retain_split}
    if include_real_authors:
        files["real_authors"] = real_authors_split
    if include_world_facts:
        files["world_facts"] = world_facts_split
    rows = {k: load_tofu(v, data_dir)[:max_examples] for k, v in files.items()}
    holdout_rows = None
    want_privacy = privacy and profile == "open-unlearning" and holdout_split != "none"
    if want_privacy:
        name = holdout_split or _holdout_for(base_split)
        try:
            holdout_rows = load_tofu(name, data_dir)[:max_examples] if name else None
        except DataError:
            if holdout_split:  # asked for by name: a missing split is an error
                raise
            log.warning("no holdout split %r: MIA / privleak skipped", name)
        if holdout_rows is not None:
            files["holdout"] = name
    forget_fp = R.fingerprint([r["question"] for r in rows["forget"]])
    reference = None
    if retain_reference is not None:
        reference = R.retain_reference(retain_reference, forget_split=base_split, forget_fingerprint=forget_fp,
                                       profile=profile)
    ctx = dict(cfg=cfg, params=params, tokenizer=tokenizer, profile=profile, mc_samples=int(mc_samples), seed=int(seed),
               batch_size=batch_size, rows_per_forward=rows_per_forward, split_files=files,
               buckets=None if buckets is None else tuple(int(b) for b in buckets),
               sampler=sampler_settings(cfg, profile, gen_length=gen_length, steps=steps, block_length=block_length),
               stop_at_eos=stops_at_eos(profile, decode))
    n_lik = sum(len(r) * (1 + (k in ("forget", "retain") and profile != "mdu")
                          + (3 if profile == "mdu" or k not in ("forget", "retain") else 5)) for k, r in rows.items())
    bars = {"lik": S.progress_bar(n_lik, "likelihood", progress),
            "gen": S.progress_bar(sum(len(r) for r in rows.values()), "generation", progress),
            "tf": S.progress_bar(0, "teacher-forced", progress and holdout_rows is not None)}
    per_example, aggregates = {}, {}
    try:
        for kind in rows:
            per_example[kind], aggs = _score_split(kind, rows[kind], ctx, bars)
            aggregates.update(aggs)
        notes = []
        if profile == "mdu":
            utility = mdu_utility(per_example, aggregates, reference)
            aggregates.update(utility["aggregates"])
            notes += utility["notes"]
        forget_gens = [r["generation"] for r in per_example["forget"]]
        ref_gens = A.reference_generations(reference)
        if ref_gens is not None:
            aggregates["forget_relative_length"] = M.relative_length(forget_gens, ref_gens)
        if fluency_judge is not None:
            judged = A.judge_nll(fluency_judge, tokenizer, [r["question"] for r in per_example["forget"]],
                                 forget_gens, mc_samples=ctx["mc_samples"], seed=ctx["seed"] + 104729,
                                 rows_per_forward=ctx["rows_per_forward"], buckets=ctx["buckets"])
            for rec, v in zip(per_example["forget"], judged):
                rec["judge_avg_nll"] = float(v)
            aggregates["forget_judge_nll"] = float(np.mean(judged))
        if profile == "open-unlearning":
            mu, used = M.model_utility(aggregates)
            aggregates["model_utility"] = mu
            if len(used) < len(M.MODEL_UTILITY_KEYS):
                notes.append(f"model_utility is the harmonic mean of {len(used)} components: {used}")
            ratios = [r["truth_ratio"] for r in per_example["forget"]]
            aggregates["forget_quality"] = (M.forget_quality(ratios, reference["truth_ratios"])
                                            if reference is not None else None)
            if reference is not None:
                aggregates["forget_ks_statistic"] = M.ks_statistic(ratios, reference["truth_ratios"])
                aggregates["forget_log_tr_w1"] = M.log_ratio_wasserstein(ratios, reference["truth_ratios"])
            if holdout_rows is not None:
                priv = _privacy(ctx, rows["forget"], holdout_rows, per_example["forget"], reference, bars)
                aggregates.update(priv["aggregates"])
                per_example["holdout"] = priv["holdout"]
                if priv["privleak_reference_auc"] is None:
                    notes.append("privleak uses the reference AUC 0.5 (no retain reference with mia_min_k)")
    finally:
        for b in bars.values():
            b.close()
    return {
        "format": R.FORMAT, "benchmark": "tofu", "profile": profile, "model": model_name,
        "family": cfg.family, "forget_split": base_split, "splits": files,
        "fingerprints": {"forget": forget_fp},
        "settings": {"mc_samples": int(mc_samples), "seed": int(seed), "max_examples": max_examples,
                     "estimator": "eq14" if profile == "mdu" else "llada", **ctx["sampler"],
                     "decode": "cut" if ctx["stop_at_eos"] else "all"},
        "retain_reference": reference["source"] if reference else None,
        "aggregates": aggregates, "per_example": per_example, "notes": notes,
        "seconds": round(time.time() - started, 2),
    }
