"""Streamed label sources: --feature-from (agreement stimuli) and --code-features equal the traced features,
labels read a line at a time equal the whole-file reader, misaligned labels are one-line errors, and the
streamed probe's control task equals the in-memory one."""
from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch
from tests.checkpoint_fixtures import WORDS, language_model, save, word_metadata
from tests.cli_helpers import cli, fails
from torch import nn

from gatescope.analysis.selection import heldout_from_offsets
from gatescope.analysis.streaming.accumulators import quantile_codes
from gatescope.analysis.streaming.labels import LabelScan, LabelsFile, heldout_sequences
from gatescope.validation.text import read_labels


def run_json(capsys, *argv):
    return json.loads(cli(capsys, *argv).out)


@pytest.fixture(scope="module")
def agreement(tmp_path_factory):
    """A word LSTM, 40 agreement items (simple and nounpp) and the corpus of their prefix + correct verb."""
    tmp = tmp_path_factory.mktemp("agreement")
    _, model = language_model(tmp, metadata=word_metadata())
    rng = random.Random(1)
    rows = []
    for _ in range(40):
        subject, attractor = rng.choice("SP"), rng.choice("SP")
        noun = {"S": "boy", "P": "boys"}[subject]
        correct, wrong = ("greets", "greet") if subject == "S" else ("greet", "greets")
        if rng.random() < 0.5:
            rows.append((f"the {noun}", correct, wrong, f"simple_{subject}"))
        else:
            car = {"S": "car", "P": "cars"}[attractor]
            rows.append((f"the {noun} near the {car}", correct, wrong, f"nounpp_{subject}{attractor}"))
    (tmp / "items.tsv").write_text("".join("\t".join(r) + "\n" for r in rows))
    (tmp / "corpus.txt").write_text("".join(f"{p} {c}\n" for p, c, _, _ in rows))
    return tmp, model, rows


def test_feature_from_stimuli_equals_the_traced_feature(agreement, capsys):
    tmp, model, _ = agreement
    cli(capsys, "trace", model, "--stimuli", tmp / "items.tsv", "-o", tmp / "t.safetensors")
    for feature in ("subject_number", "in_attractor"):
        traced = run_json(capsys, "analyze", "units", tmp / "t.safetensors", "--feature", feature,
                          "--permutations", 0, "--top", 0, "--json")
        streamed = run_json(capsys, "analyze", "units", model, "--file", tmp / "corpus.txt", "--feature-from",
                            tmp / "items.tsv", "--feature", feature, "--top", 0, "--json", "--batch-size", 6)
        by_unit = {r["unit"]: r for r in traced}
        assert len(streamed) == len(traced) == 6 * 8
        for row in streamed:
            ref = by_unit[row["unit"]]
            assert row["n"] == ref["n"] and row["corr"] == pytest.approx(ref["corr"], abs=1e-9)
            assert abs(row["auc"] - ref["auc"]) <= row["auc_bound"] + 1e-12


