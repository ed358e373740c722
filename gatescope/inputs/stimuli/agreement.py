"""Subject-verb agreement stimuli and the training grammar of the sample agreement models.

Follows Linzen et al. 2016 (agreement across attractors as a test of syntax in LMs), Lakretz et al.
2019 (the conditions Simple, Adv, NamePP, NounPP, and the four number combinations SS/SP/PS/PP of
subject and attractor) and Marvin & Linzen 2018's constructions: agreement across an object
relative clause ("the boy that the cars see greets"), also with an attractor inside it ("the boy that
the cars near the dog see greets"; and the embedded verb of that nested construction, Lakretz et al.
2021: "the boy that the cars near the dog see"), across a subject relative clause ("the boy
that greets the cars eats"), in a sentential complement ("the mother says that the boys greet"), in
VP coordination ("the boy greets the cars and eats"); and harder PPs: two and three attractors ("the
boy near the cars behind the dogs greets") and a long PP ("the boy near the old happy cars greets").

Conditions are named ``"{structure}_{numbers}"``: ``simple_S``, ``adv_P``, ``namepp_S``,
``nounpp_SP``, ``objrc_PS``, ...; the first letter is the number of the subject the verb agrees
with, the second (every structure but Simple, Adv, NamePP) the attractors' (every attractor of
NounPP2, NounPP3, ObjRCPP and Nested has that number; in SentComp the attractor is the main
clause's subject, in SubjRC and VPCoord the object, in Nested the outer subject and the PP's noun).
`distance(condition)` is the number of tokens between the subject noun and the verb.

Per-token labels of a stimulus (one per token of ``prefix + correct verb``):

- ``subject_number``: 1.0 where the subject is plural, 0.0 where singular, from the subject
  noun up to and including the verb; NaN before the subject noun (its determiner, and in
  SentComp the main clause before it);
- ``in_attractor``: 1.0 on the tokens of the attractor phrase (the PPs "near the cars", the
  relative clause "that the cars see", the object "the cars", the main clause "the mothers say"),
  else 0.0;
- ``is_verb``: 1.0 on the verb whose number the item tests, else 0.0.

Held out by construction: a (subject noun, verb) lemma pair is either an evaluation pair or a
training pair (`is_heldout_pair`). Evaluation items join their subject to their verb with an
evaluation pair; the training grammar never joins a subject to a verb with one, so no training
sentence starts with an evaluation item.

Two lexicons: `LEXICON` (20 nouns, 12 verbs; the small sample models) and `LARGE_LEXICON` (the
same words first, then hundreds more nouns and verbs; the 2x650 model), so every stimulus of the
small lexicon is a held-out stimulus of the large one too.
"""
from __future__ import annotations

import csv
import random
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from gatescope.errors import GatescopeError
from gatescope.files import atomic_write
from gatescope.validation.text import read_stimuli_rows

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
ADJ = ("old", "young", "tall", "small", "big", "happy", "angry", "busy", "quiet", "clever", "famous", "friendly")
CONJ = ("and",)
SAY_SG = ("says", "thinks", "believes", "hopes", "claims", "suspects")  # verbs that take "that S"
SAY_PL = ("say", "think", "believe", "hope", "claim", "suspect")

LEXICON: dict[str, tuple[str, ...]] = {
    "noun_sg": NOUN_SG, "noun_pl": NOUN_PL, "verb_sg": VERB_SG, "verb_pl": VERB_PL,
    "det": DET, "prep": PREP, "adv": ADV, "name": NAME, "rel": REL,
    "adj": ADJ, "conj": CONJ, "say_sg": SAY_SG, "say_pl": SAY_PL,
}

