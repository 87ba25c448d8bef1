"""Sequential unlearning's round loop (``eval.sequential_rounds.run_rounds``, what the demo's
sequential command runs) with known answers on a tiny model in memory: each round unlearns its
own group from the previous round's model, a round that changes nothing repeats the previous
round's scores, and every score is read off its own round's model. And nested forget sets
(TOFU's forget01 ⊂ forget05 ⊂ forget10 in the local data) become disjoint rounds.

The groups' answers use disjoint token ranges, and a round's "unlearning" is gradient ascent on
the training package's own GA loss (the masked-diffusion loss of the group's answers, negated),
so the group a round works on is the one whose answer NLL rises: a round applied to the wrong
group, rounds run out of order, or a score read from another round's model shows up as the NLL
rising in the wrong column or not where it should.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mdu_jax.data.sources import load_tofu
from mdu_jax.eval.sequential_rounds import nested_rounds, run_rounds
from mdu_jax.experiments.relearn import heldout_nll, sft_batches
from mdu_jax.training.config import ObjectiveSection
from mdu_jax.training.loss import make_loss_fn
from tests.training.loss_helpers import tiny_config, tiny_params

CFG = tiny_config("llada")
_RNG = np.random.default_rng(0)
# Three groups of two (prompt, answer) pairs: prompts from tokens 2..9 (shared), group g's
# answers from tokens 10 + 20g .. 29 + 20g only (disjoint from the other groups').
GROUPS = [[(_RNG.integers(2, 10, 3).tolist(), _RNG.integers(10 + 20 * g, 30 + 20 * g, 4).tolist()) for _ in range(2)]
          for g in range(3)]
STEPS = 3
_GA = make_loss_fn(CFG, ObjectiveSection(method="ga"))


@jax.jit
def _ga_step(params, batch, key, lr):
    grads = jax.grad(lambda p: _GA(p, None, batch, key, 0, None)[0])(params)
    return jax.tree.map(lambda p, g: p - lr * g, params, grads)


def unlearn(params, pairs, lr):
    """STEPS plain gradient steps of the GA loss on `pairs` at rate `lr` (lr 0: params unchanged)."""
    batches = sft_batches(CFG, pairs, len(pairs))
    for i in range(STEPS):
        batch = {**batches(i), "is_forget": np.ones(len(pairs), bool)}
        params = _ga_step(params, jax.tree.map(jnp.asarray, batch), jax.random.key(i), jnp.float32(lr))
    return params


def evaluate(params):
    """Each group's mean answer NLL (nats/token, Monte Carlo at a fixed seed: equal params, equal numbers)."""
    return [heldout_nll(CFG, params, pairs, mc_samples=8)["nll"] for pairs in GROUPS]


def _run(start, lrs):
    steps = []

    def step(j, group, model):
        steps.append(j)
        tuned = unlearn(model, GROUPS[group], lrs[j - 1])
        return tuned, evaluate(tuned)

    rounds = run_rounds(start, evaluate(start), [0, 1, 2], step, lambda result, i: {"nll": result[i]})
    assert steps == [1, 2, 3]
    return rounds


@pytest.fixture(scope="module")
def start():
    return tiny_params(CFG, scale=1.0)


def _nll(rounds):
    return np.array([[g["nll"] for g in r["groups"]] for r in rounds])  # [round, group]


def test_each_round_unlearns_its_own_group_from_the_previous_rounds_model(start):
    rounds = _run(start, [0.1, 0.1, 0.1])
    assert [r["round"] for r in rounds] == [0, 1, 2, 3] and [r["unlearned_group"] for r in rounds] == [None, 1, 2, 3]
    nll = _nll(rounds)
    rise = np.diff(nll, axis=0)  # [round j, group]: what round j did to each group
    print("answer NLL per round and group:\n", np.round(nll, 3))
    for j in range(3):
        others = np.delete(rise[j], j)
        assert rise[j, j] > 0.5 and rise[j, j] > 4 * np.abs(others).max(), rise
    # The same chain built by hand: round j's model is round j-1's unlearned on group j, and
    # each row of scores is that model's own evaluation, to the bit.
    model = start
    for j in range(3):
        model = unlearn(model, GROUPS[j], 0.1)
        assert nll[j + 1].tolist() == evaluate(model)
    for a, b in zip(jax.tree.leaves(rounds[3]["model"]), jax.tree.leaves(model)):
        assert np.asarray(a).tobytes() == np.asarray(b).tobytes()


def test_a_round_that_changes_nothing_repeats_the_previous_rounds_scores(start):
    rounds = _run(start, [0.1, 0.0, 0.1])
    nll = _nll(rounds)
    assert nll[2].tolist() == nll[1].tolist()  # round 2 at rate 0: every group as after round 1
    assert nll[1, 0] > nll[0, 0] + 0.5 and nll[3, 2] > nll[2, 2] + 0.5
    assert rounds[2]["result"] == rounds[1]["result"]


def test_nested_sets_become_disjoint_rounds_in_order():
    assert nested_rounds([["a"], ["a", "b", "c"], ["d", "a", "b", "c"]], ["s1", "s2", "s3"]) == \
        [["a"], ["b", "c"], ["d"]]
    with pytest.raises(ValueError, match="s2: does not contain the set before it .1 of its items missing, e.g. 'b'"):
        nested_rounds([["a", "b"], ["a", "c"]], ["s1", "s2"])
    with pytest.raises(ValueError, match="s2: adds nothing"):
        nested_rounds([["a"], ["a"]], ["s1", "s2"])
    with pytest.raises(ValueError, match="s1: an item appears twice"):
        nested_rounds([["a", "a"]], ["s1"])


def test_tofu_forget01_05_10_nest_into_rounds_of_40_160_200_questions(shared_data):
    names = ["forget01", "forget05", "forget10"]
    sets = [[row["question"] for row in load_tofu(name, data_dir=shared_data / "tofu")] for name in names]
    rounds = nested_rounds(sets, names)
    assert [len(r) for r in rounds] == [40, 160, 200]
    assert rounds[0] == sets[0] and set(rounds[0] + rounds[1]) == set(sets[1])
    assert sorted(q for r in rounds for q in r) == sorted(sets[2])
