"""The doors of the text and array files the analyses read: agreement stimuli and per-token labels.

Stimuli (the TSV of gatescope.analysis.agreement, after Linzen et al. 2016): UTF-8, one item a
line, ``prefix<TAB>correct verb<TAB>wrong verb<TAB>condition``, then optionally columns of the user's own
(every line the same number), named by a first line ``prefix<TAB>correct<TAB>wrong<TAB>condition<TAB>NAME...``
(a file without that header has the four fields only); blank lines are skipped; the prefix and condition
are not empty, each verb is one word, the two verbs differ; at least one item.

Labels (gatescope.analysis.labels), one value per token: a ``.npy`` array (never unpickled: its
header is read within `MAX_NPY_HEADER_BYTES`, its dtype must be boolean, integer or floating
point, its shape 1-D and its data inside the file) or a text file, one value a line: numbers
(``nan`` or an empty line = not applicable) or words (each distinct word a category). Values are
finite or NaN; complex numbers are refused (in a .npy or written as ``1+2j``), as is infinity.

JSON documents (`read_json`, e.g. the browser's ``--ranking`` file, a ``--vocab`` list, a sharded trace's
index): a regular file of at most a given size, UTF-8, parsed with the guards of a safetensors header (no
duplicate keys, nesting at most gatescope.validation.limits.MAX_JSON_DEPTH deep, no integer beyond Python's int-string limit); what
the document must hold is its reader's.

Text is read a bounded line at a time through gatescope.files, which refuses FIFOs and devices.
"""
from __future__ import annotations

import math
import os
from array import array
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from gatescope.errors import GatescopeError, shown
from gatescope.files import file_size, open_regular, read_limited, text_lines
from gatescope.validation.limits import MAX_NPY_HEADER_BYTES
from gatescope.validation.safetensors import parse_json

Stimulus = tuple[str, str, str, str, tuple[tuple[str, str], ...]]
"""prefix, correct verb, wrong verb, condition, and the user's columns as (name, value) pairs."""
STIMULI_HEADER = ("prefix", "correct", "wrong", "condition")


def read_stimuli_rows(path: str | os.PathLike) -> list[Stimulus]:
    """The items of a stimuli TSV file, each line checked; any problem is one line naming file:line."""
    items: list[Stimulus] = []
    names: tuple[str, ...] | None = None
    for number, line in text_lines(path, "stimuli file"):
        if not line.strip():
            continue
        fields = [field.strip() for field in line.split("\t")]
        if names is None and tuple(f.lower() for f in fields[:4]) == STIMULI_HEADER:
            names = tuple(fields[4:])
            if len(set(names)) != len(names) or not all(names):
                raise GatescopeError(f"{path}:{number}: the header's column names must be distinct and not empty")
            continue
        names = () if names is None else names
        if len(fields) != 4 + len(names):
            further = "".join(", " + n for n in names) or "; further columns need a header line naming them"
            raise GatescopeError(f"{path}:{number}: expected {4 + len(names)} tab-separated fields "
                                 f"(prefix, correct verb, wrong verb, condition{further}), found {len(fields)}")
        prefix, correct, wrong, condition = fields[:4]
        if not prefix or not condition:
            raise GatescopeError(f"{path}:{number}: the prefix and the condition must not be empty")
        for verb in (correct, wrong):
            if len(verb.split()) != 1:
                raise GatescopeError(f"{path}:{number}: a verb must be one word, found {shown(verb)}")
        if correct == wrong:
            raise GatescopeError(f"{path}:{number}: the correct and the wrong verb are both {shown(correct)}")
        items.append((prefix, correct, wrong, condition, tuple(zip(names, fields[4:]))))
    if not items:
        raise GatescopeError(f"{path}: the stimuli file has no items")
    return items


