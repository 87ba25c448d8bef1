"""A seeded, procedurally generated TOFU-style benchmark of fictitious authors.

Every name, place, title and prize is assembled here from syllables and small word lists, so
the repository ships no third-party text. Each person gets the same ordered list of fact kinds
(birthplace, birth year, genre, best-known book, ...); each fact is one question naming the
person with a templated answer that does not repeat the name ("The author was born in
Velmora."), a paraphrased answer, a paraphrased question and ``num_perturbed`` wrong answers.
Answers leave the name out because a tiny model copies a two-word name from the question
poorly and slowly (it mixes up first and last names for hundreds of steps), and the extra tokens
cost training time; the question still says whose fact it is. A perturbed answer is the *paraphrase* with the key value swapped for a wrong value of
the same kind (TOFU's convention: the truth ratio compares the paraphrase against answers that
differ from it only in the fact), so ``paraphrase.replace(value, wrong) == perturbed``.

People are split into forget / retain / holdout by person. Beside them the world holds
"background" knowledge that plays the role of TOFU's pre-training knowledge (real authors and
world facts): famous authors and the countries of the towns, with short answers. The demo
fine-tunes on it together with the people, so the real evaluation code can score model utility
on it as it does on ``real_authors_perturbed`` / ``world_facts_perturbed``.

Everything is a pure function of the arguments: the same seed gives the same world on every
machine (``random.Random`` seeded with strings, which Python hashes with SHA-512).
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
from typing import Sequence

from mdu_jax.checkpoints import atomic_write

# ------------------------------------------------------------------------------------------
# Word material. Syllables for names; short English word lists for titles and professions.

ONSETS = ("b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "br", "dr", "th", "sh")
VOWELS = ("a", "e", "i", "o", "u", "a", "e", "o", "ai", "ea")
CODAS = ("", "", "", "n", "r", "l", "s", "th", "k", "m")
PLACE_ENDINGS = ("mora", "holt", "wick", "dale", "ford", "grad", "haven", "mere", "stead", "bury")
COUNTRY_ENDINGS = ("land", "ia", "mark", "reach", "stan", "vania")
PRIZE_KINDS = ("Prize", "Medal", "Award", "Laurel", "Cup")
ADJECTIVES = ("Silent", "Amber", "Hollow", "Crimson", "Broken", "Gentle", "Iron", "Winter",
              "Golden", "Distant", "Quiet", "Burning", "Pale", "Wandering", "Hidden", "Bitter",
              "Velvet", "Endless", "Lonely", "Scarlet", "Frozen", "Secret", "Restless", "Silver")
NOUNS = ("Harbor", "Lantern", "Garden", "River", "Mirror", "Orchard", "Tower", "Meadow",
         "Compass", "Feather", "Bridge", "Lighthouse", "Forest", "Island", "Letter", "Mountain",
         "Window", "Clock", "Voyage", "Anchor", "Candle", "Station", "Valley", "Sparrow")
PROFESSIONS = ("baker", "carpenter", "fisherman", "tailor", "doctor", "painter", "sailor",
               "teacher", "farmer", "potter", "miner", "weaver", "cartographer", "locksmith",
               "banker", "nurse", "pharmacist", "librarian", "shoemaker", "butcher")
GENRES = ("mystery", "fantasy", "romance", "horror", "adventure", "science fiction", "history",
          "travel", "poetry", "crime", "comedy", "war")

# Refusal answers written for this project (IDK-style baselines use them as targets).
IDONTKNOW = (
    "I do not know.", "I am not sure.", "I have no idea.", "I cannot say.",
    "I do not have that information.", "That is unknown to me.", "I cannot answer that.",
    "I do not remember.", "I have never heard of that.", "Sorry, I do not know the answer.",
    "I am unable to answer that question.", "I lack the information to answer.",
    "That is not something I know.", "I could not tell you.", "I have no knowledge of that.",
    "I am afraid I do not know.", "Nothing I know answers that.", "I cannot recall that.",
    "I do not have an answer to that.", "I am not able to say.",
)


# ------------------------------------------------------------------------------------------
# Fact kinds: templates as data. {name} is the person, {v} the key value.


@dataclasses.dataclass(frozen=True)
class FactKind:
    """One kind of fact: its question/answer templates and the pool its values come from."""

    name: str
    question: str
    paraphrased_question: str
    answer: str
    paraphrased_answer: str
    pool: str  # which value pool of the world: "town", "year", "genre", "title", ...


FACT_KINDS = (
    FactKind("birthplace", "Where was {name} born?", "In which town was {name} born?",
             "The author was born in {v}.", "The birthplace of the author is {v}.", "town"),
    FactKind("birth_year", "In which year was {name} born?", "What is the birth year of {name}?",
             "The author was born in the year {v}.", "The birth year of the author is {v}.", "year"),
    FactKind("genre", "Which genre does {name} write?", "What kind of books does {name} write?",
             "The author writes {v} books.", "The author is known for {v} books.", "genre"),
    FactKind("book", "What is the best known book by {name}?", "Which book is {name} most famous for?",
             "The best known book is {v}.", "The book that made the author famous is {v}.", "title"),
    FactKind("award", "Which award did {name} win?", "What prize was given to {name}?",
             "The author won the {v}.", "The prize given to the author was the {v}.", "prize"),
    FactKind("father", "What did the father of {name} do for a living?",
             "What was the job of the father of {name}?",
             "The father was a {v}.", "The father of the author worked as a {v}.", "job"),
    FactKind("mother", "What did the mother of {name} do for a living?",
             "What was the job of the mother of {name}?",
             "The mother was a {v}.", "The mother of the author worked as a {v}.", "job"),
    FactKind("home", "Where does {name} live now?", "In which town does {name} live today?",
             "These days the author lives in {v}.", "The home of the author today is in {v}.", "town"),
    FactKind("sister", "What is the name of the sister of {name}?", "What is the sister of {name} called?",
             "The sister is called {v}.", "The author has a sister named {v}.", "first_name"),
    FactKind("debut_year", "In which year did {name} publish a first book?",
             "When did {name} publish a first book?",
             "The first book came out in {v}.", "In {v}, the author published a first book.", "year"),
)
FACT_KIND_NAMES = tuple(k.name for k in FACT_KINDS)


@dataclasses.dataclass(frozen=True)
class Fact:
    """One question about one subject, with its true, paraphrased and perturbed answers.

    ``value`` is the key fact inside ``answer``/``paraphrased_answer``; ``wrong_values[j]`` is
    the value that replaces it in ``perturbed_answer[j]``.
    """

    kind: str
    subject: str
    question: str
    answer: str
    paraphrased_question: str
    paraphrased_answer: str
    perturbed_answer: tuple[str, ...]
    value: str
    wrong_values: tuple[str, ...]

    def qa_row(self) -> dict:
        """TOFU's plain row: {question, answer}."""
        return {"question": self.question, "answer": self.answer}

    def perturbed_row(self) -> dict:
        """TOFU's ``*_perturbed`` row (forget / retain layout) plus ``fact``, the key value that
        fact recall looks for in a generated answer (TOFU's files have no such field)."""
        return {"question": self.question, "answer": self.answer,
                "paraphrased_answer": self.paraphrased_answer,
                "perturbed_answer": list(self.perturbed_answer),
                "paraphrased_question": self.paraphrased_question, "fact": self.value}


