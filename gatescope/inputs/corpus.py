"""The sequences a model is run on, read and tokenised once, then batched.

A `Corpus` is the flat layout of a trace file (docs/trace-format.md, and LSTMVis's states.h5): every
sequence's steps one after another in ``values`` and the sequence boundaries in ``offsets``, plus
optional per-step features (``feature.{name}`` in the trace). Readers:

- text (``--text``), a text file with one sequence a line (``--file``; blank lines skipped), or
  whole files, each one sequence (``--file ... --whole``: a char model reads a source file as one
  stream instead of restarting from a zero state at every line), tokenised with the model's
  `Vocabulary`. Tokens outside the vocabulary become its unknown token and are said once for the
  whole corpus (a GatescopeWarning: how many, the first few); ``strict`` makes them an error.
- token ids (``--ids "3 17 4"``, ``--ids-file``: one sequence a line, ids separated by spaces or
  commas).
- float inputs (``--input``) for a model without an embedding: ``.safetensors`` (one tensor) or
  ``.npy`` (never unpickled), [sequences, time, features] or [time, features]; or ``.csv`` /
  ``.tsv``: one row per timestep, one column per feature, an optional header row; sequences are
  separated by a blank line, or given by a header column named ``sequence`` (consecutive rows with
  the same value are one sequence).

Batches follow the corpus's order; sequences of different lengths are padded and their lengths
given (the model packs them, so padding is never run), or cut where the length changes for models
that must step equal-length batches (LSTMCell / GRUCell).
"""
from __future__ import annotations

import csv
import os
from contextvars import ContextVar
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import numpy as np

from gatescope.errors import GatescopeError, shown, warn
from gatescope.files import check_regular, read_limited, reading, text_lines
from gatescope.numbers import whole_number
from gatescope.validation.limits import MAX_WHOLE_BYTES
from gatescope.validation.text import read_npy
from gatescope.vocab import NO_VOCABULARY

if TYPE_CHECKING:
    import torch

    from gatescope.vocab import Vocabulary

_Item = TypeVar("_Item")
SEQUENCE_COLUMN = "sequence"  # a CSV/TSV header column naming each row's sequence
FLOAT_SUFFIXES = (".safetensors", ".npy", ".csv", ".tsv")