# The large lexicon's extra lemmas: regular plurals (+s) and third persons (+s), none of them a
# word of another category.
_MORE_NOUNS = """
actor artist baker banker barber bishop boxer brother builder butcher captain chef clerk cousin dancer
dentist driver editor engineer father gardener guest hunter king knight manager mayor miner mother nurse
officer owner painter parent partner player poet priest prince queen rider ruler sailor senator sister
soldier surgeon tailor tourist trader uncle visitor waiter worker writer author athlete agent bird horse
cow lion tiger rabbit monkey donkey goat pig duck frog snake bear camel eagle shark whale spider
neighbor stranger traveler pupil scientist professor pianist drummer chemist reporter critic robber
warrior giant monk pilgrim prisoner tenant landlord servant plumber carpenter mechanic porter sheriff
colonel sergeant admiral pirate cowboy chair desk lamp clock door window wall road bridge tower castle
garden shop store school ship boat plane truck bike bottle cup plate bag key coin stone rock hill river
lake field farm street building statue painting poem song letter card ticket bell piano guitar flag
coat shirt shoe hat bed pillow blanket mirror candle gate fence barn cabin tent wagon cart robot
computer camera radio album novel magazine map pencil pen notebook basket bucket hammer rope chain
wheel button cookie apple banana carrot onion egg cake pie flower seed rose forest island mountain
valley village town planet moon cloud
""".split()
_MORE_VERBS = """
call visit follow thank praise blame trust hate ignore attack accept adopt alert amuse annoy arrest
assist attract bother build chase check clean collect confuse contact cover defend describe destroy
discover distract draw drive encourage enjoy examine expect explore feed fight fill forget frighten
guide hear hold hug hunt imitate impress inform inspect insult interview invite join kick lead leave
lift mention notice observe obey pay pick please pull recall recognize remind rescue respect reward
save scare serve shock show steal support surprise tease tickle understand warn wake want welcome
amaze applaud bite charm comfort consult convince criticize deserve disturb doubt embrace entertain
escort fool
""".split()
LARGE_LEXICON: dict[str, tuple[str, ...]] = {
    **LEXICON,
    "noun_sg": NOUN_SG + tuple(_MORE_NOUNS), "noun_pl": NOUN_PL + tuple(n + "s" for n in _MORE_NOUNS),
    "verb_sg": VERB_SG + tuple(v + "s" for v in _MORE_VERBS), "verb_pl": VERB_PL + tuple(_MORE_VERBS),
}
LEXICONS: dict[str, dict[str, tuple[str, ...]]] = {"small": LEXICON, "large": LARGE_LEXICON}

NUMBERS = ("S", "P")
STRUCTURES = {"simple": 1, "adv": 1, "namepp": 1, "nounpp": 2, "objrc": 2,  # structure -> numbers named
              "nounpp2": 2, "nounpp3": 2, "longpp": 2, "objrcpp": 2, "nested": 2, "subjrc": 2, "sentcomp": 2,
              "vpcoord": 2}
CONDITIONS = tuple(
    f"{structure}_{a}{b}" if n == 2 else f"{structure}_{a}"
    for structure, n in STRUCTURES.items() for a in NUMBERS for b in (NUMBERS if n == 2 else ("",))
)
INCONGRUENT_NOUNPP = ("nounpp_SP", "nounpp_PS")

# The role of each prefix word, per structure (the verb follows): det, subj, attr, plain.
_PP = ("attr", "attr", "attr")  # "near the cars"
PREFIX_ROLES: dict[str, tuple[str, ...]] = {
    "simple": ("det", "subj"),
    "adv": ("det", "subj", "plain"),
    "namepp": ("det", "subj", "attr", "attr"),
    "nounpp": ("det", "subj", *_PP),
    "objrc": ("det", "subj", "attr", "attr", "attr", "attr"),        # that the cars see
    "nounpp2": ("det", "subj", *_PP, *_PP),
    "nounpp3": ("det", "subj", *_PP, *_PP, *_PP),
    "longpp": ("det", "subj", "attr", "attr", "attr", "attr", "attr"),  # near the old happy cars
    "objrcpp": ("det", "subj", "attr", "attr", "attr", *_PP, "attr"),  # that the cars near the dog see
    "nested": ("attr", "attr", "plain", "det", "subj", *_PP),        # the boy that the cars near the dog
    "subjrc": ("det", "subj", "attr", "attr", "attr", "attr"),       # that greets the cars
    "sentcomp": ("attr", "attr", "attr", "plain", "det", "subj"),    # the mothers say that the boy
    "vpcoord": ("det", "subj", "plain", "attr", "attr", "plain"),    # greets the cars and
}


