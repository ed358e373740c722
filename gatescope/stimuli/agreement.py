"""Subject-verb agreement stimuli and the training grammar of the sample agreement models.

Follows Linzen et al. 2016 (agreement across attractors as a test of syntax in LMs) and
Lakretz et al. 2019 (the conditions Simple, Adv, NamePP, NounPP, and the four number
combinations SS/SP/PS/PP of subject and attractor). An object relative clause
("the boy that the cars see greets") is added, as in Marvin & Linzen 2018.

Conditions are named ``"{structure}_{numbers}"``: ``simple_S``, ``adv_P``, ``namepp_S``,
``nounpp_SP``, ``objrc_PS``, ...; the first letter is the subject's number, the second
(NounPP and ObjRC only) the attractor's.

Per-token labels of a stimulus (one per token of ``prefix + correct verb``):

- ``subject_number``: 1.0 where the subject is plural, 0.0 where singular, from the subject
  noun up to and including the verb; NaN before the subject noun (the determiner);
- ``in_attractor``: 1.0 on the tokens of the attractor phrase (the PP "near the cars", or the
  relative clause "that the cars see"), else 0.0;
- ``is_verb``: 1.0 on the verb whose number the item tests, else 0.0.

Held out by construction: a (subject noun, verb) lemma pair is either an evaluation pair or a
training pair (`is_heldout_pair`). Evaluation items join their subject to their verb with an
evaluation pair; the training grammar never joins a subject to a verb with one, so no training
sentence starts with an evaluation item.
"""
from __future__ import annotations

import csv
import random
from dataclasses import dataclass
from pathlib import Path

from gatescope.errors import GatescopeError
from gatescope.files import atomic_write

NOUN_SG = ("boy", "girl", "man", "woman", "child", "teacher", "doctor", "farmer", "student", "friend",
           "pilot", "lawyer", "dog", "cat", "car", "house", "tree", "table", "book", "singer")
NOUN_PL = ("boys", "girls", "men", "women", "children", "teachers", "doctors", "farmers", "students",
           "friends", "pilots", "lawyers", "dogs", "cats", "cars", "houses", "trees", "tables", "books",
           "singers")
VERB_SG = ("greets", "sees", "likes", "knows", "helps", "finds", "loves", "avoids", "admires", "meets",
           "remembers", "watches")
VERB_PL = ("greet", "see", "like", "know", "help", "find", "love", "avoid", "admire", "meet", "remember",
           "watch")
DET = ("the",)
PREP = ("near", "behind", "beside", "above", "below", "under", "with", "from")
ADV = ("probably", "certainly", "clearly", "definitely", "really", "always", "never", "often", "rarely",
       "surely")
NAME = ("john", "mary", "bob", "alice", "susan", "peter", "kate", "tom", "anna", "paul")
REL = ("that",)

LEXICON: dict[str, tuple[str, ...]] = {
    "noun_sg": NOUN_SG, "noun_pl": NOUN_PL, "verb_sg": VERB_SG, "verb_pl": VERB_PL,
    "det": DET, "prep": PREP, "adv": ADV, "name": NAME, "rel": REL,
}

NUMBERS = ("S", "P")
STRUCTURES = {"simple": 1, "adv": 1, "namepp": 1, "nounpp": 2, "objrc": 2}  # structure -> numbers named
CONDITIONS = tuple(
    f"{structure}_{a}{b}" if n == 2 else f"{structure}_{a}"
    for structure, n in STRUCTURES.items() for a in NUMBERS for b in (NUMBERS if n == 2 else ("",))
)
INCONGRUENT_NOUNPP = ("nounpp_SP", "nounpp_PS")