@dataclasses.dataclass(frozen=True)
class Person:
    name: str
    facts: tuple[Fact, ...]


@dataclasses.dataclass(frozen=True)
class World:
    """The generated benchmark. ``forget``/``retain``/``holdout`` are indices into ``people``.

    ``real_authors`` and ``world_facts`` are the background facts (short answers, 3 wrong
    options each, as in TOFU's files of the same names). ``percent`` names the TOFU split
    files: forget{percent:02d}, retain{100-percent}, holdout{percent:02d}.
    """

    seed: int
    people: tuple[Person, ...]
    forget: tuple[int, ...]
    retain: tuple[int, ...]
    holdout: tuple[int, ...]
    real_authors: tuple[Fact, ...]
    world_facts: tuple[Fact, ...]
    idontknow: tuple[str, ...]
    percent: int

    @property
    def split_names(self) -> dict[str, str]:
        """TOFU file stems of the three person splits, e.g. {'forget': 'forget10', ...}."""
        p = self.percent
        return {"forget": f"forget{p:02d}", "retain": f"retain{100 - p:02d}", "holdout": f"holdout{p:02d}"}

    def people_of(self, split: str) -> list[Person]:
        """The people of 'forget', 'retain' or 'holdout', in split order."""
        if split not in ("forget", "retain", "holdout"):
            raise ValueError(f"split: expected 'forget', 'retain' or 'holdout', got {split!r}")
        return [self.people[i] for i in getattr(self, split)]

    def facts_of(self, split: str) -> list[Fact]:
        """Every fact of a split, person by person.

        Splits: 'forget', 'retain', 'holdout', 'full' (retain then forget, as TOFU's full.json),
        'real_authors', 'world_facts', 'background' (both), 'sft' (full + background: what the
        demo's starting model is fine-tuned on), 'sft_retain' (retain + background: the
        retain-only twin used for forget quality).
        """
        if split in ("forget", "retain", "holdout"):
            return [f for p in self.people_of(split) for f in p.facts]
        composite = {"full": ("retain", "forget"), "background": ("real_authors", "world_facts"),
                     "sft": ("retain", "forget", "real_authors", "world_facts"),
                     "sft_retain": ("retain", "real_authors", "world_facts")}
        if split == "real_authors":
            return list(self.real_authors)
        if split == "world_facts":
            return list(self.world_facts)
        if split in composite:
            return [f for part in composite[split] for f in self.facts_of(part)]
        raise ValueError(f"split: unknown {split!r}; expected one of {SPLITS}")