def is_incongruent(condition: str) -> bool:
    """Whether the condition's attractor differs in number from its subject ("nounpp_SP": yes)."""
    numbers = condition.rpartition("_")[2]
    return len(numbers) == 2 and numbers[0] != numbers[1]


def distance(condition: str) -> int:
    """Tokens between the subject noun and the verb in items of `condition` (nounpp: 3, "near the cars")."""
    structure = condition.rpartition("_")[0]
    if condition not in CONDITIONS:
        raise GatescopeError(f"unknown agreement condition {condition!r} (known: {', '.join(CONDITIONS)})")
    roles = PREFIX_ROLES[structure]
    return len(roles) - 1 - roles.index("subj")


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


def noun(index: int, number: str, lexicon: dict[str, tuple[str, ...]] = LEXICON) -> str:
    """The noun of lemma `index` in number "S" or "P"."""
    return lexicon["noun_sg" if number == "S" else "noun_pl"][index]


def verb(index: int, number: str, lexicon: dict[str, tuple[str, ...]] = LEXICON) -> str:
    """The verb of lemma `index` agreeing with a subject of number "S" or "P"."""
    return lexicon["verb_sg" if number == "S" else "verb_pl"][index]


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

    @property
    def subject(self) -> str:
        """The subject noun the verb agrees with."""
        return self.tokens[PREFIX_ROLES[self.condition.rpartition("_")[0]].index("subj")]


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


def _training_verbs(subject: int, exclude: int) -> list[int]:
    """Verb lemmas (of the small lexicon) that may agree with subject lemma `subject`, but `exclude`."""
    return [v for v in range(len(VERB_SG)) if v != exclude and not is_heldout_pair(subject, v)]


def make_stimulus(structure: str, subject: int, verb_lemma: int, numbers: str, rng: random.Random,
                  lexicon: LexiconPart = FULL_LEXICON) -> Stimulus:
    """One stimulus of `structure` with subject lemma `subject`, verb lemma `verb_lemma` and
    `numbers` ("S", "P", or subject+attractor such as "SP"); other words are drawn from `rng`
    (attractor nouns, embedded verbs and prepositions from `lexicon`)."""
    if structure not in STRUCTURES:
        raise GatescopeError(f"unknown agreement structure {structure!r} (known: {', '.join(STRUCTURES)})")
    s_num = numbers[0]
    a_num = numbers[1:] or s_num
    subj = ["the", noun(subject, s_num)]

    def attractors(count: int) -> list[int]:  # distinct nouns, none the subject's
        return rng.sample([i for i in lexicon.nouns if i != subject], count)

    if structure == "simple":
        words = subj
    elif structure == "adv":
        words = subj + [rng.choice(ADV)]
    elif structure == "namepp":
        words = subj + [rng.choice(lexicon.preps), rng.choice(NAME)]
    elif structure in ("nounpp", "nounpp2", "nounpp3"):
        words = subj + _pp_chain(attractors({"nounpp": 1, "nounpp2": 2, "nounpp3": 3}[structure]), a_num, rng,
                                 lexicon)
    elif structure == "longpp":
        words = subj + [rng.choice(lexicon.preps), "the", *rng.sample(ADJ, 2), noun(attractors(1)[0], a_num)]
    elif structure == "objrc":
        v = rng.choice([i for i in lexicon.verbs if i != verb_lemma])
        words = subj + ["that", "the", noun(attractors(1)[0], a_num), verb(v, a_num)]
    elif structure in ("objrcpp", "nested"):
        a, b = attractors(2)
        v = rng.choice([i for i in lexicon.verbs if i != verb_lemma])
        rc = ["the", noun(a, a_num), rng.choice(lexicon.preps), "the", noun(b, a_num)]
        if structure == "objrcpp":  # the main verb, across "that the cars near the dogs see"
            words = subj + ["that", *rc, verb(v, a_num)]
        else:  # the embedded verb: its subject is the second noun, the outer subject an attractor
            words = ["the", noun(a, a_num), "that", "the", noun(subject, s_num), *rc[2:]]
    elif structure == "subjrc":
        v = rng.choice([i for i in _training_verbs(subject, verb_lemma) if i in lexicon.verbs])
        words = subj + ["that", verb(v, s_num), "the", noun(attractors(1)[0], a_num)]
    elif structure == "sentcomp":
        main = ["the", noun(attractors(1)[0], a_num), rng.choice(SAY_SG if a_num == "S" else SAY_PL), "that"]
        words = main + subj
    else:  # vpcoord
        v = rng.choice([i for i in _training_verbs(subject, verb_lemma) if i in lexicon.verbs])
        words = subj + [verb(v, s_num), "the", noun(attractors(1)[0], a_num), "and"]
    return labelled(words, verb(verb_lemma, s_num), verb(verb_lemma, other(s_num)), f"{structure}_{numbers}")