def read_json(path: str | os.PathLike, what: str, limit: int, expected: str) -> Any:
    """The JSON document in file ``path`` (a ``what`` of at most ``limit`` bytes); ``expected`` says what it
    should be, for the message when it is not JSON."""
    return parse_json(read_limited(path, what, limit), str(path), f"is not JSON; expected {expected}")


MAX_CLASSES = 32  # more distinct integer values than this: the labels are continuous


def label_kind(distinct: np.ndarray) -> str:
    """The kind of a label from its distinct finite values: ``binary`` (two values), ``categorical`` (three to
    `MAX_CLASSES` integers) or ``continuous``: the one decision the analyses and the browser's tracks share."""
    distinct = np.asarray(distinct, dtype=np.float64)
    if distinct.size == 2:
        return "binary"
    if distinct.size <= MAX_CLASSES and bool(np.all(distinct == np.round(distinct))):
        return "categorical"
    return "continuous"


def label_values(values: np.ndarray, name: str) -> np.ndarray:
    """Labels as float64 [N]: refused unless 1-D, real and finite or NaN."""
    array = np.asarray(values)
    if array.dtype.kind == "c":
        raise GatescopeError(f"{name}: labels must be real numbers; got complex values")
    if array.dtype.kind not in "biuf":
        try:
            array = array.astype(np.float64)
        except (TypeError, ValueError):
            raise GatescopeError(f"{name}: labels must be numbers (NaN = not applicable)") from None
    if array.ndim != 1:
        raise GatescopeError(f"{name}: labels must be one value per token, a 1-D array; got shape {array.shape}")
    array = array.astype(np.float64)
    if np.isinf(array).any():
        raise GatescopeError(f"{name}: labels must be finite numbers or NaN (not applicable); found infinity")
    return array


def read_labels(path: str | os.PathLike) -> np.ndarray:
    """The labels of a ``.npy`` or text file as float64 [N] (NaN = not applicable).

    A text file is read as numbers first, 8 bytes a line; at the first line that is not a number it is
    read again as words, each distinct word coded once.
    """
    path = Path(path)
    if path.suffix == ".npy":
        return label_values(_read_npy(path), str(path))
    numbers = array("d")
    try:
        for _, line in text_lines(path, "labels file"):
            text = line.strip()
            numbers.append(float(text) if text else math.nan)
    except ValueError:
        return label_values(_read_words(path), str(path))
    return label_values(np.frombuffer(numbers, dtype=np.float64), str(path))


def _read_words(path: Path) -> np.ndarray:
    """Each distinct word a category, coded in sorted order; empty lines and ``nan`` not applicable."""
    distinct: dict[str, int] = {}
    rows = array("q")
    for _, line in text_lines(path, "labels file"):
        rows.append(distinct.setdefault(line.strip(), len(distinct)))
    for text in distinct:
        if _is_complex(text):
            raise GatescopeError(
                f"{path}: labels must be real numbers or words; found the complex number {shown(text)}"
            )
    words = sorted(t for t in distinct if t and t.lower() != "nan")
    code = {w: i for i, w in enumerate(words)}
    table = np.array([code.get(t, np.nan) for t in distinct], dtype=np.float64)
    return table[np.frombuffer(rows, dtype=np.int64)]


def _is_complex(text: str) -> bool:
    """Whether ``text`` is a complex number that is not also a real one ("1+2j", "3j")."""
    try:
        float(text)
        return False
    except ValueError:
        pass
    try:
        complex(text)
        return True
    except ValueError:
        return False


def _read_npy(path: Path) -> np.ndarray:
    """A 1-D numeric .npy array, its header checked before its data is read."""
    return read_npy(path, "labels file", ndims=(1,))


def read_npy(path: str | os.PathLike, what: str, ndims: tuple[int, ...]) -> np.ndarray:
    """The numeric .npy array in ``path`` (a ``what``) of one of ``ndims`` dimensions, never unpickled: its
    header checked (`npy_header`) before its data is read."""
    path = Path(path)
    with open_regular(path, what) as f:
        shape, dtype, fortran = npy_header(f, path, what, ndims)
        count = math.prod(shape)
        data = np.frombuffer(f.read(count * dtype.itemsize), dtype=dtype, count=count)
    return data.reshape(shape, order="F" if fortran else "C")