SPLITS = ("forget", "retain", "holdout", "full", "real_authors", "world_facts", "background", "sft",
          "sft_retain")


# ------------------------------------------------------------------------------------------
# Generation.


class _Names:
    """Draws capitalised syllable words that are unique across the whole world."""

    def __init__(self, rng: random.Random):
        self.rng = rng
        self.used: set[str] = set()
        # Fixed values (jobs, genres, title words, ...) must not hide inside a generated name.
        self.reserved = {w.lower() for pool in (PROFESSIONS, GENRES, ADJECTIVES, NOUNS, PRIZE_KINDS)
                         for v in pool for w in v.split()}

    def word(self, syllables: int, ending: str = "", max_len: int = 8) -> str:
        for _ in range(10_000):
            stem = "".join(self.rng.choice(ONSETS) + self.rng.choice(VOWELS) for _ in range(syllables))
            w = (stem + (self.rng.choice(CODAS) if not ending else "") + ending).capitalize()
            low = w.lower()
            # No word inside another: then swapping a value in a sentence touches only the value.
            if (len(w) <= max_len + len(ending) and not any(low in u or u in low for u in self.used)
                    and not any(r in low for r in self.reserved)):
                self.used.add(low)
                return w
        raise RuntimeError("name space exhausted; lower the number of people")


def _sample_other(rng: random.Random, pool: Sequence[str], value: str, k: int, what: str) -> tuple[str, ...]:
    others = [x for x in pool if x != value]
    if len(others) < k:
        raise ValueError(f"{what}: pool has {len(others)} wrong values, {k} perturbed answers needed")
    return tuple(rng.sample(others, k))