def _pp_chain(nouns: list[int], number: str, rng: random.Random, lexicon: LexiconPart) -> list[str]:
    """One PP per noun lemma, all in ``number``: "near the cars behind the dogs"."""
    return [w for a in nouns for w in (rng.choice(lexicon.preps), "the", noun(a, number))]


def chain_items(pps: int, per_condition: int = 200, seed: int = 0,
                numbers: tuple[str, ...] = ("SP", "PS")) -> list[AgreementItem]:
    """NounPP items with ``pps`` prepositional phrases between subject and verb, every attractor in the
    second number of ``numbers``' entries: "the boy near the cars behind the dogs ... greets", distance
    ``3 * pps``. Past three PPs no training sentence is this long between subject and verb (the grammar stops
    at three PPs, each with at most two adjectives: 12 tokens), so these measure how far a model carries the
    subject's number beyond its training. Held-out subject-verb pairs, distinct attractor nouns, distinct
    items; conditions are named ``pp{pps}_{numbers}`` (not gatescope's conditions: no distance is derived)."""
    if not 1 <= pps < len(NOUN_SG):
        raise GatescopeError(f"a chain has 1 to {len(NOUN_SG) - 1} PPs (one attractor noun each), not {pps}")
    rng = random.Random(seed)
    pairs = [(n, v) for n in range(len(NOUN_SG)) for v in range(len(VERB_SG)) if is_heldout_pair(n, v)]
    items: list[AgreementItem] = []
    for pattern in numbers:
        s_num, a_num = pattern[0], pattern[1:] or pattern[0]
        seen: set[str] = set()
        for _ in range(per_condition * 50):
            if len(seen) == per_condition:
                break
            n, v = rng.choice(pairs)
            attractors = rng.sample([i for i in range(len(NOUN_SG)) if i != n], pps)
            prefix = " ".join(["the", noun(n, s_num), *_pp_chain(attractors, a_num, rng, FULL_LEXICON)])
            if prefix not in seen:
                seen.add(prefix)
                items.append(AgreementItem(prefix, verb(v, s_num), verb(v, other(s_num)), f"pp{pps}_{pattern}"))
    return items


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

