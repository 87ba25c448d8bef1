"""Metric functions against hand-computed values and the reference libraries they mirror."""

import math

import numpy as np
import pytest
import scipy.stats
from rouge_score import rouge_scorer

from mdu_jax import metrics as M


# ROUGE (TOFU): rouge_score with the stemmer, called directly as open-unlearning does.
PAIRS = [("The author was born in Taipei, Taiwan.", "The writer was born in Taipei."),
         ("Jaime Vasquez writes true crime novels", "Vasquez wrote crime novels about true events"),
         ("He won the Edgar Award.", ""),
         ("Running runners ran", "run running")]


def test_rouge_matches_rouge_score_directly():
    scorer = rouge_scorer.RougeScorer(["rouge1", "rougeL"], use_stemmer=True)
    for gold, gen in PAIRS:
        want = scorer.score(gold, gen)
        got = M.rouge_scores(gold, gen)
        assert got["rougeL_recall"] == want["rougeL"].recall
        assert got["rouge1_recall"] == want["rouge1"].recall
        assert got["rougeL_f1"] == want["rougeL"].fmeasure
    np.testing.assert_array_equal(M.rouge_recall([g for g, _ in PAIRS], [p for _, p in PAIRS]),
                                  [scorer.score(g, p)["rougeL"].recall for g, p in PAIRS])


def test_rouge_hand_values():
    # gold: the author was born in taipei taiwan (7 tokens); LCS with the generation = the, was,
    # born, in, taipei = 5 (author != writer).
    assert M.rouge_scores(*PAIRS[0])["rougeL_recall"] == pytest.approx(5 / 7)
    # Stemming: running -> run, runners -> runner, ran -> ran; generation run run: LCS 1 of 3.
    assert M.rouge_scores("Running runners ran", "run")["rougeL_recall"] == pytest.approx(1 / 3)
    with pytest.raises(ValueError, match="2 references but 1"):
        M.rouge_recall(["a", "b"], ["a"])


def test_rwku_rouge_hand_values():
    # One sentence each, case kept, no stemming: ref words {The, cat, sat, on, mat}; LCS words
    # 'cat on mat' -> 3/5.
    assert M.rwku_rouge_l_recall("a cat is on the mat", "The cat sat on mat") == pytest.approx(3 / 5)
    # Sentences split at '.', LCS words united across hypothesis sentences: ref 'the cat is on
    # the mat' has 5 distinct words; 'the cat sat' gives {the, cat}, 'on the mat' {on, the, mat}.
    assert M.rwku_rouge_l_recall("the cat sat. on the mat", "the cat is on the mat") == pytest.approx(4 / 5)
    assert M.rwku_rouge_l_recall("Richard Bachman", "Richard Bachman") == 1.0
    assert M.rwku_rouge_l_recall("richard bachman", "Richard Bachman") == 0.0  # case-sensitive
    assert M.rwku_rouge_l_recall("", "author") == 0.0


def test_truth_ratio_transforms():
    correct = np.array([1.0, 2.0, 0.5])            # nats/token of the paraphrase / true answer
    wrong = np.array([[1.0, 3.0], [1.0, 1.0], [2.5, 2.5]])
    r = M.truth_ratio(correct, wrong)
    want = [math.exp(-2.0) / (math.exp(-1.0) + 1e-10), math.exp(-1.0) / (math.exp(-2.0) + 1e-10),
            math.exp(-2.5) / (math.exp(-0.5) + 1e-10)]
    np.testing.assert_allclose(r, want, rtol=1e-12)
    # forget: mean min(R, 1/R); retain: mean max(0, 1 - R).
    assert M.forget_truth_ratio(r) == pytest.approx(np.mean([math.exp(-1), math.exp(-1), math.exp(-2)]), rel=1e-9)
    assert M.retain_truth_ratio(r) == pytest.approx(np.mean([1 - math.exp(-1), 0.0, 1 - math.exp(-2)]), rel=1e-9)
    # MDU: exp(gt - mean of the first 3 perturbed), untransformed.
    pert = np.array([[1.0, 2.0, 3.0, 100.0], [0.5, 0.5, 0.5, 0.0], [2.0, 2.0, 2.0, 2.0], [0.0, 0.0, 0.0, 0.0]])
    np.testing.assert_allclose(M.mdu_truth_ratio([1.0, 1.0, 2.0, 0.0], pert),
                               [math.exp(-1.0), math.exp(0.5), 1.0, 1.0], rtol=1e-12)


def test_probabilities():
    np.testing.assert_allclose(M.prob_from_avg_nll([0.0, math.log(2)]), [1.0, 0.5])
    p = M.normalised_probability([0.5, 0.2], [[0.1, 0.2, 0.2], [0.0, 0.0, 0.0]])
    np.testing.assert_allclose(p, [0.5 / (1.0 + 1e-10), 0.2 / (0.2 + 1e-10)])
    with pytest.raises(ValueError, match="p_wrong"):
        M.normalised_probability([0.5], [0.1, 0.2])


def test_forget_quality_is_scipy_ks_and_exact_by_hand():
    rng = np.random.default_rng(0)
    a, b = rng.lognormal(size=40), rng.lognormal(0.5, size=30)
    assert M.forget_quality(a, b) == scipy.stats.ks_2samp(a, b).pvalue
    assert M.forget_quality(1 / a, 1 / b) == pytest.approx(M.forget_quality(a, b))  # R vs 1/R
    # Disjoint samples of 3 and 3: D = 1; exact two-sided p = 2 / C(6, 3) = 0.1.
    assert M.forget_quality([1, 2, 3], [4, 5, 6]) == pytest.approx(2 / math.comb(6, 3))
    assert M.forget_quality([1, 2, 3], [1, 2, 3]) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="empty"):
        M.forget_quality([], [1.0])