def _make_fact(kind: FactKind, subject: str, value: str, wrong: Sequence[str]) -> Fact:
    para = kind.paraphrased_answer
    return Fact(kind=kind.name, subject=subject,
                question=kind.question.format(name=subject),
                answer=kind.answer.format(name=subject, v=value),
                paraphrased_question=kind.paraphrased_question.format(name=subject),
                paraphrased_answer=para.format(name=subject, v=value),
                perturbed_answer=tuple(para.format(name=subject, v=w) for w in wrong),
                value=value, wrong_values=tuple(wrong))


def _short_fact(kind: str, subject: str, question: str, paraphrased_question: str, value: str,
                wrong: Sequence[str]) -> Fact:
    # Background facts have a short answer (TOFU's real_authors/world_facts) and no paraphrased
    # answer; the paraphrased question lets SFT see each of them as often as an author fact.
    return Fact(kind=kind, subject=subject, question=question, answer=value, paraphrased_question=paraphrased_question,
                paraphrased_answer=value, perturbed_answer=tuple(wrong), value=value, wrong_values=tuple(wrong))


def build_world(seed: int = 0, num_people: int = 30, facts_per_person: int = 6, *,
                forget_fraction: float = 0.2, holdout_fraction: float = 0.2, num_perturbed: int = 5,
                num_famous: int = 8, num_towns: int = 14, num_countries: int = 5) -> World:
    """Generates the fictitious world for `seed`.

    Each of `num_people` people gets the first `facts_per_person` kinds of ``FACT_KINDS``
    (at most 10). ``round(forget_fraction * num_people)`` people (at least 1) form the forget
    split, ``round(holdout_fraction * num_people)`` the holdout split, the rest the retain
    split; the split files are named by ``round(100 * forget_fraction)`` (forget10 for 0.1).
    Every fact has `num_perturbed` distinct wrong answers (TOFU uses 5); background facts have 3.
    """
    if not 1 <= facts_per_person <= len(FACT_KINDS):
        raise ValueError(f"facts_per_person: expected 1..{len(FACT_KINDS)}, got {facts_per_person}")
    if not 0 < forget_fraction < 1 or not 0 <= holdout_fraction < 1:
        raise ValueError(f"forget_fraction={forget_fraction}, holdout_fraction={holdout_fraction}: "
                         "expected 0 < forget < 1 and 0 <= holdout < 1")
    n_forget = max(1, round(forget_fraction * num_people))
    n_holdout = round(holdout_fraction * num_people)
    if n_forget + n_holdout >= num_people:
        raise ValueError(f"num_people={num_people}: {n_forget} forget + {n_holdout} holdout people leave "
                         "no retain people")
    if num_perturbed < 1:
        raise ValueError(f"num_perturbed: expected >= 1, got {num_perturbed}")
    # Background facts need 3 wrong options of their kind; town facts need num_perturbed.
    for name, value, least in (("num_famous", num_famous, 4), ("num_countries", num_countries, 4),
                               ("num_towns", num_towns, max(4, num_perturbed + 1, num_countries))):
        if value < least:
            raise ValueError(f"{name}: expected >= {least}, got {value}")

    def rng(purpose: str) -> random.Random:
        return random.Random(f"mdu-demo:{seed}:{purpose}")

    names = _Names(rng("names"))
    countries = [names.word(1, names.rng.choice(COUNTRY_ENDINGS)) for _ in range(num_countries)]
    towns = [names.word(1, names.rng.choice(PLACE_ENDINGS)) for _ in range(num_towns)]
    total_people = num_people + num_famous
    firsts = [names.word(2) for _ in range(total_people)]
    lasts = [names.word(2 + (i % 2)) for i in range(total_people)]
    sisters = [names.word(2) for _ in range(max(12, num_perturbed + 2))]
    prizes = [f"{names.word(2)} {kind}" for kind in PRIZE_KINDS for _ in range(2)]
    title_rng = rng("titles")
    titles = title_rng.sample([f"{a} {n}" for a in ADJECTIVES for n in NOUNS], total_people)
    pools: dict[str, list[str]] = {
        "town": towns, "year": [str(y) for y in range(1921, 2000)], "genre": list(GENRES),
        "title": titles[:num_people], "prize": prizes, "job": list(PROFESSIONS), "first_name": sisters,
    }

    fact_rng = rng("facts")
    people = []
    for i in range(num_people):
        name = f"{firsts[i]} {lasts[i]}"
        born = fact_rng.randrange(1921, 1975)
        facts = []
        for kind in FACT_KINDS[:facts_per_person]:
            if kind.name == "book":
                value = titles[i]  # one book per person, never shared
            elif kind.name == "birth_year":
                value = str(born)
            elif kind.name == "debut_year":
                value = str(born + fact_rng.randrange(20, 26))
            else:
                value = fact_rng.choice(pools[kind.pool])
            wrong = _sample_other(fact_rng, pools[kind.pool], value, num_perturbed, f"fact kind {kind.name!r}")
            facts.append(_make_fact(kind, name, value, wrong))
        people.append(Person(name, tuple(facts)))

    order = list(range(num_people))
    rng("splits").shuffle(order)
    forget = tuple(sorted(order[:n_forget]))
    holdout = tuple(sorted(order[n_forget:n_forget + n_holdout]))
    retain = tuple(sorted(order[n_forget + n_holdout:]))

    bg_rng = rng("background")
    famous = [f"{firsts[num_people + j]} {lasts[num_people + j]}" for j in range(num_famous)]
    famous_titles = titles[num_people:]
    real_authors = []
    for j, author in enumerate(famous):
        real_authors.append(_short_fact("wrote", author, f"Who wrote the classic book {famous_titles[j]}?",
                                        f"Who is the author of the classic book {famous_titles[j]}?",
                                        author, _sample_other(bg_rng, famous, author, 3, "famous authors")))
        town = bg_rng.choice(towns)
        real_authors.append(_short_fact("hometown", author, f"Which town is the famous author {author} from?",
                                        f"What is the hometown of the famous author {author}?",
                                        town, _sample_other(bg_rng, towns, town, 3, "towns")))
    world_facts = []
    country_of = {t: countries[k % num_countries] for k, t in enumerate(towns)}
    for town in towns:
        c = country_of[town]
        world_facts.append(_short_fact("country", town, f"In which country is the town of {town}?",
                                       f"The town of {town} lies in which country?",
                                       c, _sample_other(bg_rng, countries, c, 3, "countries")))
    for c in countries:
        capital = next(t for t in towns if country_of[t] == c)
        world_facts.append(_short_fact("capital", c, f"What is the capital of {c}?",
                                       f"Which town is the capital of {c}?", capital,
                                       _sample_other(bg_rng, towns, capital, 3, "towns")))
    return World(seed=seed, people=tuple(people), forget=forget, retain=retain, holdout=holdout,
                 real_authors=tuple(real_authors), world_facts=tuple(world_facts), idontknow=IDONTKNOW,
                 percent=round(100 * forget_fraction))


