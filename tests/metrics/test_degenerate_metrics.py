"""The metrics that expose degenerate forgetting, against hand-computed values."""

import math

import numpy as np
import pytest
import scipy.stats

from mdu_jax import metrics as M


def test_ks_statistic_by_hand_and_as_scipy():
    # a = {1, 2, 3}, b = {2.5, 4}: at x = 2, F_a = 2/3 and F_b = 0 (at x = 3 the gap is 1 - 1/2).
    assert M.ks_statistic([1, 2, 3], [2.5, 4]) == pytest.approx(2 / 3)
    assert M.ks_statistic([1, 2, 3], [4, 5, 6]) == 1.0
    assert M.ks_statistic([1, 2, 3], [3, 2, 1]) == 0.0
    rng = np.random.default_rng(1)
    a, b = rng.lognormal(size=40), rng.lognormal(0.3, size=25)
    assert M.ks_statistic(a, b) == pytest.approx(scipy.stats.ks_2samp(a, b).statistic, abs=1e-12)
    assert M.ks_statistic(1 / a, 1 / b) == pytest.approx(M.ks_statistic(a, b))  # monotone-invariant


def test_log_ratio_wasserstein_by_hand():
    e = math.e
    # log R: {0, 1} vs {2}: the CDF gap is 1/2 on [0, 1) and 1 on [1, 2) -> 0.5 + 1 = 1.5 nats.
    assert M.log_ratio_wasserstein([1.0, e], [e ** 2]) == pytest.approx(1.5)
    # Equal samples: 0; a shift of every log R by c moves the distance by exactly |c|.
    assert M.log_ratio_wasserstein([0.5, 2.0], [2.0, 0.5]) == 0.0
    rng = np.random.default_rng(2)
    a, b = rng.lognormal(size=30), rng.lognormal(size=17)
    assert M.log_ratio_wasserstein(a, a * math.exp(0.7)) == pytest.approx(0.7)
    assert M.log_ratio_wasserstein(a, b) == pytest.approx(scipy.stats.wasserstein_distance(np.log(a), np.log(b)))
    with pytest.raises(ValueError, match="> 0"):
        M.log_ratio_wasserstein([0.0, 1.0], [1.0])


def test_answer_shape_rates_by_hand():
    gens = ["", "  .  ", "Yes.", "born in 1950", "The author was born in Velmora."]
    assert [M.word_count(g) for g in gens] == [0, 0, 1, 3, 6]
    assert M.empty_answer_rate(gens) == pytest.approx(2 / 5)
    assert M.short_answer_rate(gens) == pytest.approx(3 / 5)      # <= 2 words: "", " . ", "Yes."
    assert M.short_answer_rate(gens, max_words=3) == pytest.approx(4 / 5)
    assert M.mean_word_count(gens) == pytest.approx(10 / 5)
    # 10 words over 5 answers vs the reference's 5 x 5 words: 2 / 5.
    assert M.relative_length(gens, ["one two three four five"] * 5) == pytest.approx(0.4)
    assert M.relative_length(["a"], [""]) is None
    with pytest.raises(ValueError, match="same questions"):
        M.relative_length(["a"], ["a", "b"])
    with pytest.raises(ValueError, match="no generations"):
        M.empty_answer_rate([])


def test_fact_recall_matches_whole_words_only():
    assert M.contains_fact("The author was born in the year 1949.", "1949")
    assert M.contains_fact("Its title is  secret   MIRROR.", "Secret Mirror")   # case, spacing
    assert not M.contains_fact("born in 19490", "1949")                         # inside a number
    assert not M.contains_fact("born in Velmorabury", "Velmora")                # inside a word
    assert not M.contains_fact("", "Velmora")
    gens = ["born in Velmora", "born in Zobury", "", "the year 1950"]
    facts = ["Velmora", "Velmora", "1950", "1950"]
    np.testing.assert_array_equal(M.fact_hits(gens, facts), [True, False, False, True])
    assert M.fact_recall(gens, facts) == 0.5
    with pytest.raises(ValueError, match="2 generations but 1 facts"):
        M.fact_hits(["a", "b"], ["a"])
    with pytest.raises(ValueError, match="empty fact"):
        M.contains_fact("a", "  ")