def test_harmonic_mean_and_model_utility():
    assert M.harmonic_mean([1.0, 0.5, 0.25]) == pytest.approx(3 / (1 + 2 + 4))
    assert M.harmonic_mean([0.3, 0.6]) == pytest.approx(scipy.stats.hmean([0.3, 0.6]))
    assert M.harmonic_mean([0.3, 0.0, 0.9]) == 0.0
    aggs = {k: 0.5 for k in M.MODEL_UTILITY_KEYS}
    aggs["wf_Truth_Ratio"] = 0.25
    mu, used = M.model_utility(aggs)
    assert used == list(M.MODEL_UTILITY_KEYS)
    assert mu == pytest.approx(9 / (8 * 2 + 4))
    mu3, used3 = M.model_utility({"retain_Q_A_Prob": 0.5, "retain_Q_A_ROUGE": 1.0, "retain_Truth_Ratio": 0.25})
    assert used3 == ["retain_Q_A_Prob", "retain_Q_A_ROUGE", "retain_Truth_Ratio"]
    assert mu3 == pytest.approx(3 / 7)
    with pytest.raises(ValueError, match="missing components"):
        M.model_utility({"retain_Q_A_Prob": 0.5}, require_all=True)


def test_privacy_scores_auc_and_privleak():
    lp = [-0.1, -2.0, -0.5, -3.0, -1.0]
    # n = 5, k = 0.4 -> m = 2 smallest: -3, -2 -> score 2.5.
    assert M.min_k_score(lp, 0.4) == pytest.approx(2.5)
    assert M.min_k_score([-0.7], 0.4) == pytest.approx(0.7)  # m = max(1, 0)
    z_mu, z_sigma = [0.0] * 5, [2.0] * 5
    assert M.min_k_plus_plus_score(lp, z_mu, z_sigma, 0.4) == pytest.approx(2.5 / 2)
    assert M.zlib_score(2.0, "abc") == pytest.approx(2.0 / len(__import__("zlib").compress(b"abc")))
    # AUC: members (label 0) vs non-members (label 1), loss-like scores.
    members, nonmembers = [0.1, 0.4, 0.35], [0.8, 0.4, 0.2]
    # pairs (nonmember > member): 0.8 beats all 3; 0.4 beats 0.1, 0.35, ties 0.4; 0.2 beats 0.1.
    assert M.mia_auc(members, nonmembers) == pytest.approx((3 + 2 + 0.5 + 1) / 9)
    assert M.mia_auc([0.0], [1.0]) == 1.0 and M.mia_auc([1.0], [0.0]) == 0.0
    # privleak = ((1 - auc) - (1 - ref)) / (1 - ref) * 100: the reference's worked example.
    assert M.privleak(0.9, 0.5) == pytest.approx(-80.0, rel=1e-8)
    assert M.privleak(0.5, 0.5) == pytest.approx(0.0, abs=1e-8)
    assert M.privleak(0.3, 0.6) == pytest.approx((0.7 - 0.4) / 0.4 * 100, rel=1e-8)


def test_exact_memorization_and_extraction_strength():
    gold = [5, 6, 7, 8]
    assert M.exact_memorization([5, 0, 7, 8], gold) == 0.75
    assert M.extraction_strength(gold, gold) == 1.0             # k* = 0
    assert M.extraction_strength([5, 0, 7, 8], gold) == 1 - 2 / 4  # suffix from 2 matches
    assert M.extraction_strength([5, 6, 7, 0], gold) == 1 / 4      # nothing matches: quirk 1/n
    assert M.extraction_strength([], []) == 0.0
    # Brute force over every 3-token prediction in {0,1}: the definition by its loop.
    g = [1, 0, 1]
    for bits in range(8):
        p = [(bits >> i) & 1 for i in range(3)]
        k = next((k for k in range(3) if p[k:] == g[k:]), 2)
        assert M.extraction_strength(p, g) == 1 - k / 3


def test_qa_scoring():
    assert M.normalize_answer("The  Quick, brown fox!") == "quick brown fox"
    # pred tokens [richard, bachman, pen, name]; gold [richard, bachman]: p = 2/4, r = 1 -> F1 = 2/3.
    assert M.token_f1("Richard Bachman (pen name)", ["Stephen", "Richard Bachman"]) == pytest.approx(2 / 3)
    assert M.token_f1("", [""]) == 1.0 and M.token_f1("x", ["y"]) == 0.0
    assert M.exact_match("the Estimate.", ["Estimate", "Guess"]) == 1.0
    assert M.bbh_extract_answer("Let's think. So the answer is (B). Then") == "(B)"
    assert M.bbh_extract_answer("  False ") == "False"
    assert M.bbh_extract_answer("The answer is .") == "NOANSWER"


def test_fluency_entropy_by_hand():
    # 'a b a b': bigrams ab, ba, ab -> p = (2/3, 1/3); trigrams aba, bab -> uniform (1 bit).
    h2 = -(2 / 3 * math.log2(2 / 3) + 1 / 3 * math.log2(1 / 3))
    assert M.fluency_entropy("a b a b") == pytest.approx((2 / 3 * h2 + 4 / 3 * 1.0) / 2)
    assert M.fluency_entropy("word") == 0.0