class _Grammar:
    """Sentences of the training grammar over one lexicon (see `training_sentence`)."""

    def __init__(self, rng: random.Random, lexicon: dict[str, tuple[str, ...]]) -> None:
        self.rng, self.lex = rng, lexicon
        self.nouns, self.verbs = len(lexicon["noun_sg"]), len(lexicon["verb_sg"])

    def verb_for(self, subject: int, number: str) -> str:
        """A verb that may agree with subject lemma `subject` in training (a training pair)."""
        while True:
            v = self.rng.randrange(self.verbs)
            if not is_heldout_pair(subject, v):
                return verb(v, number, self.lex)

    def np(self, adjectives: bool = False) -> list[str]:
        """"the cars", "the old cars" (any number)."""
        rng = self.rng
        adj = rng.sample(ADJ, (rng.random() < 0.25) + (rng.random() < 0.4)) if adjectives else []
        return ["the", *adj, noun(rng.randrange(self.nouns), rng.choice(NUMBERS), self.lex)]

    def clause_subject(self) -> list[str]:
        """An NP with its agreeing verb (a training pair): "the cars see", "the cars near the dog see"."""
        n, num = self.rng.randrange(self.nouns), self.rng.choice(NUMBERS)
        pp = [self.rng.choice(PREP), *self.np()] if self.rng.random() < 0.3 else []
        return ["the", noun(n, num, self.lex), *pp, self.verb_for(n, num)]

    def object(self) -> list[str]:
        """The verb's object, or nothing: "the girl", "mary", "the cars near the house"."""
        r = self.rng.random()
        if r < 0.2:
            return []
        if r < 0.4:
            return [self.rng.choice(NAME)]
        words = self.np()
        if self.rng.random() < 0.25:
            words += [self.rng.choice(PREP), *self.np()]
        return words

    def modifier(self, s: int, num: str) -> list[str]:
        """What follows the subject noun "the N" before its verb: PPs, a relative clause, or nothing."""
        rng = self.rng
        r = rng.random()
        if r < 0.35:
            count = 1 + (rng.random() < 0.35) + (rng.random() < 0.2)
            return [w for _ in range(count) for w in [rng.choice(PREP), *self.np(adjectives=True)]]
        if r < 0.43:
            return [rng.choice(PREP), rng.choice(NAME)]
        if r < 0.6:
            return ["that", *self.clause_subject()]
        if r < 0.72:
            return ["that", self.verb_for(s, num), *self.np()]
        return []

    def clause(self) -> list[str]:
        """Subj [Adv] V Obj [and V Obj]; a name is a singular subject."""
        rng = self.rng
        if rng.random() < 0.05:
            s, num, words = None, "S", [rng.choice(NAME)]
        else:
            s, num = rng.randrange(self.nouns), rng.choice(NUMBERS)
            words = ["the", noun(s, num, self.lex), *self.modifier(s, num)]
        if rng.random() < 0.2:
            words.append(rng.choice(ADV))

        def main_verb() -> str:
            return verb(rng.randrange(self.verbs), "S", self.lex) if s is None else self.verb_for(s, num)

        words += [main_verb(), *self.object()]
        if rng.random() < 0.15:
            words += ["and", main_verb(), *self.object()]
        return words

    def sentence(self) -> list[str]:
        """A clause, or "the N says that" + a clause (the main subject's number independent)."""
        if self.rng.random() < 0.12:
            n, num = self.rng.randrange(self.nouns), self.rng.choice(NUMBERS)
            say = self.rng.choice(SAY_SG if num == "S" else SAY_PL)
            return ["the", noun(n, num, self.lex), say, "that", *self.clause()]
        return self.clause()


def training_sentence(rng: random.Random, lexicon: dict[str, tuple[str, ...]] = LEXICON) -> list[str]:
    """One sentence of the training grammar, with words of `lexicon` (`LEXICON` or `LARGE_LEXICON`).

    S -> [the N says that] Clause; Clause -> Subj [Adv] V Obj [and V Obj], where Subj is a name or
    "the N" optionally followed by one to three PPs ("near the old cars behind mary"), an object
    relative clause ("that the N V", "that the N near the N V") or a subject relative clause ("that V the N"). Attractor
    numbers are independent of the subject's; names are singular subjects. Every (subject, verb)
    lemma pair joined by agreement is a training pair.
    """
    return _Grammar(rng, lexicon).sentence()