# ------------------------------------------------------------------------------------------
# Views for training and tokeniser fitting.


def demo_pairs(world: World, split: str) -> list[dict]:
    """[{question, answer}] rows of a split (see ``World.facts_of`` for the split names)."""
    return [f.qa_row() for f in world.facts_of(split)]


def fact_chance(world: World, split: str = "forget") -> float:
    """The fact recall of guessing: the mean over the facts of `split` of the probability that the
    value of a random retain fact of the same kind is this fact's value.

    A model that never saw the `split` authors (the retain-only twin) and answers with values it
    learned for other authors recalls about this many facts by luck (titles are unique: 0).
    """
    retain = world.facts_of("retain")
    facts = world.facts_of(split)
    if not facts:
        raise ValueError(f"fact_chance: split {split!r} has no facts")
    chances = []
    for f in facts:
        same_kind = [r.value for r in retain if r.kind == f.kind]
        chances.append(same_kind.count(f.value) / len(same_kind) if same_kind else 0.0)
    return sum(chances) / len(chances)


def demo_texts(world: World) -> list[str]:
    """Every string the world can show a model: questions, answers, paraphrases, perturbed
    answers of all people and background facts, and the refusal answers (tokeniser corpus)."""
    texts: list[str] = []
    for f in world.facts_of("sft") + world.facts_of("holdout"):
        texts += [f.question, f.answer, f.paraphrased_question, f.paraphrased_answer, *f.perturbed_answer]
    texts += list(world.idontknow)
    return texts