def test_feature_from_refuses_what_does_not_line_up(agreement, capsys):
    tmp, model, rows = agreement
    common = ("analyze", "units", model, "--file", tmp / "corpus.txt", "--feature-from", tmp / "items.tsv")
    fails(capsys, *common, match="--feature-from items.tsv gives several features: choose one with --feature NAME "
                                 "(subject_number, in_attractor, is_verb)")
    fails(capsys, *common, "--feature", "plural",
          match="--feature-from items.tsv has no feature 'plural'; it gives subject_number, in_attractor, is_verb")
    lines = (tmp / "corpus.txt").read_text().splitlines()
    (tmp / "swapped.txt").write_text("\n".join([lines[1], lines[0], *lines[2:]]) + "\n")
    if lines[0] != lines[1]:
        fails(capsys, "analyze", "units", model, "--file", tmp / "swapped.txt", "--feature-from", tmp / "items.tsv",
              "--feature", "is_verb", match="swapped.txt line 1 is not ")
    (tmp / "fewer.txt").write_text("\n".join(lines[:-1]) + "\n")
    fails(capsys, "analyze", "units", model, "--file", tmp / "fewer.txt", "--feature-from", tmp / "items.tsv",
          "--feature", "is_verb", match=f"items.tsv has {len(rows)} items; the corpus has {len(rows) - 1} lines")
    (tmp / "more.txt").write_text("\n".join(lines + [lines[0]]) + "\n")
    fails(capsys, "analyze", "units", model, "--file", tmp / "more.txt", "--feature-from", tmp / "items.tsv",
          "--feature", "is_verb", match=f"items.tsv has {len(rows)} items; the corpus has more lines")
    (tmp / "dog.tsv").write_text("the dog\tgreets\tgreet\tsimple_S\n")
    (tmp / "dog.txt").write_text("the dog greets\n")
    fails(capsys, "analyze", "units", model, "--file", tmp / "dog.txt", "--feature-from", tmp / "dog.tsv",
          "--feature", "is_verb", match="dog.tsv item 1: tokens not in the vocabulary")
    fails(capsys, "analyze", "units", model, "--file", tmp / "corpus.txt", "--code-features", "--feature", "in_string",
          match="--code-features are per character; this model has a word tokenizer")


CHARS = sorted(set("def f(x):\n    return 'a' + x  # c\n"))


def test_code_features_equal_the_traced_ones(tmp_path, capsys):
    torch.manual_seed(4)
    model = save(tmp_path / "char.safetensors", {"emb": nn.Embedding(len(CHARS), 3),
                                                 "rnn": nn.LSTM(3, 5, batch_first=True)},
                 {"tokenizer": "char", "vocab": CHARS})
    rng = random.Random(2)
    pieces = ["f(x)", "'a' + x", "return x", "# c", "x + 'fa'  # c", "def f(a):", "f(f(x) + 'e')"]
    (tmp_path / "code.txt").write_text("".join(rng.choice(pieces) + "\n" for _ in range(30)))
    cli(capsys, "trace", model, "--file", tmp_path / "code.txt", "--code-features", "-o", tmp_path / "t.safetensors")
    for feature in ("in_string", "bracket_depth"):
        traced = run_json(capsys, "analyze", "units", tmp_path / "t.safetensors", "--feature", feature,
                          "--permutations", 0, "--top", 0, "--json")
        streamed = run_json(capsys, "analyze", "units", model, "--file", tmp_path / "code.txt", "--code-features",
                            "--feature", feature, "--top", 0, "--json", "--batch-size", 4)
        value = "eta2" if feature == "bracket_depth" else "corr"
        by_unit = {r["unit"]: r for r in traced}
        for row in streamed:
            assert row["n"] == by_unit[row["unit"]]["n"]
            assert row[value] == pytest.approx(by_unit[row["unit"]][value], abs=1e-9)
    fails(capsys, "analyze", "units", model, "--file", tmp_path / "code.txt", "--code-features",
          match="--code-features gives several features: choose one with --feature NAME (in_string, in_comment, "
                "bracket_depth, indent_level)")
    (tmp_path / "open.txt").write_text("f(x)\n'a\n")
    fails(capsys, "analyze", "units", model, "--file", tmp_path / "open.txt", "--code-features", "--feature",
          "in_string", match="open.txt line 2:")


def streamed_values(source, lengths):
    reader = source.reader()
    out = np.concatenate([reader.take(f"line {i}", "", np.zeros(n, np.int64)) for i, n in enumerate(lengths)])
    reader.close(sum(lengths))
    return out