def training_corpus(n: int, seed: int, lexicon: dict[str, tuple[str, ...]] = LEXICON) -> list[list[str]]:
    """`n` sentences of the training grammar, deterministic in `seed`."""
    rng = random.Random(seed)
    return [training_sentence(rng, lexicon) for _ in range(n)]


class AgreementItem(NamedTuple):
    """One stimulus: after `prefix` the model should prefer `correct` to `wrong`; ``columns``: the stimuli
    file's own further columns, as (name, value) pairs."""

    prefix: str
    correct: str
    wrong: str
    condition: str
    columns: tuple[tuple[str, str], ...] = ()


def read_stimuli(path: str | Path) -> list[AgreementItem]:
    """Read a stimuli TSV file; a malformed line, an empty or unreadable file raise GatescopeError."""
    return [AgreementItem(*row) for row in read_stimuli_rows(path)]  # the door: gatescope.validation.text


ITEM_FIELDS = ("condition", "structure", "distance", "subject", "attractor", "preposition", "verb", "pair")
"""What an item can be broken down by (`item_fields`), besides the stimuli file's own columns."""
_NOUN_INDEX = {w: i for forms in ("noun_sg", "noun_pl") for i, w in enumerate(LARGE_LEXICON[forms])}
_VERB_INDEX = {w: i for forms in ("verb_sg", "verb_pl") for i, w in enumerate(LARGE_LEXICON[forms])}


def item_fields(item: AgreementItem) -> dict[str, str]:
    """An item's fields by name: its condition; for gatescope's conditions the structure, the distance, the
    subject noun, the first attractor noun and preposition; the verb pair (``greet/greets``); and ``pair``:
    whether its (subject, verb) lemma pair is ``held-out`` (never joined in training, `is_heldout_pair`) or a
    ``training`` pair. The stimuli file's own columns come last and win over a derived field of the same name."""
    fields = {"condition": item.condition, "verb": "/".join(sorted((item.correct, item.wrong)))}
    structure = item.condition.rpartition("_")[0]
    words = item.prefix.split()
    if item.condition in CONDITIONS and len(words) == len(PREFIX_ROLES[structure]):
        roles = PREFIX_ROLES[structure]
        subject = words[roles.index("subj")]
        fields.update(structure=structure, distance=str(distance(item.condition)), subject=subject)
        attracting = [w for w, role in zip(words, roles) if role == "attr"]
        fields.update({name: found[0] for name, found in (("attractor", [w for w in attracting if w in _NOUN_INDEX]),
                                                          ("preposition", [w for w in attracting if w in PREP]))
                       if found})
        if subject in _NOUN_INDEX and item.correct in _VERB_INDEX:
            held = is_heldout_pair(_NOUN_INDEX[subject], _VERB_INDEX[item.correct])
            fields["pair"] = "held-out" if held else "training"
    fields.update(getattr(item, "columns", ()))  # a Stimulus of this module has none
    return fields


def random_draw(per_condition: int, seed: int, conditions: tuple[str, ...] = CONDITIONS,
                lexicon: LexiconPart = FULL_LEXICON) -> list[Stimulus]:
    """`per_condition` items of each condition with every (subject, verb) lemma pair of ``lexicon`` equally
    likely, training pairs included (about 3 in 4), nothing filtered, repeats allowed: an outside
    researcher's draw from the model's lexicon, beside `generate_stimuli`'s held-out items."""
    rng = random.Random(seed)
    items: list[Stimulus] = []
    for condition in conditions:
        if condition not in CONDITIONS:
            raise GatescopeError(f"unknown agreement condition {condition!r} (known: {', '.join(CONDITIONS)})")
        structure, numbers = condition.split("_")
        for _ in range(per_condition):
            items.append(make_stimulus(structure, rng.choice(lexicon.nouns), rng.choice(lexicon.verbs), numbers, rng,
                                       lexicon))
    return items