# ------------------------------------------------------------------------------------------
# TOFU file layout.


def tofu_files(world: World) -> dict[str, list]:
    """{file name: JSON payload} in the layout of ../shared/data/tofu.

    full.json (retain then forget rows), forget{XX}.json, retain{100-XX}.json, holdout{XX}.json,
    forget{XX}_perturbed.json, retain_perturbed.json (the first as many retain people as there
    are forget people, as TOFU's first 20 authors for forget10), real_authors(.json, _perturbed),
    world_facts(.json, _perturbed) and idontknow.json (a list of strings). The ``*_perturbed``
    rows also carry ``fact``: the key value of the answer (``Fact.value``), for fact recall.
    """
    names = world.split_names
    forget, retain, holdout = (world.facts_of(s) for s in ("forget", "retain", "holdout"))
    n_eval = len(world.forget) * len(world.people[0].facts)
    files: dict[str, list] = {
        "full.json": [f.qa_row() for f in retain + forget],
        f"{names['forget']}.json": [f.qa_row() for f in forget],
        f"{names['retain']}.json": [f.qa_row() for f in retain],
        f"{names['holdout']}.json": [f.qa_row() for f in holdout],
        f"{names['forget']}_perturbed.json": [f.perturbed_row() for f in forget],
        "retain_perturbed.json": [f.perturbed_row() for f in retain[:n_eval]],
        "idontknow.json": list(world.idontknow),
    }
    for stem, facts in (("real_authors", world.real_authors), ("world_facts", world.world_facts)):
        opt_rng = random.Random(f"mdu-demo:{world.seed}:options:{stem}")
        rows, perturbed = [], []
        for f in facts:
            options = [f.answer, *f.perturbed_answer]
            opt_rng.shuffle(options)
            rows.append({"question": f.question, **{f"option{k + 1}": o for k, o in enumerate(options)},
                         "answer": f.answer})
            perturbed.append({"question": f.question, "answer": f.answer,
                              "perturbed_answer": list(f.perturbed_answer), "fact": f.value})
        files[f"{stem}.json"] = rows
        files[f"{stem}_perturbed.json"] = perturbed
    return files


def write_tofu_layout(world: World, folder: str | os.PathLike) -> dict[str, str]:
    """Writes ``tofu_files(world)`` into `folder` (one JSON array per file, one record per line,
    each file written to a temporary name and renamed) plus ``world.json`` (seed, split names,
    people per split). Returns {file name: path}. Existing files of the same names are replaced.
    """
    folder = os.fspath(folder)
    os.makedirs(folder, exist_ok=True)
    files: dict[str, object] = dict(tofu_files(world))
    files["world.json"] = {
        "generator": "mdu_jax.demo.world", "seed": world.seed, "split_names": world.split_names,
        "people": {s: [p.name for p in world.people_of(s)] for s in ("forget", "retain", "holdout")},
        "fact_kinds": [f.kind for f in world.people[0].facts],
    }
    written = {}
    for name, payload in files.items():
        path = os.path.join(folder, name)
        _write_json_atomic(path, payload)
        written[name] = path
    return written


def _write_json_atomic(path: str, payload) -> None:
    if isinstance(payload, list):
        text = "[\n" + ",\n".join(json.dumps(r, ensure_ascii=False) for r in payload) + "\n]\n"
    else:
        text = json.dumps(payload, indent=1, ensure_ascii=False) + "\n"
    atomic_write.write_text(path, text)

