"""Sequential unlearning's bookkeeping: forget groups unlearned one per round, each round from the
previous round's model, and every group's score read off each round's own evaluation.

``run_rounds`` is the loop the demo's sequential command (``demo.sequential``) runs with its
checkpoints and TOFU evaluations, and that a test runs with a tiny model in memory: what a round
trains and how a model is evaluated are the caller's functions; which group a round unlearns,
which model it starts from and which evaluation each score is read from are decided here.

``nested_rounds`` turns nested forget sets (TOFU's forget01 ⊂ forget05 ⊂ forget10) into disjoint
rounds: the smallest set, then what each set adds to the one before it.
"""

from __future__ import annotations

from typing import Any, Callable, Hashable, Sequence, TypeVar

Group = TypeVar("Group")
Key = TypeVar("Key", bound=Hashable)


def run_rounds(start: Any, before: Any, groups: Sequence[Group],
               step: Callable[[int, Group, Any], tuple[Any, Any]],
               score: Callable[[Any, int], dict[str, Any]]) -> list[dict[str, Any]]:
    """[{'round', 'unlearned_group', 'model', 'result', 'groups'}] for round 0 (`start`, its
    evaluation `before`) and rounds 1..k.

    Round j (1-based) calls ``step(j, groups[j-1], model of round j-1) -> (model, evaluation)``;
    'groups' of every round is ``[score(that round's evaluation, i) for i in 0..k-1]``: the
    groups unlearned earlier, this round's and the later ones, all from the same evaluation.
    'unlearned_group' is j (1-based; None for round 0).
    """
    if not groups:
        raise ValueError("groups: nothing to unlearn")

    def record(j: int, model: Any, result: Any) -> dict[str, Any]:
        return {"round": j, "unlearned_group": j or None, "model": model, "result": result,
                "groups": [score(result, i) for i in range(len(groups))]}

    rounds = [record(0, start, before)]
    model = start
    for j, group in enumerate(groups, 1):
        model, result = step(j, group, model)
        rounds.append(record(j, model, result))
    return rounds


def nested_rounds(sets: Sequence[Sequence[Key]], names: Sequence[str] | None = None) -> list[list[Key]]:
    """Disjoint rounds of nested sets [S1 ⊂ S2 ⊂ ... ⊂ Sk] (items such as question texts):
    [S1, S2 minus S1, ..., Sk minus Sk-1], each in its set's order. A ValueError names the first
    set that does not contain the one before it, repeats an item, or adds nothing."""
    names = list(names) if names is not None else [f"set {i + 1}" for i in range(len(sets))]
    if len(names) != len(sets) or not sets:
        raise ValueError(f"sets: expected one name per set and at least one set, got {len(sets)} sets, {names}")
    rounds: list[list[Key]] = []
    previous: list[Key] = []
    for name, items in zip(names, sets):
        items = list(items)
        mine = set(items)
        if len(mine) != len(items):
            raise ValueError(f"{name}: an item appears twice")
        missing = [x for x in previous if x not in mine]
        if missing:
            raise ValueError(f"{name}: does not contain the set before it ({len(missing)} of its items missing, "
                             f"e.g. {missing[0]!r}); the sets must nest")
        before = set(previous)
        added = [x for x in items if x not in before]
        if not added:
            raise ValueError(f"{name}: adds nothing to the set before it (an empty round)")
        rounds.append(added)
        previous = items
    return rounds


__all__ = ["run_rounds", "nested_rounds"]