@dataclass
class Corpus:
    """Sequences in the flat layout of a trace: ``values`` [N] token ids (int64) or [N, F] float32
    inputs, ``offsets`` [S+1] (sequence s is rows offsets[s]:offsets[s+1]), features [N] each."""

    values: np.ndarray  # (N,) int64 or (N, F) float32
    offsets: np.ndarray  # (S+1,) int64
    description: str
    features: dict[str, np.ndarray] = field(default_factory=dict)  # name -> (N,) float32, NaN = none
    texts: list[tuple[str, str]] | None = None  # (where, text) of each sequence, when kept

    @property
    def num_sequences(self) -> int:
        return len(self.offsets) - 1

    @property
    def num_tokens(self) -> int:
        return int(self.offsets[-1])

    @property
    def is_float(self) -> bool:
        return self.values.ndim == 2

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)  # (S,)

    def sequence(self, s: int) -> torch.Tensor:
        """Sequence ``s`` as a tensor: ids [T] or floats [T, F] (a view of the corpus)."""
        import torch

        return torch.from_numpy(self.values[self.offsets[s]:self.offsets[s + 1]])

    def sequences(self) -> Iterator[torch.Tensor]:
        return (self.sequence(s) for s in range(self.num_sequences))

    def part(self, start: int, stop: int) -> Corpus:
        """Sequences start..stop-1 as a corpus of their own (views, with their features)."""
        first, last = int(self.offsets[start]), int(self.offsets[stop])
        texts = None if self.texts is None else self.texts[start:stop]
        return Corpus(self.values[first:last], self.offsets[start:stop + 1] - first, self.description,
                      {name: values[first:last] for name, values in self.features.items()}, texts)

    def add_feature(self, name: str, values: Iterable[float] | np.ndarray, source: str | None = None) -> None:
        """Attach per-step values (one per token of the whole corpus, NaN where not applicable)."""
        array = np.asarray(values, dtype=np.float32).reshape(-1)
        if array.size != self.num_tokens:
            raise GatescopeError(
                f"feature {name!r}{f' ({source})' if source else ''} has {array.size} values but the input has "
                f"{self.num_tokens} tokens in {self.num_sequences} sequence{'s' if self.num_sequences != 1 else ''} "
                "(one value a token)"
            )
        if name in self.features:
            raise GatescopeError(f"feature {name!r} is given twice")
        self.features[name] = array

    def batches(self, size: int, equal_lengths: bool = False) -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:
        """(padded batch [B, T] or [B, T, F], lengths [B] or None when all are equally long), in order.

        With ``equal_lengths``, a batch is cut where the length changes, so no batch is padded."""
        lengths = self.lengths
        for group in batch_groups(range(self.num_sequences), size, lambda s: int(lengths[s]), equal_lengths):
            yield self.padded(group)

    def padded(self, group: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Sequences ``group`` as one padded batch [B, T(, F)] (zeros past each one's end) and their lengths
        [B] (None when all are equal): `pad_batch`, gathered from the flat layout at once."""
        import torch

        group = np.asarray(group, dtype=np.int64)
        lengths = self.lengths[group]  # (B,)
        steps = np.arange(int(lengths.max()))  # (T,)
        valid = steps < lengths[:, None]  # (B, T)
        padded = np.zeros((len(group), len(steps), *self.values.shape[1:]), dtype=self.values.dtype)
        padded[valid] = self.values[(self.offsets[group][:, None] + steps)[valid]]
        same = bool((lengths == lengths[0]).all())
        return torch.from_numpy(padded), None if same else torch.from_numpy(lengths)


def batch_groups(items: Iterable[_Item], size: int, length: Callable[[_Item], int],
                 equal_lengths: bool = False, alone_over: int = 0) -> Iterator[list[_Item]]:
    """Consecutive ``items`` in groups of at most ``size``; with ``equal_lengths`` a group also ends where
    ``length`` changes; an item longer than ``alone_over`` (when it is not 0) is a group of its own. One
    rule for a corpus in memory and one read a line at a time."""
    group: list[_Item] = []
    for item in items:
        alone = bool(alone_over) and length(item) > alone_over
        if group and (len(group) == size or alone or (equal_lengths and length(item) != length(group[0]))
                      or (alone_over and length(group[0]) > alone_over)):
            yield group
            group = []
        group.append(item)
    if group:
        yield group


def pad_batch(sequences: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Sequences [T] or [T, F] as one padded batch [B, T(, F)] and their lengths [B] (None when all are equal)."""
    import torch

    padded = torch.nn.utils.rnn.pad_sequence(list(sequences), batch_first=True)  # (B, T) or (B, T, F)
    lengths = [len(s) for s in sequences]
    return padded, None if len(set(lengths)) == 1 else torch.tensor(lengths)


def concatenate(parts: Sequence[Corpus]) -> Corpus:
    """The sequences of ``parts`` one after another (all ids or all floats of one width)."""
    parts = [p for p in parts if p.num_sequences]
    if not parts:
        raise GatescopeError("empty input: no sequences")
    if len(parts) == 1:
        return parts[0]
    if len({(p.is_float, p.values.shape[1:]) for p in parts}) != 1:
        raise GatescopeError("cannot mix token ids and float inputs (or float inputs of different widths)")
    names = {frozenset(p.features) for p in parts}
    if len(names) != 1:
        raise GatescopeError("every part of the input must carry the same features")
    starts = np.cumsum([0] + [p.num_tokens for p in parts[:-1]])
    offsets = np.concatenate([parts[0].offsets[:1]] + [p.offsets[1:] + s for p, s in zip(parts, starts)])
    texts = None
    if all(p.texts is not None for p in parts):
        texts = [t for p in parts for t in p.texts]
    return Corpus(
        np.concatenate([p.values for p in parts]),
        offsets.astype(np.int64),
        ", ".join(p.description for p in parts),
        {name: np.concatenate([p.features[name] for p in parts]) for name in parts[0].features},
        texts,
    )


def from_sequences(sequences: Sequence[Sequence[int] | np.ndarray], description: str,
                   texts: list[tuple[str, str]] | None = None) -> Corpus:
    """A corpus of token-id sequences (each non-empty)."""
    arrays = [np.asarray(s, dtype=np.int64).reshape(-1) for s in sequences]
    if not arrays:
        raise GatescopeError(f"empty input: {description} has no sequences")
    offsets = np.concatenate([[0], np.cumsum([len(a) for a in arrays])]).astype(np.int64)
    return Corpus(np.concatenate(arrays), offsets, description, texts=texts)


# -- token ids from text ---------------------------------------------------------------------
class Tokenizer:
    """Tokenises pieces of a corpus with one vocabulary, counting unknown tokens across all of them;
    `report()` says them once (a GatescopeWarning) at the end."""

    def __init__(self, vocab: Vocabulary | None, strict: bool = False) -> None:
        if vocab is None:
            raise GatescopeError(f"{NO_VOCABULARY}, or give token ids (--ids, --ids-file) instead of text")
        self.vocab, self.strict = vocab, strict
        self.unknown: list[str] = []

    def encode(self, text: str, where: str) -> np.ndarray:
        """Token ids of ``text`` (int64 [T]); ``where`` names it in errors."""
        try:
            return np.asarray(self.vocab.encode(text, strict=self.strict, unknown=self.unknown), dtype=np.int64)
        except GatescopeError as exc:
            raise GatescopeError(f"{where}: {exc}") from None

    def report(self) -> None:
        if self.unknown:
            warn(self.vocab.unknown_message(self.unknown))


def from_texts(texts: Sequence[str], tokenizer: Tokenizer, keep_text: bool = False) -> Corpus:
    """One sequence per text (``--text``)."""
    ids = [tokenizer.encode(text, f"--text {text[:40]!r}") for text in texts]
    return from_sequences(ids, f"{len(ids)} texts", [("--text", t) for t in texts] if keep_text else None)


WHOLE_LIMIT: ContextVar[int] = ContextVar("whole_limit", default=MAX_WHOLE_BYTES)
"""Bytes of a file read as one sequence (``--whole``): set by the command line's ``--max-whole-mb``."""


def read_text_file(path: str | os.PathLike, tokenizer: Tokenizer, whole: bool = False,
                   keep_text: bool = False) -> Corpus:
    """A text file: one sequence a non-blank line, or (``whole``) the whole file as one sequence, of at most
    `WHOLE_LIMIT` bytes (a larger one is refused before it is read)."""
    path = Path(path)
    if whole:
        raw = read_limited(path, "file read as one sequence (--whole)", WHOLE_LIMIT.get(), "--max-whole-mb")
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise GatescopeError(f"{path} is not UTF-8 text") from None
        if not text:
            raise GatescopeError(f"empty input: {path} is empty")
        return from_sequences([tokenizer.encode(text, str(path))], str(path),
                              [(str(path), text)] if keep_text else None)
    ids, kept = [], []
    for where, line, line_ids in tokenised_lines(path, tokenizer):
        ids.append(line_ids)
        if keep_text:
            kept.append((where, line))
    if not ids:
        raise GatescopeError(f"empty input: {path} has no non-blank lines")
    return from_sequences(ids, str(path), kept if keep_text else None)


def tokenised_lines(path: str | os.PathLike, tokenizer: Tokenizer) -> Iterator[tuple[str, str, np.ndarray]]:
    """(``"FILE line N"``, line, token ids) of each non-blank line, read and tokenised one at a time: the
    streaming form of `read_text_file`, for a corpus that is not held (unknown tokens: ``tokenizer.report()``)."""
    for where, line in _lines(Path(path), "text file"):
        yield where, line, tokenizer.encode(line, where)


def _lines(path: Path, what: str) -> Iterator[tuple[str, str]]:
    """(``"FILE line N"``, line) for each non-blank line, read one at a time (bounded, regular files only)."""
    for number, line in text_lines(path, what):
        if line.strip():
            yield f"{path} line {number}", line


# -- token ids given as numbers ----------------------------------------------------------------
def parse_ids(text: str, where: str = "--ids", size: int | None = None) -> list[int]:
    """``"3 17 4"`` (spaces or commas) -> [3, 17, 4]; ids outside 0..size-1 are an error."""
    pieces = text.replace(",", " ").split()
    if not pieces:
        raise GatescopeError(f"empty input: {where} needs at least one token id")
    ids = [whole_number(p) for p in pieces]
    if None in ids:
        raise GatescopeError(f"{where}: {shown(pieces[ids.index(None)])} is not a token id (an integer)")
    if size is not None and (min(ids) < 0 or max(ids) >= size):
        bad = next(i for i in ids if not 0 <= i < size)
        raise GatescopeError(f"{where}: token id {bad} is outside the vocabulary 0..{size - 1}")
    return ids


def from_ids(strings: Sequence[str], size: int | None = None) -> Corpus:
    """One sequence per ``--ids`` string."""
    return from_sequences([parse_ids(s, f"--ids {s!r}", size) for s in strings], f"{len(strings)} id sequences")


def read_ids_file(path: str | os.PathLike, size: int | None = None) -> Corpus:
    """One sequence of token ids a non-blank line (``--ids-file``)."""
    path = Path(path)
    ids = [parse_ids(line, where, size) for where, line in _lines(path, "ids file")]
    if not ids:
        raise GatescopeError(f"empty input: {path} has no non-blank lines")
    return from_sequences(ids, str(path))


# -- float inputs ------------------------------------------------------------------------------
def read_float_inputs(path: str | os.PathLike) -> Corpus:
    """Float inputs (``--input``): .safetensors / .npy [S, T, F] or [T, F], or .csv / .tsv rows."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in FLOAT_SUFFIXES:
        raise GatescopeError(f"--input {path}: unknown file type {suffix or '(none)'}; "
                             f"expected {', '.join(FLOAT_SUFFIXES)}")
    check_regular(path, "input file")
    if suffix in (".csv", ".tsv"):
        return _read_table(path, "\t" if suffix == ".tsv" else ",")
    array, what = _read_safetensors(path) if suffix == ".safetensors" else _read_npy(path)
    shape = f"{array.dtype} {list(array.shape)}"
    if array.ndim == 2:
        array = array[None]  # (1, T, F)
    if array.ndim != 3 or array.dtype.kind != "f" or 0 in array.shape:
        raise GatescopeError(f"--input {path}: {what} is {shape}; expected floats [sequences, time, features] "
                             "or [time, features] for one sequence")
    array = array.astype(np.float32)
    _check_finite(array.reshape(-1, array.shape[-1]), path)
    sequences, steps, width = array.shape
    offsets = np.arange(0, sequences * steps + 1, steps, dtype=np.int64)
    return Corpus(array.reshape(-1, width), offsets, f"{path} ({shape})")


def _read_safetensors(path: Path) -> tuple[np.ndarray, str]:
    from safetensors import SafetensorError, safe_open

    try:
        with reading(path, "safetensors file"), safe_open(path, framework="np") as f:
            keys = list(f.keys())
            if len(keys) != 1:
                raise GatescopeError(f"--input {path} must hold exactly one tensor; it has {len(keys)} "
                                     f"({', '.join(keys[:5]) or 'none'})")
            return f.get_tensor(keys[0]), f"tensor {keys[0]}"
    except SafetensorError as exc:
        raise GatescopeError(f"{path} is not a readable safetensors file ({str(exc).splitlines()[0]})") from None
    except TypeError as exc:  # a dtype numpy has no equivalent for (bfloat16)
        raise GatescopeError(f"--input {path}: cannot read the tensor as numbers ({exc})") from None


def _read_npy(path: Path) -> tuple[np.ndarray, str]:
    return read_npy(path, "--input array", ndims=(2, 3)), "the array"


def _read_table(path: Path, delimiter: str) -> Corpus:
    """One row per timestep; a blank line or the ``sequence`` column separates sequences. Read a bounded line
    at a time (a field holds no line break)."""
    try:
        rows = list(csv.reader((line for _, line in text_lines(path, "table")), delimiter=delimiter))
    except csv.Error as exc:
        raise GatescopeError(f"{path} is not a readable table ({exc})") from None
    header, first = None, next((i for i, r in enumerate(rows) if any(c.strip() for c in r)), None)
    if first is None:
        raise GatescopeError(f"empty input: {path} has no rows")
    if not all(_is_number(c) for c in rows[first] if c.strip()):
        header, first = [c.strip() for c in rows[first]], first + 1
    id_column = header.index(SEQUENCE_COLUMN) if header and SEQUENCE_COLUMN in header else None
    width = None
    values: list[list[float]] = []
    offsets, seen, previous = [0], set(), object()
    for number, row in enumerate(rows[first:], first + 1):
        if not any(c.strip() for c in row):
            if id_column is None and len(values) > offsets[-1]:
                offsets.append(len(values))
            continue
        if id_column is not None:
            key = row[id_column].strip() if id_column < len(row) else ""
            if key != previous:
                if key in seen:
                    raise GatescopeError(f"{path} line {number}: rows of sequence {key!r} are not consecutive")
                if values:
                    offsets.append(len(values))
                seen.add(key)
                previous = key
            row = row[:id_column] + row[id_column + 1:]
        if width is None:
            width = len(row)
        if len(row) != width:
            raise GatescopeError(f"{path} line {number}: {len(row)} columns; earlier rows have {width}")
        try:
            values.append([float(c) for c in row])
        except ValueError:
            bad = next(c for c in row if not _is_number(c))
            raise GatescopeError(f"{path} line {number}: {bad!r} is not a number") from None
    if not values:
        raise GatescopeError(f"empty input: {path} has a header but no rows")
    if offsets[-1] != len(values):
        offsets.append(len(values))
    array = np.asarray(values, dtype=np.float32)  # (N, F)
    _check_finite(array, path)
    return Corpus(array, np.asarray(offsets, np.int64),
                  f"{path} ({len(offsets) - 1} sequences, {len(values)} rows x {width} features)")


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _check_finite(array: np.ndarray, path: Path) -> None:
    """Inputs must be finite: a NaN input makes every later gate NaN."""
    bad = np.argwhere(~np.isfinite(array))
    if bad.size:
        row, column = bad[0]
        raise GatescopeError(f"--input {path}: row {row} feature {column} is {array[row, column]} "
                             f"({len(bad)} values are not finite numbers)")


# -- what a model is run on --------------------------------------------------------------------
def gather(
    model,
    texts: Sequence[str] = (),
    ids: Sequence[str] = (),
    files: Sequence[str | os.PathLike] = (),
    whole: bool = False,
    ids_files: Sequence[str | os.PathLike] = (),
    input_path: str | os.PathLike | None = None,
    strict: bool = False,
    keep_text: bool = False,
) -> Corpus | None:
    """The corpus the options give, in the order texts, ids, files, ids files (each tokenised once
    and checked against ``model``, a LoadedModel); None when no option gives any. ``whole``: each
    file is one sequence. ``keep_text``: keep each sequence's text (for features computed from it)."""
    if input_path is not None:
        if texts or ids or files or ids_files:
            raise GatescopeError("--input (float inputs) cannot be combined with --text, --ids, --file or --ids-file")
        corpus = read_float_inputs(input_path)
        check(model, corpus)
        return corpus
    if whole and not files:
        raise GatescopeError("--whole reads each --file as one sequence; give --file")
    if (texts or files or ids or ids_files) and not model.takes_ids:
        raise _floats_only(model, "text or token ids")  # before a vocabulary is asked for, which would not help
    parts = []
    if texts or files:
        tokenizer = Tokenizer(model.vocab, strict)
        parts += [from_texts(texts, tokenizer, keep_text)] if texts else []
        parts += [read_text_file(f, tokenizer, whole, keep_text) for f in files]
        tokenizer.report()
    size = model.num_ids if model.takes_ids else None
    parts += [from_ids(ids, size)] if ids else []
    parts += [read_ids_file(f, size) for f in ids_files]
    if not parts:
        return None
    if keep_text and (ids or ids_files):
        raise GatescopeError("features computed from the text need text input (--text, --file), not token ids")
    corpus = concatenate(parts)
    check(model, corpus)
    return corpus


def check(model, corpus: Corpus) -> None:
    """Raise GatescopeError unless ``model`` takes what ``corpus`` holds: ids in its vocabulary, or
    float inputs as wide as its input; the message gives both shapes."""
    if corpus.is_float and model.takes_ids:
        raise GatescopeError(f"this model takes token ids (it has {model.input_description()}); --input "
                             f"{corpus.description} gives float inputs: use --text, --file, --ids or --ids-file")
    if not corpus.is_float and not model.takes_ids:
        raise _floats_only(model, "token ids")
    if corpus.is_float and corpus.values.shape[1] != model.input_size:
        raise GatescopeError(f"--input {corpus.description} has {corpus.values.shape[1]} features a step; "
                             f"this model takes {model.input_size} ({model.input_description()})")


def _floats_only(model, given: str) -> GatescopeError:
    """The error for ``given`` input to ``model``, which has no embedding."""
    return GatescopeError(f"this model has no embedding and takes float inputs [time, {model.input_size}] "
                          f"(--input .safetensors, .npy, .csv or .tsv), not {given}")
