"""The shape of generated answers: the signs of degenerate forgetting that ROUGE hides.

An unlearned model can score a low forget ROUGE by saying nothing. These metrics count words (runs
of letters / digits, as ``\\w+``), so that empty and near-empty answers, and answers much shorter
than the retain-only model's, show next to the usual scores.
"""

from __future__ import annotations

import re
from typing import Sequence

import numpy as np

_WORD = re.compile(r"\w+", re.UNICODE)

SHORT_ANSWER_WORDS = 2  # "at most two words": shorter than any answer of the demo's templates


def word_count(text: str) -> int:
    """Number of words (``\\w+`` runs) in `text`."""
    return len(_WORD.findall(text))


def empty_answer_rate(generations: Sequence[str]) -> float:
    """Fraction of generations with no word at all (empty, or only punctuation / whitespace)."""
    if not generations:
        raise ValueError("empty_answer_rate: no generations")
    return float(np.mean([word_count(g) == 0 for g in generations]))


def short_answer_rate(generations: Sequence[str], max_words: int = SHORT_ANSWER_WORDS) -> float:
    """Fraction of generations with at most `max_words` words (empty ones included)."""
    if not generations:
        raise ValueError("short_answer_rate: no generations")
    return float(np.mean([word_count(g) <= max_words for g in generations]))


def mean_word_count(generations: Sequence[str]) -> float:
    """Mean number of words per generation."""
    if not generations:
        raise ValueError("mean_word_count: no generations")
    return float(np.mean([word_count(g) for g in generations]))


def relative_length(generations: Sequence[str], reference_generations: Sequence[str]) -> float | None:
    """Mean words per generation over the reference model's mean on the same questions (1: as
    long as the reference; 0: empty). None when the reference answers are all empty."""
    if len(generations) != len(reference_generations):
        raise ValueError(f"relative_length: {len(generations)} generations but {len(reference_generations)} "
                         "reference generations (the same questions are needed)")
    ref = mean_word_count(reference_generations)
    return mean_word_count(generations) / ref if ref > 0 else None
