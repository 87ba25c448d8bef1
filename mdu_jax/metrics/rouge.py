"""ROUGE recall of generations against gold answers, as TOFU / open-unlearning and MDU score it.

Google's ``rouge_score`` with ``use_stemmer=True`` (lowercase, split on non-alphanumerics,
Porter stemming); ROUGE-L is the sentence-level LCS. Recall = LCS (or unigram overlap) over the
number of gold-answer tokens (reference-metrics 1).
"""

from __future__ import annotations

import functools
from typing import Sequence

import numpy as np
from rouge_score import rouge_scorer


@functools.lru_cache(maxsize=1)
def _scorer():
    return rouge_scorer.RougeScorer(["rouge1", "rougeL"], use_stemmer=True)


def rouge_scores(reference: str, prediction: str) -> dict[str, float]:
    """{'rougeL_recall', 'rouge1_recall', 'rougeL_f1'} of one prediction against its gold answer."""
    s = _scorer().score(reference, prediction)
    return {"rougeL_recall": float(s["rougeL"].recall), "rouge1_recall": float(s["rouge1"].recall),
            "rougeL_f1": float(s["rougeL"].fmeasure)}


def rouge_recall(references: Sequence[str], predictions: Sequence[str], kind: str = "rougeL") -> np.ndarray:
    """float64 [N]: ROUGE-L (``kind='rougeL'``) or ROUGE-1 (``'rouge1'``) recall per pair."""
    if len(references) != len(predictions):
        raise ValueError(f"rouge_recall: {len(references)} references but {len(predictions)} predictions")
    if kind not in ("rougeL", "rouge1"):
        raise ValueError(f"kind: expected 'rougeL' or 'rouge1', got {kind!r}")
    return np.asarray([rouge_scores(r, p)[f"{kind}_recall"] for r, p in zip(references, predictions)],
                      dtype=np.float64)