def npy_header(f, path: Path, what: str = "labels file", ndims: tuple[int, ...] = (1,)
               ) -> tuple[tuple[int, ...], np.dtype, bool]:
    """(shape, dtype, Fortran order) of the numeric .npy array open in ``f``, left at its data: a .npy of
    another kind (an .npz, a pickle), of other than ``ndims`` dimensions, or claiming more values than the
    file holds is refused."""
    fmt = np.lib.format
    try:
        version = fmt.read_magic(f)
        if version not in ((1, 0), (2, 0), (3, 0)):
            raise ValueError(f"unknown .npy version {version}")
        read = fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0
        shape, fortran, dtype = read(f, max_header_size=MAX_NPY_HEADER_BYTES)
    except (ValueError, EOFError, SyntaxError, TypeError, OverflowError) as exc:
        raise GatescopeError(f"{path} is not a readable .npy array ({str(exc).splitlines()[0][:120]})") from None
    if dtype.hasobject or dtype.kind not in "biufc" or dtype.fields is not None:
        raise GatescopeError(f"{path} is not a readable .npy array of numbers (dtype {shown(str(dtype))})")
    if len(shape) not in ndims:
        dims = " or ".join(f"{n}-D" for n in ndims)
        raise GatescopeError(f"{path}: a {what} must be a {dims} numeric array; got shape {shape}")
    count = math.prod(shape)
    need = count * dtype.itemsize
    if need > file_size(f) - f.tell():
        raise GatescopeError(f"{path} is truncated: its header claims {count} values ({need} bytes)")
    return shape, dtype, fortran


# -- the same labels read a piece at a time (a streamed corpus: gatescope.analysis.streaming.labels) --------------
def map_npy_labels(path: str | os.PathLike) -> np.ndarray:
    """The labels of a .npy file as a read-only memory map [N] (pages read as they are used), checked as
    `read_labels` checks them except for infinity, which `label_values` finds in each piece read."""
    path = Path(path)
    with open_regular(path, "labels file") as f:
        shape, dtype, _ = npy_header(f, path)
        offset = f.tell()
    if dtype.kind == "c":
        raise GatescopeError(f"{path}: labels must be real numbers; got complex values")
    return np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=shape) if shape[0] else np.zeros(0, dtype)


def text_label_words(path: str | os.PathLike) -> dict[str, float] | None:
    """One bounded pass over a text labels file: None when every line is a number (or empty), else the
    code of each distinct line, as `read_labels` codes words (sorted; empty and ``nan`` not applicable).
    Only the distinct words are held."""
    path = Path(path)
    try:
        for _, line in text_lines(path, "labels file"):
            text = line.strip()
            float(text) if text else None
        return None
    except ValueError:  # read again as words, as read_labels does
        pass
    distinct = dict.fromkeys(line.strip() for _, line in text_lines(path, "labels file"))
    complex_ = next((t for t in distinct if _is_complex(t)), None)
    if complex_ is not None:
        raise GatescopeError(f"{path}: labels must be real numbers or words; found the complex number "
                             f"{shown(complex_)}")
    words = sorted(t for t in distinct if t and t.lower() != "nan")
    code = {w: float(i) for i, w in enumerate(words)}
    return {t: code.get(t, math.nan) for t in distinct}


def text_label_values(path: str | os.PathLike, words: dict[str, float] | None) -> Iterator[float]:
    """The values of a text labels file one line at a time, as `read_labels` gives them; ``words`` from
    `text_label_words` (None: numbers)."""
    for _, line in text_lines(path, "labels file"):
        text = line.strip()
        yield (float(text) if text else math.nan) if words is None else words.get(text, math.nan)
