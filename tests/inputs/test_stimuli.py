"""Agreement stimuli (labels, conditions, hold-out) and per-character code features (tokenize)."""
from __future__ import annotations

import ast
import math
import random
import re

import numpy as np
import pytest

from gatescope.inputs.stimuli.agreement import read_stimuli
from gatescope.errors import GatescopeError
from gatescope.inputs.stimuli.agreement import (
    CONDITIONS,
    LARGE_LEXICON,
    LEXICON,
    NOUN_PL,
    NOUN_SG,
    PREFIX_ROLES,
    VERB_PL,
    VERB_SG,
    bundled_stimuli_path,
    chain_items,
    distance,
    generate_stimuli,
    is_heldout_pair,
    make_stimulus,
    training_corpus,
    write_stimuli,
)
from gatescope.inputs.stimuli.code_features import FEATURES, code_features

NAN = math.nan


def same(a, b):
    """Tuples equal, NaN equal to NaN."""
    return len(a) == len(b) and all((math.isnan(x) and math.isnan(y)) or x == y for x, y in zip(a, b))


# --- agreement stimuli -----------------------------------------------------------------------------

def test_conditions_cover_the_issue():
    for structure in ("simple", "adv", "namepp"):
        assert {f"{structure}_S", f"{structure}_P"} <= set(CONDITIONS)
    for structure in ("nounpp", "objrc", "nounpp2", "nounpp3", "longpp", "objrcpp", "nested", "subjrc", "sentcomp",
                      "vpcoord"):
        assert {f"{structure}_{n}" for n in ("SS", "SP", "PS", "PP")} <= set(CONDITIONS)


def test_distance_counts_the_tokens_between_subject_and_verb():
    assert [distance(c) for c in ("simple_S", "adv_P", "namepp_S", "nounpp_SP", "objrc_PS")] == [0, 1, 2, 3, 4]
    assert [distance(c) for c in ("nounpp2_SP", "nounpp3_PS", "longpp_SS", "objrcpp_SP")] == [6, 9, 5, 7]
    assert [distance(c) for c in ("nested_SP", "subjrc_PS", "sentcomp_SP", "vpcoord_PS")] == [3, 4, 0, 4]
    for item in generate_stimuli(per_condition=3, seed=4):
        subject = PREFIX_ROLES[item.condition.split("_")[0]].index("subj")
        assert len(item.tokens) - 2 - subject == distance(item.condition)
    with pytest.raises(GatescopeError, match="unknown agreement condition 'nounpp_XY'"):
        distance("nounpp_XY")


def test_marvin_linzen_constructions_hand_checked():
    boy, greets = NOUN_SG.index("boy"), VERB_SG.index("greets")
    two = make_stimulus("nounpp2", boy, greets, "SP", random.Random(0))
    assert two.tokens[3] == two.tokens[6] == "the" and two.tokens[2] in LEXICON["prep"]
    assert two.tokens[4] in NOUN_PL and two.tokens[7] in NOUN_PL and two.correct == "greets"
    assert two.in_attractor == (0, 0, 1, 1, 1, 1, 1, 1, 0)
    comp = make_stimulus("sentcomp", boy, greets, "PS", random.Random(1))
    assert comp.tokens[2] in LEXICON["say_sg"] and comp.tokens[1] in NOUN_SG  # the main clause: singular
    assert comp.tokens[3:] == ("that", "the", "boys", "greet") and comp.wrong == "greets"
    assert same(comp.subject_number, (NAN,) * 5 + (1, 1)) and comp.subject == "boys"
    assert comp.in_attractor == (1, 1, 1, 0, 0, 0, 0)
    coord = make_stimulus("vpcoord", boy, greets, "SP", random.Random(2))
    the, boy_, first, the2, obj, conj, second = coord.tokens
    assert (the, boy_, the2, conj, second) == ("the", "boy", "the", "and", "greets")
    assert first in VERB_SG and first != "greets" and obj in NOUN_PL
    assert not is_heldout_pair(boy, VERB_SG.index(first))  # the first verb joins a training pair
    nested = make_stimulus("nested", boy, greets, "PS", random.Random(3))
    assert nested.tokens[2:5] == ("that", "the", "boys") and nested.correct == "greet"
    assert nested.tokens[1] in NOUN_SG and nested.tokens[7] in NOUN_SG  # the outer subject and the PP noun
    assert same(nested.subject_number, (NAN,) * 4 + (1,) * 5) and nested.subject == "boys"
    assert nested.in_attractor == (1, 1, 0, 0, 0, 1, 1, 1, 0)
    rc = make_stimulus("subjrc", boy, greets, "PP", random.Random(4))
    assert rc.tokens[:3] == ("the", "boys", "that") and rc.tokens[3] in VERB_PL and rc.tokens[5] in NOUN_PL
    long = make_stimulus("longpp", boy, greets, "SP", random.Random(5))
    assert long.tokens[4] in LEXICON["adj"] and long.tokens[5] in LEXICON["adj"] and long.tokens[6] in NOUN_PL


