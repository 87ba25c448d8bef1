"""TOFU metrics of a part of the forget split (one group of authors), read off a TOFU result's
per-example records: what sequential unlearning reports for each forget group after each round.

The rows are picked by question text, so a result of the whole forget split gives every
group's numbers without evaluating the model again. The truth-ratio KS statistic and its
p-value (forget quality) compare the group's rows with the same rows of a reference result
(the retain-only model's), not with the reference's whole forget split.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from mdu_jax import metrics as M

# The keys ``forget_subset`` returns besides 'rows' (aggregate names of ``evaluate_tofu``).
SUBSET_KEYS = ("forget_fact_recall", "forget_Q_A_Prob", "forget_Q_A_ROUGE", "forget_short_rate",
               "forget_ks_statistic", "forget_quality")


def _records(result: dict[str, Any], questions: Sequence[str], what: str) -> list[dict]:
    per = result.get("per_example", {}).get("forget")
    if per is None:
        raise ValueError(f"{what}: the result has no per-example forget records")
    by_question = {r["question"]: r for r in per}
    missing = [q for q in questions if q not in by_question]
    if missing:
        raise ValueError(f"{what}: {len(missing)} of the {len(questions)} questions were not evaluated, e.g. "
                         f"{missing[0]!r} (an evaluation cut by max_examples?)")
    return [by_question[q] for q in questions]


def forget_subset(result: dict[str, Any], questions: Sequence[str], *,
                  reference: dict[str, Any] | None = None) -> dict[str, Any]:
    """{'rows': n, 'forget_fact_recall', 'forget_Q_A_Prob', 'forget_Q_A_ROUGE', 'forget_short_rate',
    'forget_ks_statistic', 'forget_quality'} (floats; None where not measurable) over the forget
    records of `result` whose question is one of `questions`.

    Fact recall is None when the rows carry no key fact; the KS statistic and forget quality are
    None without a `reference` (a TOFU result of the retain-only model on the same rows).
    """
    if not questions:
        raise ValueError("forget_subset: no questions")
    recs = _records(result, questions, "forget_subset")
    hits = [r["fact_hit"] for r in recs if "fact_hit" in r]
    out: dict[str, Any] = {
        "rows": len(recs),
        "forget_fact_recall": float(np.mean(hits)) if len(hits) == len(recs) else None,
        "forget_Q_A_Prob": float(np.mean([r["prob"] for r in recs])),
        "forget_Q_A_ROUGE": float(np.mean([r["rougeL_recall"] for r in recs])),
        "forget_short_rate": M.short_answer_rate([r["generation"] for r in recs]),
        "forget_ks_statistic": None, "forget_quality": None,
    }
    if reference is not None:
        mine = [r["truth_ratio"] for r in recs]
        theirs = [r["truth_ratio"] for r in _records(reference, questions, "forget_subset (reference)")]
        out["forget_ks_statistic"] = M.ks_statistic(mine, theirs)
        out["forget_quality"] = M.forget_quality(mine, theirs)
    return out


__all__ = ["SUBSET_KEYS", "forget_subset"]
