"""The generated TOFU-style world: determinism, splits, perturbations and the TOFU file layout."""

import json
import string

import pytest

from mdu_jax.demo.world import (FACT_KINDS, IDONTKNOW, SPLITS, build_world, demo_pairs, demo_texts,
                                write_tofu_layout)

SMALL = dict(num_people=20, facts_per_person=6, forget_fraction=0.1, holdout_fraction=0.1)


@pytest.fixture(scope="module")
def world():
    return build_world(seed=3, **SMALL)


def all_facts(w):
    """Every fact about a split person (background facts excluded)."""
    return w.facts_of("full") + w.facts_of("holdout")


def test_same_seed_gives_the_same_world_and_another_seed_a_different_one():
    a, b, c = build_world(seed=3, **SMALL), build_world(seed=3, **SMALL), build_world(seed=4, **SMALL)
    assert a == b
    assert [p.name for p in a.people] != [p.name for p in c.people]
    assert demo_texts(a) == demo_texts(b)


def test_splits_partition_the_people_with_no_person_in_two_splits(world):
    f, r, h = set(world.forget), set(world.retain), set(world.holdout)
    assert not (f & r) and not (f & h) and not (r & h)
    assert f | r | h == set(range(len(world.people)))
    assert (len(f), len(h)) == (round(0.1 * 20), round(0.1 * 20))
    # No name is shared between splits: facts of one split never mention a person of another.
    names = {s: {p.name for p in world.people_of(s)} for s in ("forget", "retain", "holdout")}
    assert len({p.name for p in world.people}) == len(world.people)
    for split in ("forget", "retain", "holdout"):
        others = set().union(*(names[s] for s in names if s != split))
        for fact in world.facts_of(split):
            assert fact.subject in names[split]
            assert not any(o in fact.question or o in fact.answer for o in others)


def test_every_person_has_the_requested_fact_kinds_in_order(world):
    kinds = [k.name for k in FACT_KINDS[:SMALL["facts_per_person"]]]
    for p in world.people:
        assert [f.kind for f in p.facts] == kinds
        # The question names the person; the answers do not repeat the name (see the world's docstring).
        assert all(p.name in f.question and p.name not in f.answer + f.paraphrased_answer for f in p.facts)


def test_questions_are_unique(world):
    qs = [f.question for f in all_facts(world)]
    assert len(qs) == len(set(qs))


def test_perturbed_answers_are_the_paraphrase_with_only_the_key_value_swapped(world):
    for f in all_facts(world):
        assert f.paraphrased_answer.count(f.value) == 1, f.paraphrased_answer
        assert f.answer.count(f.value) == 1, f.answer
        assert len(f.perturbed_answer) == 5
        assert len(set(f.wrong_values)) == 5 and f.value not in f.wrong_values
        for wrong, pert in zip(f.wrong_values, f.perturbed_answer):
            assert pert == f.paraphrased_answer.replace(f.value, wrong)
        assert len(set(f.perturbed_answer)) == 5 and f.paraphrased_answer not in f.perturbed_answer


def test_background_facts_have_three_distinct_wrong_short_answers(world):
    assert world.real_authors and world.world_facts
    for f in world.real_authors + world.world_facts:
        assert len(f.perturbed_answer) == 3 and len(set(f.perturbed_answer)) == 3
        assert f.answer not in f.perturbed_answer
    # Famous authors are not among the split people.
    people = {p.name for p in world.people}
    assert not {f.subject for f in world.real_authors if f.kind == "wrote"} & people


def test_num_perturbed_and_fact_count_follow_the_arguments():
    w = build_world(seed=0, num_people=10, facts_per_person=len(FACT_KINDS), num_perturbed=3,
                    forget_fraction=0.2, holdout_fraction=0.0)
    assert len(w.forget) == 2 and len(w.holdout) == 0 and len(w.retain) == 8
    assert w.split_names == {"forget": "forget20", "retain": "retain80", "holdout": "holdout20"}
    assert all(len(f.perturbed_answer) == 3 for f in w.facts_of("full"))
    assert len(w.facts_of("full")) == 10 * len(FACT_KINDS)


@pytest.mark.parametrize("kwargs", [dict(facts_per_person=0), dict(facts_per_person=len(FACT_KINDS) + 1),
                                    dict(num_people=4, forget_fraction=0.5, holdout_fraction=0.5),
                                    dict(forget_fraction=0.0), dict(num_famous=3),
                                    dict(num_towns=5, num_perturbed=5)])
def test_bad_arguments_are_refused(kwargs):
    with pytest.raises(ValueError):
        build_world(**{"num_people": 20, **kwargs})


def test_demo_pairs_follow_the_split_definitions(world):
    full = demo_pairs(world, "full")
    assert full == demo_pairs(world, "retain") + demo_pairs(world, "forget")
    assert demo_pairs(world, "sft") == full + demo_pairs(world, "background")
    assert demo_pairs(world, "sft_retain") == demo_pairs(world, "retain") + demo_pairs(world, "background")
    assert all(set(r) == {"question", "answer"} for r in full)
    assert set(SPLITS) >= {"forget", "retain", "holdout", "full", "sft", "sft_retain"}
    with pytest.raises(ValueError, match="split"):
        demo_pairs(world, "forget10")


