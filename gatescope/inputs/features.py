"""Per-token features attached to a corpus at trace time, so a trace carries its own labels.

- a file of values (``--feature NAME=FILE``): ``.npy`` (1-D, never unpickled) or one value a line
  (NaN or an empty line = not applicable; words are categories), read by
  read_labels_file (below), one value per token of the whole corpus;
- agreement stimuli (``--stimuli items.tsv``, the TSV of `gatescope agreement`): each item's prefix
  and correct verb is one sequence, labelled ``subject_number``, ``in_attractor`` and ``is_verb`` by
  gatescope.inputs.stimuli.agreement (Linzen et al. 2016; Lakretz et al. 2019);
- Python source features for char models (``--code-features``): ``in_string``, ``in_comment``,
  ``bracket_depth``, ``indent_level`` from gatescope.inputs.stimuli.code_features (Karpathy et al. 2015),
  computed on each sequence's text.

The trace stores each as ``feature.{name}`` (docs/trace-format.md), which
``gatescope analyze units TRACE --feature NAME`` reads.
"""
from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from gatescope.errors import GatescopeError
from gatescope.validation.text import read_labels
from gatescope.inputs.corpus import Corpus, Tokenizer, from_sequences

if TYPE_CHECKING:
    from gatescope.inputs.stimuli.agreement import Stimulus

STIMULUS_FEATURES = ("subject_number", "in_attractor", "is_verb")


def parse_feature_option(value: str) -> tuple[str, Path]:
    """``"subject_number=labels.npy"`` -> (name, path)."""
    name, sep, path = value.partition("=")
    if not sep or not name.strip() or not path.strip():
        raise GatescopeError(f"--feature {value!r}: expected NAME=FILE, e.g. subject_number=labels.npy")
    return name.strip(), Path(path.strip())


def attach_feature_file(corpus: Corpus, name: str, path: str | os.PathLike) -> None:
    """Attach the values of a labels file, one per token of the whole corpus."""
    corpus.add_feature(name, read_labels_file(path), source=str(path))


def stimuli_items(model, path: str | os.PathLike, strict: bool = False) -> Iterator[tuple[str, Stimulus, np.ndarray]]:
    """(where, labelled stimulus, token ids of prefix + correct verb) of each item of an agreement TSV, in order;
    unknown words are counted by the tokenizer and said once at the end (``strict``: refused)."""
    from gatescope.inputs.stimuli.agreement import labelled, read_stimuli

    vocab = model.vocab
    if vocab is not None and vocab.tokenizer != "word":
        raise GatescopeError(f"--stimuli labels words; this model's tokenizer is {vocab.tokenizer!r}")
    tokenizer = Tokenizer(vocab, strict)
    for number, item in enumerate(read_stimuli(path), 1):
        where = f"{path} item {number}"
        try:
            stimulus = labelled(vocab.split(item.prefix), item.correct, item.wrong, item.condition)
        except GatescopeError as exc:
            raise GatescopeError(f"{where}: {exc}") from None
        yield where, stimulus, tokenizer.encode(" ".join(stimulus.tokens), where)
    tokenizer.report()


def stimuli_corpus(model, path: str | os.PathLike, strict: bool = False) -> Corpus:
    """Every item of an agreement TSV as one sequence (prefix + correct verb), with its labels."""
    sequences, stimuli = [], []
    for _, stimulus, ids in stimuli_items(model, path, strict):
        sequences.append(ids)
        stimuli.append(stimulus)
    corpus = from_sequences(sequences, f"{path} ({len(stimuli)} agreement items)")
    for name in STIMULUS_FEATURES:
        corpus.add_feature(name, np.concatenate([np.asarray(getattr(s, name), np.float32) for s in stimuli]))
    return corpus


def check_code_model(model) -> None:
    """Code features are per character: refuse a model without a char vocabulary."""
    if model.vocab is None or model.vocab.tokenizer != "char":
        tokenizer = "no vocabulary" if model.vocab is None else f"a {model.vocab.tokenizer} tokenizer"
        raise GatescopeError(f"--code-features are per character; this model has {tokenizer}")


def attach_code_features(model, corpus: Corpus) -> None:
    """Attach the Python source features of each sequence's text (a char model's corpus, read with
    its texts kept: ``gatescope.inputs.corpus.gather(..., keep_text=True)``)."""
    from gatescope.inputs.stimuli.code_features import FEATURES, code_features

    check_code_model(model)
    if corpus.texts is None:
        raise GatescopeError("--code-features are computed from the text: give --text or --file")
    parts = [code_features(text, where) for where, text in corpus.texts]
    for name in FEATURES:
        corpus.add_feature(name, np.concatenate([p[name] for p in parts]))


def read_labels_file(path: str | os.PathLike) -> np.ndarray:
    """Labels from ``.npy`` (1-D, numeric; never unpickled) or text, one value a line.

    Text lines that are all numbers (``nan`` or an empty line = not applicable) give numbers;
    otherwise each distinct word is a category, coded in sorted order.
    """
    return read_labels(path)  # the door: gatescope.validation.text