def test_lexicon_is_aligned_by_lemma_and_unambiguous():
    assert len(NOUN_SG) == len(NOUN_PL) and len(VERB_SG) == len(VERB_PL)
    assert ("boy", "boys") in zip(NOUN_SG, NOUN_PL) and ("child", "children") in zip(NOUN_SG, NOUN_PL)
    assert ("greets", "greet") in zip(VERB_SG, VERB_PL)
    words = [w for category in LEXICON.values() for w in category]
    assert len(words) == len(set(words)), "a word in two categories would make its number ambiguous"


def test_nounpp_labels_hand_checked():
    item = make_stimulus("nounpp", NOUN_SG.index("boy"), VERB_SG.index("greets"), "SP", random.Random(0))
    prep = item.tokens[2]
    assert item.tokens == ("the", "boy", prep, "the", item.tokens[4], "greets")
    assert item.tokens[4] in NOUN_PL and item.tokens[4] != "boys"
    assert item.prefix == f"the boy {prep} the {item.tokens[4]}" and item.correct == "greets"
    assert item.wrong == "greet" and item.condition == "nounpp_SP"
    assert same(item.subject_number, (NAN, 0, 0, 0, 0, 0))
    assert item.in_attractor == (0, 0, 1, 1, 1, 0)
    assert item.is_verb == (0, 0, 0, 0, 0, 1)


def test_objrc_and_plural_labels_hand_checked():
    item = make_stimulus("objrc", NOUN_SG.index("boy"), VERB_SG.index("greets"), "PS", random.Random(1))
    the, boys, that, the2, attractor, embedded, verb = item.tokens
    assert (the, boys, that, the2, verb, item.wrong) == ("the", "boys", "that", "the", "greet", "greets")
    assert attractor in NOUN_SG and embedded in VERB_SG  # the embedded verb agrees with the attractor
    assert same(item.subject_number, (NAN, 1, 1, 1, 1, 1, 1))
    assert item.in_attractor == (0, 0, 1, 1, 1, 1, 0)
    assert item.is_verb == (0, 0, 0, 0, 0, 0, 1)
    adv = make_stimulus("adv", 0, 0, "P", random.Random(2))
    assert adv.tokens[:2] == ("the", "boys") and adv.tokens[2] in LEXICON["adv"] and adv.correct == "greet"
    assert adv.in_attractor == (0, 0, 0, 0)
    namepp = make_stimulus("namepp", 0, 0, "S", random.Random(3))
    assert namepp.tokens[3] in LEXICON["name"] and namepp.in_attractor == (0, 0, 1, 1, 0)


def test_every_generated_item_is_consistent():
    items = generate_stimuli(per_condition=30, seed=7)
    assert {item.condition for item in items} == set(CONDITIONS)
    for item in items:
        n = len(item.tokens)
        assert len(item.subject_number) == len(item.in_attractor) == len(item.is_verb) == n
        plural = item.subject in NOUN_PL
        subject = item.tokens.index(item.subject)
        assert item.condition.split("_")[1][0] == ("P" if plural else "S")
        assert same(item.subject_number, (NAN,) * subject + (float(plural),) * (n - subject))
        assert item.is_verb == (0,) * (n - 1) + (1,)
        verbs, others = (VERB_PL, VERB_SG) if plural else (VERB_SG, VERB_PL)
        assert others[verbs.index(item.correct)] == item.wrong
        attractors = [t for t, a in zip(item.tokens, item.in_attractor) if a and (t in NOUN_SG or t in NOUN_PL)]
        assert bool(attractors) == (len(item.condition.split("_")[1]) == 2)
        for attractor in attractors:  # every attractor noun has the condition's second number
            assert item.condition[-1] == ("P" if attractor in NOUN_PL else "S"), item


def test_evaluation_pairs_are_held_out_of_the_training_corpus():
    items = generate_stimuli()
    for item in items:
        verbs = VERB_SG if item.correct in VERB_SG else VERB_PL
        nouns = NOUN_SG if item.subject in NOUN_SG else NOUN_PL
        assert is_heldout_pair(nouns.index(item.subject), verbs.index(item.correct))
    evaluation = {item.tokens for item in items}
    lengths = sorted({len(t) for t in evaluation})
    corpus = training_corpus(20000, seed=1)
    for sentence in corpus:
        assert not any(tuple(sentence[:n]) in evaluation for n in lengths), sentence
    # the grammar does produce every structure, with attractors of both numbers
    joined = [" ".join(s) for s in corpus]
    assert any(" that the " in s for s in joined) and any(" near the " in s for s in joined)
    assert any(" says that " in s for s in joined) and any(" and " in s for s in joined)
    prep = "|".join(LEXICON["prep"])
    assert any(re.search(rf" ({prep}) .* ({prep}) .* ({prep}) ", s) for s in joined)  # three PPs
    # the large lexicon's grammar never starts with one either (its first lemmas are the small lexicon's)
    for sentence in training_corpus(5000, seed=2, lexicon=LARGE_LEXICON):
        assert not any(tuple(sentence[:n]) in evaluation for n in lengths), sentence