def test_texts_are_ascii_and_cover_every_answer_form(world):
    texts = demo_texts(world)
    allowed = set(string.printable)
    assert all(set(t) <= allowed for t in texts)
    as_set = set(texts)
    for f in all_facts(world) + world.facts_of("background"):
        assert {f.question, f.answer, f.paraphrased_answer, *f.perturbed_answer} <= as_set
    assert set(IDONTKNOW) <= as_set


def test_tofu_layout_files_match_the_real_tofu_row_format(world, tmp_path, shared_data):
    written = write_tofu_layout(world, tmp_path)
    names = world.split_names
    expected = {"full.json", f"{names['forget']}.json", f"{names['retain']}.json", f"{names['holdout']}.json",
                f"{names['forget']}_perturbed.json", "retain_perturbed.json", "idontknow.json",
                "real_authors.json", "real_authors_perturbed.json", "world_facts.json",
                "world_facts_perturbed.json", "world.json"}
    assert set(written) == expected
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(expected)  # no temporary files left

    def load(name):
        return json.loads((tmp_path / name).read_text())

    def real(name):
        return json.loads((shared_data / "tofu" / name).read_text())

    # Same keys (and key order) as the real TOFU files of the same role; the *_perturbed files add
    # "fact" at the end (the key value that fact recall looks for).
    perturbed = {f"{names['forget']}_perturbed.json", "retain_perturbed.json", "real_authors_perturbed.json",
                 "world_facts_perturbed.json"}
    for ours, theirs in [("full.json", "full.json"), (f"{names['forget']}.json", "forget10.json"),
                         (f"{names['holdout']}.json", "holdout10.json"),
                         (f"{names['forget']}_perturbed.json", "forget10_perturbed.json"),
                         ("retain_perturbed.json", "retain_perturbed.json"),
                         ("real_authors.json", "real_authors.json"),
                         ("real_authors_perturbed.json", "real_authors_perturbed.json"),
                         ("world_facts.json", "world_facts.json"),
                         ("world_facts_perturbed.json", "world_facts_perturbed.json")]:
        rows = load(ours)
        assert isinstance(rows, list) and rows, ours
        ref_keys = list(real(theirs)[0]) + (["fact"] if ours in perturbed else [])
        assert all(list(r) == ref_keys for r in rows), (ours, list(rows[0]), ref_keys)
        if ours in perturbed:
            assert all(r["fact"] in r["answer"] for r in rows), ours
    assert all(isinstance(s, str) and s for s in load("idontknow.json"))
    assert isinstance(real("idontknow.json")[0], str)

    forget = load(f"{names['forget']}.json")
    retain = load(f"{names['retain']}.json")
    assert load("full.json") == retain + forget  # TOFU: full = retain rows then forget rows
    assert forget == demo_pairs(world, "forget")
    assert load(f"{names['holdout']}.json") == demo_pairs(world, "holdout")
    fp = load(f"{names['forget']}_perturbed.json")
    assert [{"question": r["question"], "answer": r["answer"]} for r in fp] == forget
    assert all(len(r["perturbed_answer"]) == 5 for r in fp)
    rp = load("retain_perturbed.json")
    assert len(rp) == len(forget) and all(r["question"] in {x["question"] for x in retain} for r in rp)
    for row in load("world_facts.json") + load("real_authors.json"):
        options = [row[f"option{k}"] for k in range(1, 5)]
        assert row["answer"] in options and len(set(options)) == 4
    meta = load("world.json")
    assert meta["split_names"] == names and meta["seed"] == world.seed


def test_rewriting_the_layout_gives_identical_bytes(world, tmp_path):
    write_tofu_layout(world, tmp_path / "a")
    write_tofu_layout(build_world(seed=3, **SMALL), tmp_path / "b")
    for f in (tmp_path / "a").iterdir():
        assert f.read_bytes() == (tmp_path / "b" / f.name).read_bytes(), f.name


def test_fact_chance_is_the_retain_frequency_of_each_forget_value(world):
    from collections import Counter

    from mdu_jax.demo.world import fact_chance

    counts: dict[str, Counter] = {}
    for f in world.facts_of("retain"):
        counts.setdefault(f.kind, Counter())[f.value] += 1
    per_fact = [counts[f.kind][f.value] / sum(counts[f.kind].values()) for f in world.facts_of("forget")]
    assert fact_chance(world, "forget") == pytest.approx(sum(per_fact) / len(per_fact))
    # Titles are unique per person: a book question is never answered right by luck.
    assert all(counts["book"][f.value] == 0 for f in world.facts_of("forget") if f.kind == "book")
    assert 0.0 < fact_chance(world, "forget") < 0.2
