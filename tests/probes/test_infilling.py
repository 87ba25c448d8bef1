"""The partial-reveal (infilling) attack: reveal orders, and a model that memorised an answer
recovers it where its untrained twin does not."""

import jax
import numpy as np
import pytest

from mdu_jax.eval.probes.infilling import answer_confidence, infilling_curve, reveal_count, reveal_order
from mdu_jax.experiments.relearn import finetune
from mdu_jax.models.params import init_params
from mdu_jax.training.config import OptimSection
from tests.training.loss_helpers import tiny_config

RNG = np.random.default_rng(7)
PROMPT = RNG.integers(2, 95, 4).tolist()
ANSWER = RNG.integers(2, 95, 10).tolist()


@pytest.fixture(scope="module")
def twins():
    """(cfg, untrained params, the same params after 100 SFT steps on the one (PROMPT, ANSWER) pair;
    60 steps left r = 0.9 recovery at 0.8, 100 give 1.0 for every order)."""
    cfg = tiny_config("llada")
    untrained = init_params(cfg, jax.random.key(0))
    optim = OptimSection(lr=1e-2, schedule="constant", warmup_ratio=0.0, max_update_ratio=0.0)
    trained, losses = finetune(cfg, untrained, [(PROMPT, ANSWER)], steps=100, optim=optim, batch_size=8)
    assert losses[-1] < 0.2 * losses[0], losses  # it did memorise
    return cfg, untrained, trained


def test_reveal_count_floors_and_always_hides_one():
    assert reveal_count(0.9, 10) == 9
    assert reveal_count(0.0, 10) == 0
    assert reveal_count(0.5, 7) == 3
    assert reveal_count(0.99, 3) == 2
    with pytest.raises(ValueError, match="ratio"):
        reveal_count(1.0, 10)


def test_reveal_orders():
    assert reveal_order("prefix", 4).tolist() == [0, 1, 2, 3]
    conf = np.array([0.1, 0.9, 0.5, 0.9])
    assert reveal_order("least_informative", 4, confidence=conf).tolist() == [1, 3, 2, 0]  # ties: earlier first
    a = reveal_order("random", 12, seed=3, pair_index=1)
    assert sorted(a.tolist()) == list(range(12))
    assert a.tolist() == reveal_order("random", 12, seed=3, pair_index=1).tolist()
    assert a.tolist() != reveal_order("random", 12, seed=3, pair_index=2).tolist()
    with pytest.raises(ValueError, match="confidence"):
        reveal_order("least_informative", 4)
    with pytest.raises(ValueError, match="order"):
        reveal_order("suffix", 4)


def test_memorised_answer_is_recovered_at_r09_and_not_by_the_untrained_twin(twins):
    cfg, untrained, trained = twins
    # Ten random orders (one pair each) at r = 0.9: ten hidden tokens, each with 9 revealed.
    pairs = [(PROMPT, ANSWER)] * 10
    for order in ("random", "prefix", "least_informative"):
        got = infilling_curve(cfg, trained, pairs, [0.5, 0.9], order=order)
        twin = infilling_curve(cfg, untrained, pairs, [0.5, 0.9], order=order)
        assert got.hidden_tokens == [50, 10]
        # Chance is 1/95 per token; the memorised model recovers (nearly) all of them.
        assert got.token_accuracy[1] >= 0.9, (order, got)
        assert twin.token_accuracy[1] <= 0.2, (order, twin)
        assert got.token_accuracy[0] > twin.token_accuracy[0] + 0.5, (order, got, twin)


def test_least_informative_hides_the_tokens_the_model_is_least_sure_of(twins):
    cfg, untrained, _ = twins
    conf = answer_confidence(cfg, untrained, [(PROMPT, ANSWER)])[0]
    assert conf.shape == (len(ANSWER),) and np.all((conf > 0) & (conf < 1))
    order = reveal_order("least_informative", len(ANSWER), confidence=conf)
    revealed = order[: reveal_count(0.7, len(ANSWER))]
    hidden = np.setdiff1d(np.arange(len(ANSWER)), revealed)
    assert conf[revealed].min() >= conf[hidden].max()


def test_bad_pairs_are_named():
    cfg = tiny_config("llada")
    with pytest.raises(ValueError, match=r"pairs\[0\]: empty answer"):
        infilling_curve(cfg, None, [([1, 2], [])], [0.5])
    with pytest.raises(ValueError, match="order"):
        infilling_curve(cfg, None, [([1, 2], [3])], [0.5], order="suffix")


@pytest.mark.parametrize("family", ["llada", "dream"])
def test_padding_and_batching_do_not_change_a_pairs_numbers(family):
    """A short pair scored alone and right-padded beside a longer one (and in a partly filled
    chunk) gives the same confidences: padding is masked out of attention for both families."""
    cfg = tiny_config(family)
    params = init_params(cfg, jax.random.key(1))
    short, long = (PROMPT, ANSWER[:4]), (PROMPT + ANSWER, ANSWER)
    alone = answer_confidence(cfg, params, [short], batch_size=1)[0]
    together = answer_confidence(cfg, params, [long, short, long], batch_size=2)[1]
    np.testing.assert_allclose(together, alone, rtol=1e-5, atol=1e-7)  # float32, summation order only


def test_a_suffix_is_shown_and_never_hidden_or_scored(twins):
    """(prompt, answer, suffix) pairs: the suffix (a template tail) follows the answer, always
    visible; only the answer's tokens are hidden and counted."""
    cfg, untrained, trained = twins
    head, tail = ANSWER[:7], ANSWER[7:]
    with_suffix = infilling_curve(cfg, trained, [(PROMPT, head, tail)] * 4, [0.0, 0.5])
    bare = infilling_curve(cfg, trained, [(PROMPT, head)] * 4, [0.0, 0.5])
    assert with_suffix.hidden_tokens == bare.hidden_tokens == [28, 16]
    # The memorised model saw the answer with its last three tokens after it: shown them, it
    # recovers the rest from the prompt alone (r = 0).
    assert with_suffix.token_accuracy[0] >= 0.9
    conf = answer_confidence(cfg, untrained, [(PROMPT, head, tail)])[0]
    assert conf.shape == (len(head),)
    with pytest.raises(ValueError, match=r"pairs\[0\]: expected \(prompt_ids, answer_ids\[, suffix_ids\]\)"):
        infilling_curve(cfg, trained, [(PROMPT, head, tail, tail)], [0.5])
