"""Short-answer QA scoring used by RWKU's utility sets (reference-metrics 7)."""

from __future__ import annotations

import re
import string
from collections import Counter
from typing import Sequence

import nltk
import numpy as np

_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)
_BBH_ANSWER = re.compile(r"[t|T]he answer is (.*?)\.")


def normalize_answer(text: str) -> str:
    """SQuAD normalisation: lowercase, drop punctuation and the articles a/an/the, squash spaces."""
    text = "".join(c for c in text.lower() if c not in set(string.punctuation))
    return " ".join(_ARTICLES.sub(" ", text).split())


def _tokens(text: str) -> list[str]:
    return normalize_answer(text).split() if text else []


def token_f1(prediction: str, references: Sequence[str] | str) -> float:
    """Max over references of the SQuAD token F1 (1 if both are empty, 0 if one is)."""
    refs = [references] if isinstance(references, str) else list(references)
    if not refs:
        raise ValueError("token_f1: no reference answers")
    pred = _tokens(prediction)
    best = 0.0
    for ref in refs:
        gold = _tokens(ref)
        if not gold or not pred:
            best = max(best, float(gold == pred))
            continue
        common = sum((Counter(gold) & Counter(pred)).values())
        if common:
            p, r = common / len(pred), common / len(gold)
            best = max(best, 2 * p * r / (p + r))
    return best


def exact_match(prediction: str, references: Sequence[str] | str) -> float:
    """1.0 if the normalised prediction equals any normalised reference, else 0.0."""
    refs = [references] if isinstance(references, str) else list(references)
    pred = _tokens(prediction)
    return float(any(_tokens(r) == pred for r in refs))


def bbh_extract_answer(output: str) -> str:
    """RWKU's BBH answer: the text between 'the answer is' and the next period, else the whole
    stripped output; 'NOANSWER' when that is empty."""
    m = _BBH_ANSWER.search(output)
    answer = m.group(1).strip() if m else output.strip()
    return answer or "NOANSWER"


def _word_tokens(text: str) -> list[str]:
    try:
        return nltk.word_tokenize(text)
    except LookupError:
        # No punkt sentence model offline: the same word tokenizer over the whole text (differs
        # from word_tokenize only at sentence-final periods).
        return nltk.tokenize.NLTKWordTokenizer().tokenize(text)


def fluency_entropy(text: str, ns: Sequence[int] = (2, 3), weights: Sequence[float] = (2 / 3, 4 / 3)) -> float:
    """RWKU's fluency of one output: mean_n weight_n * H_n, H_n the Shannon entropy (bits) of the
    output's word n-gram frequency distribution (0 for an output shorter than n words)."""
    words = _word_tokens(text)
    values = []
    for n, w in zip(ns, weights):
        grams = Counter(tuple(words[i:i + n]) for i in range(len(words) - n + 1))
        if not grams:
            values.append(0.0)
            continue
        f = np.asarray(list(grams.values()), dtype=np.float64)
        f /= f.sum()
        values.append(w * float(-(f * np.log2(f)).sum()))
    return float(np.mean(values))
