"""Fact recall: does a generated answer state the question's key fact (the year, the town, the title)?

ROUGE-L rewards the answer's sentence template as much as its fact, so a model that forgot the
fact but keeps the template still scores high. Where the data knows each answer's key fact (the
demo world does), fact recall scores only the fact: after lowercasing and collapsing whitespace,
the fact must occur in the generation as a whole-word match (not inside a longer word).
"""

from __future__ import annotations

import re
from typing import Sequence

import numpy as np


def _normalise(text: str) -> str:
    return " ".join(text.lower().split())


def contains_fact(generation: str, fact: str) -> bool:
    """True when `fact` (case-insensitive, whitespace-normalised) occurs in `generation` with no
    letter, digit or underscore right before or after it."""
    f = _normalise(fact)
    if not f:
        raise ValueError("contains_fact: empty fact")
    return re.search(r"(?<!\w)" + re.escape(f) + r"(?!\w)", _normalise(generation)) is not None


def fact_hits(generations: Sequence[str], facts: Sequence[str]) -> np.ndarray:
    """bool [N]: contains_fact for each (generation, fact) pair."""
    if len(generations) != len(facts):
        raise ValueError(f"fact_hits: {len(generations)} generations but {len(facts)} facts")
    return np.asarray([contains_fact(g, f) for g, f in zip(generations, facts)], dtype=bool)


def fact_recall(generations: Sequence[str], facts: Sequence[str]) -> float:
    """Fraction of generations that state their key fact (``contains_fact``)."""
    if not generations:
        raise ValueError("fact_recall: no generations")
    return float(fact_hits(generations, facts).mean())