@dataclass(frozen=True)
class LexiconPart:
    """The lemma indices (into NOUN_SG/NOUN_PL, VERB_SG/VERB_PL) and prepositions items may use."""

    nouns: tuple[int, ...] = tuple(range(len(NOUN_SG)))
    verbs: tuple[int, ...] = tuple(range(len(VERB_SG)))
    preps: tuple[str, ...] = PREP

    def words(self) -> dict[str, tuple[str, ...]]:
        """The part's words by role: nouns (both numbers), verbs (both numbers), preps."""
        return {"nouns": tuple(noun(i, n) for i in self.nouns for n in NUMBERS),
                "verbs": tuple(verb(i, n) for i in self.verbs for n in NUMBERS), "preps": self.preps}


FULL_LEXICON = LexiconPart()


def split_lexicon(seed: int = 0) -> tuple[LexiconPart, LexiconPart]:
    """Two disjoint halves of the nouns, verbs and prepositions, deterministic in ``seed``.

    A pair (noun n, verb v) is an evaluation pair iff n = v (mod 4) (`is_heldout_pair`), so each
    residue class is shuffled and dealt out separately, the larger share alternating between the
    halves: each half gets 10 nouns, 6 verbs, 4 prepositions and 16 evaluation pairs."""
    rng = random.Random(seed)
    halves: list[dict[str, list]] = [{"nouns": [], "verbs": [], "preps": []} for _ in range(2)]
    for key, size in (("nouns", len(NOUN_SG)), ("verbs", len(VERB_SG))):
        for r in range(4):
            members = [i for i in range(size) if i % 4 == r]
            rng.shuffle(members)
            cut = (len(members) + (r % 2 == 0)) // 2
            halves[0][key] += members[:cut]
            halves[1][key] += members[cut:]
    preps = list(PREP)
    rng.shuffle(preps)
    halves[0]["preps"], halves[1]["preps"] = preps[: len(preps) // 2], preps[len(preps) // 2 :]
    a, b = (LexiconPart(tuple(sorted(h["nouns"])), tuple(sorted(h["verbs"])),
                        tuple(p for p in PREP if p in h["preps"])) for h in halves)
    return a, b


def is_heldout_pair(noun: int, verb: int) -> bool:
    """Whether subject lemma `noun` with verb lemma `verb` is reserved for evaluation (1 pair in 4)."""
    return (3 * noun + verb) % 4 == 0


def noun(index: int, number: str) -> str:
    """The noun of lemma `index` in number "S" or "P"."""
    return (NOUN_SG if number == "S" else NOUN_PL)[index]


def verb(index: int, number: str) -> str:
    """The verb of lemma `index` agreeing with a subject of number "S" or "P"."""
    return (VERB_SG if number == "S" else VERB_PL)[index]


def other(number: str) -> str:
    """The other number: "S" <-> "P"."""
    return "P" if number == "S" else "S"


@dataclass(frozen=True)
class Stimulus:
    """One agreement item: ``prefix`` then the verb; the model should prefer ``correct`` to ``wrong``."""

    tokens: tuple[str, ...]            # prefix + correct verb
    wrong: str
    condition: str
    subject_number: tuple[float, ...]  # 1.0 plural, 0.0 singular, NaN before the subject
    in_attractor: tuple[float, ...]
    is_verb: tuple[float, ...]

    @property
    def prefix(self) -> str:
        return " ".join(self.tokens[:-1])

    @property
    def correct(self) -> str:
        return self.tokens[-1]


def _build(parts: list[tuple[str, str]], subject_plural: bool, wrong: str, condition: str) -> Stimulus:
    """Assemble a stimulus from (token, role) parts; roles: det, subj, attr, plain, verb."""
    tokens, number, attractor, is_verb = [], [], [], []
    seen_subject = False
    for token, role in parts:
        seen_subject = seen_subject or role == "subj"
        tokens.append(token)
        number.append(float(subject_plural) if seen_subject else float("nan"))
        attractor.append(1.0 if role == "attr" else 0.0)
        is_verb.append(1.0 if role == "verb" else 0.0)
    return Stimulus(tuple(tokens), wrong, condition, tuple(number), tuple(attractor), tuple(is_verb))


# The role of each prefix word, per structure (the verb follows): det, subj, attr, plain.
PREFIX_ROLES: dict[str, tuple[str, ...]] = {
    "simple": ("det", "subj"),
    "adv": ("det", "subj", "plain"),
    "namepp": ("det", "subj", "attr", "attr"),
    "nounpp": ("det", "subj", "attr", "attr", "attr"),
    "objrc": ("det", "subj", "attr", "attr", "attr", "attr"),
}


def make_stimulus(structure: str, subject: int, verb_lemma: int, numbers: str, rng: random.Random,
                  lexicon: LexiconPart = FULL_LEXICON) -> Stimulus:
    """One stimulus of `structure` with subject lemma `subject`, verb lemma `verb_lemma` and
    `numbers` ("S", "P", or subject+attractor such as "SP"); other words are drawn from `rng`
    (attractor nouns, embedded verbs and prepositions from `lexicon`)."""
    s_num = numbers[0]
    words = ["the", noun(subject, s_num)]
    if structure == "adv":
        words.append(rng.choice(ADV))
    elif structure == "namepp":
        words += [rng.choice(lexicon.preps), rng.choice(NAME)]
    elif structure == "nounpp":
        a = rng.choice([i for i in lexicon.nouns if i != subject])
        words += [rng.choice(lexicon.preps), "the", noun(a, numbers[1])]
    elif structure == "objrc":
        a = rng.choice([i for i in lexicon.nouns if i != subject])
        v = rng.choice([i for i in lexicon.verbs if i != verb_lemma])
        words += ["that", "the", noun(a, numbers[1]), verb(v, numbers[1])]
    elif structure != "simple":
        raise GatescopeError(f"unknown agreement structure {structure!r} (known: {', '.join(STRUCTURES)})")
    return labelled(words, verb(verb_lemma, s_num), verb(verb_lemma, other(s_num)), f"{structure}_{numbers}")


def labelled(prefix: list[str], correct: str, wrong: str, condition: str) -> Stimulus:
    """The stimulus, with its per-token labels, of an item given as words (a line of a stimuli TSV:
    prefix, correct verb, wrong verb, condition): the condition's structure says each word's role."""
    if condition not in CONDITIONS:
        raise GatescopeError(f"condition {condition!r} is not one of gatescope's agreement conditions "
                             f"({', '.join(CONDITIONS)}), so its subject and attractor cannot be labelled")
    structure, numbers = condition.split("_")
    roles = PREFIX_ROLES[structure]
    if len(prefix) != len(roles):
        raise GatescopeError(f"a {structure} prefix has {len(roles)} words ({' '.join(roles)}); "
                             f"{' '.join(prefix)!r} has {len(prefix)}")
    return _build([*zip(prefix, roles), (correct, "verb")], numbers[0] == "P", wrong, condition)


def generate_stimuli(per_condition: int = 200, seed: int = 0, conditions: tuple[str, ...] = CONDITIONS,
                     lexicon: LexiconPart = FULL_LEXICON) -> list[Stimulus]:
    """Up to `per_condition` distinct held-out items for each condition, deterministic in `seed`,
    with nouns, verbs and prepositions from `lexicon` only (default all; see `split_lexicon`).

    Subject and verb lemmas come only from held-out pairs (`is_heldout_pair`), so a condition
    with no other free word has at most one item per pair: Simple has at most 60."""
    rng = random.Random(seed)
    pairs = [(n, v) for n in lexicon.nouns for v in lexicon.verbs if is_heldout_pair(n, v)]
    if not pairs:
        raise GatescopeError("the lexicon part has no evaluation (subject, verb) pair")
    items: list[Stimulus] = []
    for condition in conditions:
        if condition not in CONDITIONS:
            raise GatescopeError(f"unknown agreement condition {condition!r} (known: {', '.join(CONDITIONS)})")
        structure, numbers = condition.split("_")
        seen: set[tuple[str, ...]] = set()
        for _ in range(per_condition * 50):
            if len(seen) == per_condition:
                break
            n, v = rng.choice(pairs)
            item = make_stimulus(structure, n, v, numbers, rng, lexicon)
            if item.tokens not in seen:
                seen.add(item.tokens)
                items.append(item)
    return items


def write_stimuli(items: list[Stimulus], path: str | Path) -> None:
    """Write items as TSV lines ``prefix<TAB>correct<TAB>wrong<TAB>condition`` (no header), all or nothing."""

    def write(tmp: str) -> None:
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f, delimiter="\t", lineterminator="\n")
            for item in items:
                writer.writerow([item.prefix, item.correct, item.wrong, item.condition])

    atomic_write(path, write)