def test_large_lexicon_extends_the_small_one():
    for key, words in LEXICON.items():
        assert LARGE_LEXICON[key][:len(words)] == words
    assert len(LARGE_LEXICON["noun_sg"]) >= 200 and len(LARGE_LEXICON["verb_sg"]) >= 100
    words = [w for category in LARGE_LEXICON.values() for w in category]
    assert len(words) == len(set(words))


def test_training_corpus_is_deterministic_and_agrees():
    assert training_corpus(50, seed=3) == training_corpus(50, seed=3)
    assert training_corpus(50, seed=3) != training_corpus(50, seed=4)
    for sentence in training_corpus(2000, seed=5):
        if sentence[0] != "the" or sentence[2] not in LEXICON["prep"]:
            continue
        verb = next(w for w in sentence[3:] if w in VERB_SG or w in VERB_PL)  # after "P the N" / "P NAME"
        assert (verb in VERB_PL) == (sentence[1] in NOUN_PL), sentence


def test_bundled_stimuli_are_the_generator_output(tmp_path):
    written = tmp_path / "stimuli.tsv"
    write_stimuli(generate_stimuli(), written)
    assert written.read_bytes() == bundled_stimuli_path().read_bytes()
    items = read_stimuli(written)
    assert [(i.prefix, i.correct, i.wrong, i.condition) for i in items] == [
        (s.prefix, s.correct, s.wrong, s.condition) for s in generate_stimuli()
    ]


def test_pp_chains_put_every_attractor_in_the_other_number_between_a_heldout_pair():
    items = chain_items(6, per_condition=50, seed=3)
    assert [i.condition for i in items] == ["pp6_SP"] * 50 + ["pp6_PS"] * 50
    assert len({i.prefix for i in items}) == 100 and items == chain_items(6, per_condition=50, seed=3)
    for item in items:
        words = item.prefix.split()
        assert len(words) == 2 + 3 * 6  # "the N" + six "P the N": distance 18
        subject, pps = words[1], [words[i:i + 3] for i in range(2, len(words), 3)]
        plural = item.condition.endswith("PS")
        assert (subject in NOUN_PL) == plural and (item.correct in VERB_PL) == plural
        assert {item.correct, item.wrong} in ({VERB_SG[k], VERB_PL[k]} for k in range(len(VERB_SG)))
        assert all(p in LEXICON["prep"] and d == "the" and (n in NOUN_SG) == plural for p, d, n in pps)
        lemmas = [(NOUN_SG + NOUN_PL).index(n) % len(NOUN_SG) for n in [subject] + [pp[2] for pp in pps]]
        assert len(set(lemmas)) == len(lemmas)  # the attractors are other nouns than the subject, all distinct
        verb = (VERB_SG + VERB_PL).index(item.correct) % len(VERB_SG)
        assert is_heldout_pair(lemmas[0], verb)
    with pytest.raises(GatescopeError, match="a chain has 1 to 19 PPs"):
        chain_items(20)


def test_each_condition_has_its_items_and_simple_one_per_heldout_pair():
    heldout = sum(is_heldout_pair(n, v) for n in range(len(NOUN_SG)) for v in range(len(VERB_SG)))
    counts = {c: 0 for c in CONDITIONS}
    for item in generate_stimuli():
        counts[item.condition] += 1
    assert counts == {c: heldout if c.startswith("simple") else 200 for c in CONDITIONS}
    assert heldout == 60


def test_write_stimuli_is_all_or_nothing(tmp_path):
    target = tmp_path / "stimuli.tsv"
    target.write_text("old\n")
    broken = generate_stimuli(per_condition=2)[:3] + [None]  # the writer fails on the fourth item
    with pytest.raises(AttributeError):
        write_stimuli(broken, target)
    assert target.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["stimuli.tsv"]  # no temporary file left
    with pytest.raises(GatescopeError, match="does not exist"):
        write_stimuli(generate_stimuli(per_condition=1), tmp_path / "missing" / "stimuli.tsv")


# --- code features ---------------------------------------------------------------------------------

