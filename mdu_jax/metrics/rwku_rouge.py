"""ROUGE-L recall as RWKU computes it: the pip ``rouge`` package's summary-level ROUGE-L.

Not Google's rouge_score: texts are split into sentences at '.', words at single spaces (after
collapsing whitespace), case is kept, nothing is stemmed, and words are counted as *sets*: the
recall is |union over (reference sentence, hypothesis sentence) of the words of one LCS| / |set of
reference words|. Which LCS is taken when several exist follows the package's backtrace (move
up when the cell above is strictly larger, else left), since with sets that choice can matter.
"""

from __future__ import annotations


def _sentences(text: str) -> list[str]:
    return [" ".join(s.split()) for s in text.split(".") if len(s) > 0]


def _words(sentences: list[str]) -> list[str]:
    return [w for s in sentences for w in s.split(" ")]


def _lcs_words(ref: list[str], hyp: list[str]) -> list[str]:
    n, m = len(ref), len(hyp)
    table = [[0] * (m + 1) for _ in range(n + 1)]
    for i in range(1, n + 1):
        for j in range(1, m + 1):
            table[i][j] = table[i - 1][j - 1] + 1 if ref[i - 1] == hyp[j - 1] else max(table[i - 1][j], table[i][j - 1])
    out, i, j = [], n, m
    while i > 0 and j > 0:
        if ref[i - 1] == hyp[j - 1]:
            out.append(ref[i - 1])
            i, j = i - 1, j - 1
        elif table[i - 1][j] > table[i][j - 1]:
            i -= 1
        else:
            j -= 1
    return out


def rwku_rouge_l_recall(prediction: str, reference: str) -> float:
    """Recall of the pip ``rouge`` package's ``rouge-l`` (``Rouge().get_scores(pred, ref)``).

    RWKU replaces an empty prediction with 'NOANSWER' before scoring; a text with no sentence
    scores 0 here (the package raises).
    """
    hyp, ref = _sentences(prediction), _sentences(reference)
    if not hyp or not ref:
        return 0.0
    ref_vocab = set(_words(ref))
    union: set[str] = set()
    for r in ref:
        r_words = r.split(" ")
        for h in hyp:
            union.update(_lcs_words(r_words, h.split(" ")))
    return len(union) / len(ref_vocab)