def bundled_stimuli_path() -> Path:
    """The held-out stimuli shipped with gatescope (written by `generate_stimuli()` defaults)."""
    return Path(__file__).with_name("agreement_stimuli.tsv")


# --- the training grammar -------------------------------------------------------------------------

def _training_verb(subject: int, rng: random.Random) -> int:
    """A verb lemma that may agree with subject lemma `subject` in training."""
    return rng.choice([v for v in range(len(VERB_SG)) if not is_heldout_pair(subject, v)])


def _rel_subject(rng: random.Random) -> list[str]:
    """A simple NP that agrees with an embedded verb: "the cars see" (a training pair)."""
    n, num = rng.randrange(len(NOUN_SG)), rng.choice(NUMBERS)
    return ["the", noun(n, num), verb(_training_verb(n, rng), num)]


def _object(rng: random.Random) -> list[str]:
    """The main verb's object, or nothing: "the girl", "mary", "the cars near the house"."""
    r = rng.random()
    if r < 0.2:
        return []
    if r < 0.4:
        return [rng.choice(NAME)]
    np = ["the", noun(rng.randrange(len(NOUN_SG)), rng.choice(NUMBERS))]
    if rng.random() < 0.25:
        np += [rng.choice(PREP), "the", noun(rng.randrange(len(NOUN_SG)), rng.choice(NUMBERS))]
    return np


