"""Inputs read once (gatescope.inputs.corpus) and features attached at trace time, through the command line."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from tests.checkpoint_fixtures import WORDS, language_model, lstm_reference, save, word_metadata
from tests.cli_helpers import cli, fails
from torch import nn

from gatescope.inputs import corpus as corpora
from gatescope.traces.trace import load_trace


# -- unknown words ---------------------------------------------------------------------------------
def test_unknown_words_are_said_and_mapped_to_unk_strict_refuses_them(tmp_path, capsys):
    _, path = language_model(tmp_path, metadata=word_metadata())
    out = tmp_path / "run.safetensors"
    result = cli(capsys, "trace", path, "--text", "the dog barks", "--text", "the dog greets", "-o", out)
    assert result.err.count("gatescope: warning:") == 1  # said once for the whole corpus
    assert "3 tokens not in the vocabulary were mapped to '<unk>': 'dog', 'barks'" in result.err
    assert load_trace(out).tokens() == ["the", "<unk>", "<unk>", "the", "<unk>", "greets"]
    fails(capsys, "trace", path, "--text", "the dog barks", "--strict", "-o", tmp_path / "o.st",
          match="--text 'the dog barks': tokens not in the vocabulary (strict: not mapped to '<unk>'): 'dog', 'barks'")
    corpus = tmp_path / "c.txt"
    corpus.write_text("the boy\n\nthe cow greets\n")
    fails(capsys, "trace", path, "--file", corpus, "--strict", "-o", tmp_path / "o.st", match="c.txt line 3: tokens")
    import gatescope
    from gatescope.errors import GatescopeWarning

    with pytest.warns(GatescopeWarning, match="1 token not in the vocabulary was mapped to '<unk>': 'dog'"):
        assert gatescope.load(path).encode("the dog") == [2, 0]
    result = cli(capsys, "inspect", path, "--text", "a cow", "--json", "--no-tui")
    assert "2 tokens not in the vocabulary were mapped" in result.err and json.loads(result.out)["trace"]


def test_the_corpus_is_tokenised_once(tmp_path, capsys, monkeypatch):
    from gatescope.vocab import Vocabulary

    _, path = language_model(tmp_path, metadata=word_metadata())
    corpus = tmp_path / "c.txt"
    corpus.write_text("the boy greets\nthe boys greet\n")
    calls = []
    encode = Vocabulary.encode
    monkeypatch.setattr(Vocabulary, "encode", lambda self, text, **kw: calls.append(text) or encode(self, text, **kw))
    cli(capsys, "trace", path, "--file", corpus, "--batch-size", 1, "-o", tmp_path / "run.safetensors")
    assert calls == ["the boy greets", "the boys greet"]


# -- ids files and whole files -------------------------------------------------------------------
def test_ids_file_gives_one_sequence_a_line(tmp_path, capsys):
    _, path = language_model(tmp_path)  # no vocabulary
    ids = tmp_path / "ids.txt"
    ids.write_text("2 3 5\n\n2, 4,6\n9\n")
    cli(capsys, "trace", path, "--ids-file", ids, "-o", tmp_path / "run.safetensors")
    trace = load_trace(tmp_path / "run.safetensors")
    assert trace.offsets.tolist() == [0, 3, 6, 7] and trace.token_ids.tolist() == [2, 3, 5, 2, 4, 6, 9]
    ids.write_text("2 3\n4 12\n")
    fails(capsys, "trace", path, "--ids-file", ids, "-o", tmp_path / "o.st",
          match="ids.txt line 2: token id 12 is outside the vocabulary 0..9")
    ids.write_text("2 x\n")
    fails(capsys, "trace", path, "--ids-file", ids, "-o", tmp_path / "o.st", match="line 1: 'x' is not a token id")


CHARS = sorted(set("def f(x):\n    return 'a' + x  # c\n"))


def char_model(tmp_path):
    torch.manual_seed(4)
    emb, rnn = nn.Embedding(len(CHARS), 3), nn.LSTM(3, 5, batch_first=True)
    meta = {"tokenizer": "char", "vocab": CHARS}
    return emb, rnn, save(tmp_path / "char.safetensors", {"emb": emb, "rnn": rnn}, meta)


def test_whole_files_are_one_sequence_each_and_carry_code_features(tmp_path, capsys):
    from gatescope.inputs.stimuli.code_features import code_features

    emb, rnn, path = char_model(tmp_path)
    first, second = "def f(x):\n    return x\n", "# c\nf('a' + x)\n"
    (tmp_path / "a.py").write_text(first)
    (tmp_path / "b.py").write_text(second)
    out = tmp_path / "code.safetensors"
    result = cli(capsys, "trace", path, "--file", tmp_path / "a.py", "--file", tmp_path / "b.py", "--whole",
                 "--code-features", "-o", out)
    assert "features in_string, in_comment, bracket_depth, indent_level" in result.out
    trace = load_trace(out)
    assert trace.offsets.tolist() == [0, len(first), len(first) + len(second)]
    assert "".join(trace.tokens()) == first + second
    for name in ("in_string", "indent_level"):
        expected = np.concatenate([code_features(first)[name], code_features(second)[name]])
        np.testing.assert_array_equal(trace.features[name].numpy(), expected)
    with torch.no_grad():  # one stream from a zero state, not one restart a line
        x = emb(torch.tensor([CHARS.index(ch) for ch in first]))
        torch.testing.assert_close(trace["rnn.l0.fwd.c"][:len(first)], lstm_reference(rnn, x)["c"], rtol=0, atol=1e-5)
    fails(capsys, "trace", path, "--whole", "--text", "x", "-o", tmp_path / "o.st", match="--whole reads each --file")
    _, word_lm = language_model(tmp_path, metadata=word_metadata())
    fails(capsys, "trace", word_lm, "--text", "the boy", "--code-features", "-o", tmp_path / "o.st",
          match="--code-features are per character; this model has a word tokenizer")


# -- float inputs ----------------------------------------------------------------------------------
@pytest.fixture
def bare(tmp_path):
    torch.manual_seed(5)
    rnn = nn.LSTM(3, 4)
    return rnn, save(tmp_path / "bare.safetensors", {"": rnn})


def traced(capsys, tmp_path, model, x_path):
    out = tmp_path / "run.safetensors"
    cli(capsys, "trace", model, "--input", x_path, "-o", out)
    return load_trace(out)


def test_npy_and_csv_inputs_give_the_same_trace_as_safetensors(tmp_path, capsys, bare):
    rnn, model = bare
    x = torch.randn(2, 4, 3)
    np.save(tmp_path / "x.npy", x.numpy())
    trace = traced(capsys, tmp_path, model, tmp_path / "x.npy")
    with torch.no_grad():
        for s in range(2):
            expected = lstm_reference(rnn, x[s])["h"]
            torch.testing.assert_close(trace["lstm.l0.fwd.h"][trace.sequence(s)], expected, rtol=0, atol=1e-5)
    rows = ["\n".join(",".join(repr(float(v)) for v in step) for step in seq) for seq in x.numpy()]
    (tmp_path / "blank.csv").write_text("a,b,c\n" + "\n\n".join(rows) + "\n")
    by_blank = traced(capsys, tmp_path, model, tmp_path / "blank.csv")
    tsv = "sequence\ta\tb\tc\n" + "".join(f"s{s}\t" + "\t".join(repr(float(v)) for v in step) + "\n"
                                          for s in range(2) for step in x[s].numpy())
    (tmp_path / "ids.tsv").write_text(tsv)
    by_column = traced(capsys, tmp_path, model, tmp_path / "ids.tsv")
    for other in (by_blank, by_column):
        assert other.offsets.tolist() == [0, 4, 8]
        torch.testing.assert_close(other["lstm.l0.fwd.c"], trace["lstm.l0.fwd.c"], rtol=0, atol=1e-6)


@pytest.mark.parametrize(
    ("name", "content", "match"),
    [
        ("x.csv", "1,2,3\n1,2\n", "x.csv line 2: 2 columns; earlier rows have 3"),
        ("x.csv", "1,2,3\n1,a,3\n", "x.csv line 2: 'a' is not a number"),
        ("x.csv", "1,2,3\n1,nan,3\n", "row 1 feature 1 is nan (1 values are not finite numbers)"),
        ("x.tsv", "sequence\ta\tb\tc\n1\t1\t2\t3\n2\t1\t2\t3\n1\t1\t2\t3\n",
         "line 4: rows of sequence '1' are not consecutive"),
        ("x.csv", "a,b,c\n", "has a header but no rows"),
        ("x.csv", "1,2\n", "has 2 features a step; this model takes 3 (lstm with input size 3)"),
        ("x.txt", "1,2,3\n", "unknown file type .txt; expected .safetensors, .npy, .csv, .tsv"),
        ("x.npy", "not an array", "is not a readable .npy array"),
    ],
)
def test_bad_float_inputs_are_one_line_errors(tmp_path, capsys, bare, name, content, match):
    (tmp_path / name).write_text(content)
    fails(capsys, "trace", bare[1], "--input", tmp_path / name, "-o", tmp_path / "o.st", match=match)


def test_float_inputs_to_an_ids_model_state_both_shapes(tmp_path, capsys):
    _, path = language_model(tmp_path, metadata=word_metadata())
    np.save(tmp_path / "x.npy", np.zeros((2, 3, 6), np.float32))
    fails(capsys, "trace", path, "--input", tmp_path / "x.npy", "-o", tmp_path / "o.st",
          match="this model takes token ids (it has embedding encoder [10, 6] -> rnn with input size 6); "
                f"--input {tmp_path / 'x.npy'} (float32 [2, 3, 6]) gives float inputs")


# -- features at trace time ------------------------------------------------------------------------
def test_feature_files_are_attached_nan_allowed_and_counted(tmp_path, capsys):
    _, path = language_model(tmp_path, metadata=word_metadata())
    np.save(tmp_path / "n.npy", np.array([0, 1, 1, np.nan, 0]))
    (tmp_path / "w.txt").write_text("1\n\nnan\n2\n3\n")
    out = tmp_path / "run.safetensors"
    cli(capsys, "trace", path, "--text", "the boys greet", "--text", "the boy",
        "--feature", f"number={tmp_path / 'n.npy'}", "--feature", f"weight={tmp_path / 'w.txt'}", "-o", out)
    trace = load_trace(out)
    assert sorted(trace.features) == ["number", "weight"]
    np.testing.assert_array_equal(trace.features["number"].numpy(), np.array([0, 1, 1, np.nan, 0], np.float32))
    assert [v if not math.isnan(v) else None for v in trace.features["weight"].tolist()] == [1, None, None, 2, 3]
    fails(capsys, "trace", path, "--text", "the boy", "--feature", f"number={tmp_path / 'n.npy'}", "-o", out,
          match=f"feature 'number' ({tmp_path / 'n.npy'}) has 5 values but the input has 2 tokens in 1 sequence")
    fails(capsys, "trace", path, "--text", "the boy", "--feature", "number", "-o", out, match="expected NAME=FILE")
    assert load_trace(out).num_tokens == 5  # the earlier trace is left as it was


def test_stimuli_are_traced_with_their_labels_and_analyzed_from_the_command_line(tmp_path, capsys):
    from gatescope.inputs.stimuli.agreement import labelled

    words = WORDS + ["that", "see", "sees"]
    torch.manual_seed(8)
    emb, rnn, dec = nn.Embedding(len(words), 4), nn.LSTM(4, 6, batch_first=True), nn.Linear(6, len(words))
    path = save(tmp_path / "lm.safetensors", {"encoder": emb, "rnn": rnn, "decoder": dec},
                word_metadata(vocab=words))
    items = [("the boy", "greets", "greet", "simple_S"), ("the boys near the car", "greet", "greets", "nounpp_PS"),
             ("the boy that the cars see", "greets", "greet", "objrc_SP"), ("the boys", "greet", "greets", "simple_P")]
    tsv = tmp_path / "items.tsv"
    tsv.write_text("".join("\t".join(item) + "\n" for item in items))
    out = tmp_path / "agr.safetensors"
    result = cli(capsys, "trace", path, "--stimuli", tsv, "-o", out)
    assert "4 sequences, 19 tokens" in result.out and "subject_number, in_attractor, is_verb" in result.out
    trace = load_trace(out)
    assert trace.tokens(0, 3) == ["the", "boy", "greets"]
    for name in ("subject_number", "in_attractor", "is_verb"):
        expected = np.concatenate([getattr(labelled(p.split(), c, w, k), name) for p, c, w, k in items])
        np.testing.assert_array_equal(trace.features[name].numpy(), expected.astype(np.float32))
    assert trace.features["in_attractor"][3:9].tolist() == [0, 0, 1, 1, 1, 0]
    ranked = json.loads(cli(capsys, "analyze", "units", out, "--feature", "subject_number", "--kinds", "h",
                            "--permutations", "0", "--json").out)
    assert len(ranked) == 6 and ranked[0]["unit"].startswith("rnn.l0.fwd.h:")
    tsv.write_text("the tall boy\tgreets\tgreet\tsimple_S\n")
    fails(capsys, "trace", path, "--stimuli", tsv, "-o", tmp_path / "o.st",
          match="items.tsv item 1: a simple prefix has 2 words (det subj); 'the tall boy' has 3")
    tsv.write_text("the boy\tgreets\tgreet\tmine\n")
    fails(capsys, "trace", path, "--stimuli", tsv, "-o", tmp_path / "o.st",
          match="condition 'mine' is not one of gatescope's agreement conditions")
    fails(capsys, "trace", path, "--stimuli", tsv, "--text", "the boy", "-o", tmp_path / "o.st",
          match="--stimuli gives the input; it cannot be combined")


def test_batches_keep_the_order_and_cut_where_lengths_change():
    corpus = corpora.from_sequences([[1, 2], [3, 4], [5], [6, 7]], "test")
    batches = list(corpus.batches(3, equal_lengths=True))
    assert [b[0].tolist() for b in batches] == [[[1, 2], [3, 4]], [[5]], [[6, 7]]]
    assert all(lengths is None for _, lengths in batches)
    (x, lengths), = corpus.batches(4)
    assert x.tolist() == [[1, 2], [3, 4], [5, 0], [6, 7]] and lengths.tolist() == [2, 2, 1, 2]


def test_padded_batches_gathered_from_the_flat_layout_equal_pad_batch():
    from gatescope.inputs.corpus import Corpus, from_sequences, pad_batch

    ids = from_sequences([[3, 1, 4], [1, 5], [9, 2, 6, 5], [3]], "ids")
    floats = Corpus(np.arange(20, dtype=np.float32).reshape(10, 2), np.array([0, 3, 5, 9, 10]), "floats")
    for corpus in (ids, floats):
        for group in ([2, 0, 3], [1], [0, 1, 2, 3]):
            x, lengths = corpus.padded(group)
            expected, expected_lengths = pad_batch([corpus.sequence(s) for s in group])
            assert torch.equal(x, expected) and x.dtype == expected.dtype
            assert (lengths is None) == (expected_lengths is None)
            assert lengths is None or torch.equal(lengths, expected_lengths)


def test_hostile_float_inputs_are_refused_before_they_are_read(tmp_path, capsys, bare):
    np.savez(tmp_path / "x.npz", a=np.zeros((4, 3), np.float32))
    (tmp_path / "x.npz").rename(tmp_path / "npz.npy")
    np.save(tmp_path / "claim.npy", np.zeros((2, 3), np.float32))
    raw = (tmp_path / "claim.npy").read_bytes().replace(b"(2, 3)", f"({2**60}, 3)".encode().ljust(6))
    (tmp_path / "claim.npy").write_bytes(raw)
    (tmp_path / "field.csv").write_text("a,b,c\n1,2," + "3" * 200_000 + "\n")
    np.save(tmp_path / "fortran.npy", np.asfortranarray(np.arange(12, dtype=np.float32).reshape(4, 3)))
    for name, match in (("npz.npy", "is not a readable .npy array (the magic string is not correct"),
                        ("claim.npy", f"its header claims {2**60 * 3} values"),
                        ("field.csv", "is not a readable table (field larger than field limit")):
        fails(capsys, "trace", bare[1], "--input", tmp_path / name, "-o", tmp_path / "o.st", match=match)
    trace = traced(capsys, tmp_path, bare[1], tmp_path / "fortran.npy")  # numpy's other layout still reads right
    with torch.no_grad():
        x = torch.arange(12, dtype=torch.float32).reshape(4, 3)
        torch.testing.assert_close(trace["lstm.l0.fwd.h"][:], lstm_reference(bare[0], x)["h"], rtol=0, atol=1e-5)


def test_a_whole_file_over_the_limit_is_refused_before_it_is_read_and_the_limit_can_be_raised(tmp_path, capsys):
    _, _, path = char_model(tmp_path)
    (tmp_path / "big.py").write_text("x" * (1 << 20) + "y")  # just over 1 MB, one line
    fails(capsys, "trace", path, "--file", tmp_path / "big.py", "--whole", "--max-whole-mb", "1", "-o",
          tmp_path / "o.st", match="big.py is 1.0 MB; a file read as one sequence (--whole) is read whole up to "
                                   "1.0 MB (--max-whole-mb raises the limit)")
    assert "--max-whole-mb" in cli(capsys, "trace", "--help").out
    (tmp_path / "small.py").write_text(CHARS[0] * 6)
    cli(capsys, "trace", path, "--file", tmp_path / "small.py", "--whole", "--max-whole-mb", "1", "-o", tmp_path / "o.st")
    assert load_trace(tmp_path / "o.st").num_tokens == 6
