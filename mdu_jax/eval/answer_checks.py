"""Checks on the generated answers that expose degenerate forgetting (used by ``eval.tofu``).

Per split: fact recall where the rows carry their key fact (a ``fact`` field, as the demo world
writes), and for the person splits (forget / retain) the empty-answer rate, the short-answer rate
(at most ``metrics.answer_shape.SHORT_ANSWER_WORDS`` words) and the mean word count. Across models:
the forget answers' length relative to the retain-only model's, and their fluency under a judge
model: the per-token NLL (nats) of each generated answer, with the template's end-of-turn tail,
under the judge, by the same Monte Carlo estimator as the answer probabilities.

Which judge: the retain-only model. It knows the language and every fact except the forget
facts, so a fluent answer that states a wrong fact costs it about as much as one that states the
true fact, while garbled, repeated or truncated text costs it a lot. The model before unlearning
would also charge for the wrong fact itself, mixing "forgot" into "not fluent". The judge's score
of its own greedy answers is lower than it would give any other model's fluent answers (greedy
text is its mode), so compare unlearned models with each other, not with the judge's own row.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from mdu_jax import metrics as M
from mdu_jax.eval import scoring as S

PERSON_SPLITS = ("forget", "retain")


def row_facts(rows: Sequence[dict]) -> list[str] | None:
    """The rows' key facts (their ``fact`` fields), or None unless every row has a non-empty one."""
    facts = [row.get("fact") for row in rows]
    if all(isinstance(f, str) and f.strip() for f in facts):
        return facts
    return None


def split_checks(kind: str, prefix: str, rows: Sequence[dict], per: list[dict], gens: Sequence[str]) -> dict[str, float]:
    """Aggregates of one split (and ``fact_hit`` added to each per-example record): fact recall when
    the rows carry facts; empty / short rates and mean word count on the person splits."""
    aggs: dict[str, float] = {}
    facts = row_facts(rows)
    if facts is not None:
        hits = M.fact_hits(gens, facts)
        for rec, fact, hit in zip(per, facts, hits):
            rec["fact"], rec["fact_hit"] = fact, bool(hit)
        aggs[f"{prefix}_fact_recall"] = float(hits.mean())
    if kind in PERSON_SPLITS:
        aggs[f"{prefix}_empty_rate"] = M.empty_answer_rate(gens)
        aggs[f"{prefix}_short_rate"] = M.short_answer_rate(gens)
        aggs[f"{prefix}_mean_words"] = M.mean_word_count(gens)
    return aggs


def judge_nll(judge: tuple[Any, Any], tokenizer, questions: Sequence[str], gens: Sequence[str], *,
              mc_samples: int, seed: int, rows_per_forward: int, buckets) -> np.ndarray:
    """float64 [N]: per-token NLL (nats) of each generated answer (plus the end-of-turn tail) given
    its question under the judge ``(ModelConfig, params)``, which must share the tokenizer."""
    judge_cfg, judge_params = judge
    if judge_cfg.vocab_size < len(tokenizer):
        raise ValueError(f"fluency_judge: its vocabulary ({judge_cfg.vocab_size}) is smaller than the "
                         f"tokenizer's ({len(tokenizer)}); the judge must share the evaluated model's tokenizer")
    pairs = [S.response_ids(tokenizer, q, g) for q, g in zip(questions, gens)]
    return S.answer_avg_nll(judge_cfg, judge_params, pairs, estimator="llada", mc_samples=mc_samples, seed=seed,
                            rows_per_forward=rows_per_forward, buckets=buckets)


def reference_generations(reference: dict | None) -> list[str] | None:
    """The retain-only model's forget generations from its result (None when absent)."""
    if reference is None:
        return None
    return reference.get("generations")