def training_sentence(rng: random.Random) -> list[str]:
    """One sentence of the training grammar.

    S -> Subj [Adv] V Obj, where Subj is "the N" optionally followed by a PP ("near the N",
    "near NAME"), an object relative clause ("that the N V") or a subject relative clause
    ("that V the N"); attractor numbers are independent of the subject's; names are singular
    subjects too. Every (subject, verb) lemma pair joined by agreement is a training pair.
    """
    r = rng.random()
    if r < 0.05:
        return [rng.choice(NAME), verb(rng.randrange(len(VERB_SG)), "S")] + _object(rng)
    s, num = rng.randrange(len(NOUN_SG)), rng.choice(NUMBERS)
    words = ["the", noun(s, num)]
    r = rng.random()
    if r < 0.4:
        words += [rng.choice(PREP), "the", noun(rng.randrange(len(NOUN_SG)), rng.choice(NUMBERS))]
    elif r < 0.5:
        words += [rng.choice(PREP), rng.choice(NAME)]
    elif r < 0.7:
        words += ["that"] + _rel_subject(rng)
    elif r < 0.8:
        v = _training_verb(s, rng)
        words += ["that", verb(v, num), "the", noun(rng.randrange(len(NOUN_SG)), rng.choice(NUMBERS))]
    if rng.random() < 0.2:
        words.append(rng.choice(ADV))
    return words + [verb(_training_verb(s, rng), num)] + _object(rng)


def training_corpus(n: int, seed: int) -> list[list[str]]:
    """`n` sentences of the training grammar, deterministic in `seed`."""
    rng = random.Random(seed)
    return [training_sentence(rng) for _ in range(n)]