TRICKY = (
    'def f(a, b=[1, (2)]):  # comment (with brackets [\n'
    '\tx = """multi\nline ( string"""\n'
    "\tif x:\n"
    "\t\treturn f\"{a!r} {{b}} {x['k']}\" + 'q' + rb'\\d'\n"
    "\n"
    "    # a comment line at another indentation\n"
    "y = {\n"
    "  1: (2,\n"
    "      [3])}  # end\n"
    "s = 'caf\u00e9 \u2603'  # non-ASCII: columns count characters\n"
    "z = 1 + \\\n"
    "    2"
)


def _ast_string_spans(source: str) -> np.ndarray:
    """Reference in_string from the AST (string constants and f-strings); ASCII offsets per line."""
    lines = source.split("\n")
    starts = np.cumsum([0] + [len(line) + 1 for line in lines])
    mask = np.zeros(len(source), np.float32)

    def offset(row, col):  # ast columns count UTF-8 bytes
        return int(starts[row - 1]) + len(lines[row - 1].encode()[:col].decode())

    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.JoinedStr) or (isinstance(node, ast.Constant) and isinstance(node.value, (str, bytes))):
            mask[offset(node.lineno, node.col_offset):offset(node.end_lineno, node.end_col_offset)] = 1
    return mask


def _reference(source: str) -> dict[str, np.ndarray]:
    """in_comment and bracket_depth by scanning characters outside the AST's strings."""
    in_string = _ast_string_spans(source)
    in_comment = np.zeros(len(source), np.float32)
    depth = np.zeros(len(source), np.float32)
    level, comment = 0, False
    for i, ch in enumerate(source):
        if ch in "\r\n":  # the line ending is not part of the comment
            comment = False
        elif ch == "#" and not in_string[i]:
            comment = True
        in_comment[i] = comment
        code = not (in_string[i] or comment)
        if code and ch in "([{":
            level += 1
        depth[i] = level
        if code and ch in ")]}":
            level -= 1
    return {"in_string": in_string, "in_comment": in_comment, "bracket_depth": depth}


@pytest.mark.parametrize("source", [
    TRICKY,
    TRICKY.replace("\n", "\r\n"),
    "x = ('a' 'b')  # implicit concatenation\n",
    'print(f"{ {1: [2]}[1][0] }")\n',
    "",
    "pass",
])
def test_code_features_match_an_ast_reference_one_value_per_character(source):
    features = code_features(source)
    assert list(features) == list(FEATURES)
    for name, values in features.items():
        assert values.shape == (len(source),) and values.dtype == np.float32, name
    reference = _reference(source)
    if "'a' 'b'" in source:  # the AST joins implicit concatenation into one constant, tokenize does not
        reference["in_string"][source.index("' '") + 1] = 0
    for name, expected in reference.items():
        np.testing.assert_array_equal(features[name], expected, err_msg=name)


def test_indent_level_hand_checked():
    levels = code_features(TRICKY)["indent_level"]
    lines = TRICKY.split("\n")
    starts = np.cumsum([0] + [len(line) + 1 for line in lines])
    per_line = [set(levels[starts[r]:starts[r] + len(lines[r]) + (r < len(lines) - 1)].tolist())
                for r in range(len(lines))]
    # def, x = """, line ( string""", if, return, blank, comment, y = {, 1: (2,, [3])}, s =, z =, 2
    assert per_line == [{0}, {1}, {1}, {1}, {2}, {2}, {2}, {0}, {0}, {0}, {0}, {0}, {0}]


def test_char_features_align_with_the_char_tokenizer():
    from gatescope.vocab import Vocabulary

    vocab = Vocabulary(["<unk>"] + sorted(set(TRICKY)), "char", "<unk>")
    assert len(vocab.encode(TRICKY)) == len(code_features(TRICKY)["in_string"])


@pytest.mark.parametrize("source, line, what", [
    ('x = """never closed\n\n', 1, "EOF in multi-line string"),
    ("x = 1\ny = 'never closed\n", 2, "unterminated string literal"),  # 3.11 tokenizes it as a lone quote
    ("x = (1,\n  2\n", 3, "EOF in multi-line statement"),  # tokenize reports the end of file
    ("if x:\n    a = 1\n  b = 2\n", 3, "unindent does not match"),
])
def test_source_that_does_not_tokenize_is_a_clear_error(source, line, what):
    with pytest.raises(GatescopeError, match=rf"^broken\.py:{line}: cannot tokenize the source: .*{what}") as info:
        code_features(source, "broken.py")
    assert "\n" not in str(info.value)


def test_unknown_condition_is_a_clear_error():
    with pytest.raises(GatescopeError, match="unknown agreement condition 'nounpp_XY'"):
        generate_stimuli(conditions=("nounpp_XY",))