@pytest.mark.parametrize("text", ["1\n0\n\nnan\n1\n0\n", "b\na\n\nnan\n3\nb\n", "0.5\n2\n-1\n0.5\nnan\n7\n"])
def test_labels_read_a_line_at_a_time_equal_the_whole_file(tmp_path, text):
    path = tmp_path / "labels.txt"
    path.write_text(text)
    np.testing.assert_array_equal(streamed_values(LabelsFile(str(path)), [2, 1, 3]), read_labels(path))
    np.save(tmp_path / "labels.npy", read_labels(path))
    np.testing.assert_array_equal(streamed_values(LabelsFile(str(tmp_path / "labels.npy")), [4, 2]),
                                  read_labels(path))


def test_label_scheme_codes_equal_the_whole_vectors():
    g = torch.Generator().manual_seed(0)
    values = torch.randint(0, 7, (500,), generator=g).to(torch.float64) / 2  # ties, continuous (7 distinct)
    values[::9] = float("nan")
    scan = LabelScan()
    for part in values.split(37):
        scan.update(part.numpy())
    scheme = scan.scheme("v")
    assert scheme.kind == "continuous"
    parts = torch.cat([scheme.quantile_codes(part, 16) for part in values.split(50)])
    assert torch.equal(parts, quantile_codes(values, 16))
    cats = LabelScan()
    cats.update(np.array([2.0, 5.0, np.nan, 9.0, 2.0]))
    assert cats.scheme("c").kind == "categorical"
    assert cats.scheme("c").codes(torch.tensor([9.0, np.nan, 2.0])).tolist() == [2, -1, 0]


@pytest.mark.parametrize("lengths", [[3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5], [4, 2, 7]])
def test_heldout_sequences_equal_heldout_from_offsets(lengths):
    offsets = torch.tensor(np.concatenate([[0], np.cumsum(lengths)]))
    held = heldout_sequences(len(lengths), int(offsets[-1]))
    streamed = np.concatenate([held(s, int(offsets[s]), n) for s, n in enumerate(lengths)])
    assert streamed.tolist() == heldout_from_offsets(offsets).tolist()


@pytest.mark.parametrize("continuous", [False, True])
def test_streamed_probe_has_the_in_memory_control_task(tmp_path, capsys, continuous):
    """One batch holds the whole corpus, as one chunk of the trace does: the same minibatches, so the
    same task and control probes; the control labels are drawn as probes.control_labels draws them."""
    _, model = language_model(tmp_path, metadata=word_metadata())
    rng = random.Random(0)
    lines = [" ".join(rng.choice(WORDS[2:]) for _ in range(rng.randint(1, 9))) for _ in range(60)]
    (tmp_path / "corpus.txt").write_text("\n".join(lines) + "\n")
    labels = [(len(w) + 0.5 * w.endswith("s")) if continuous else float(w.endswith("s"))
              for line in lines for w in line.split()]
    (tmp_path / "labels.txt").write_text("\n".join(map(str, labels)) + "\n")
    cli(capsys, "trace", model, "--file", tmp_path / "corpus.txt", "-o", tmp_path / "t.safetensors")
    traced = run_json(capsys, "analyze", "probe", tmp_path / "t.safetensors", "--labels", tmp_path / "labels.txt",
                      "--kinds", "h,c", "--epochs", 2, "--seed", 3, "--json")
    streamed = run_json(capsys, "analyze", "probe", model, "--file", tmp_path / "corpus.txt", "--labels",
                        tmp_path / "labels.txt", "--kinds", "h,c", "--epochs", 2, "--seed", 3, "--json")
    assert [r["name"] for r in streamed] == [r["name"] for r in traced]
    for s, t in zip(streamed, traced):
        for key in ("score", "control", "selectivity"):
            assert s[key] == pytest.approx(t[key], abs=1e-6), key
        assert s["control"] == s["control"] and s["baseline"] == t["baseline"]  # not NaN
    out = run_json(capsys, "analyze", "probe", model, "--file", tmp_path / "corpus.txt", "--labels",
                   tmp_path / "labels.txt", "--kinds", "h", "--epochs", 1, "--no-control", "--json")
    assert out[0]["control"] is None and out[0]["selectivity"] is None  # NaN, as JSON null
