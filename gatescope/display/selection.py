"""What a display shows of a trace: the sequences and windows asked for, cut to a size a page can hold.

A trace may be a million-token corpus in one sequence, memory-mapped (gatescope.traces.trace.load_trace). A
display reads only the rows it draws: `spans` turns ``sequences=`` and ``window=`` into row ranges,
at most ``max_tokens`` rows in all, and says in one line (a note, printed on the figure) whatever it
had to leave out; `read` is the one place a display reads recorded values.
"""
from __future__ import annotations

import operator
from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

import numpy as np

from gatescope.errors import GatescopeError


class Span(NamedTuple):
    """Rows ``start:stop`` of the trace: positions ``first`` to ``first + stop - start - 1`` of ``sequence``."""

    sequence: int
    start: int
    stop: int
    first: int  # position of row `start` within its sequence

    @property
    def rows(self) -> range:
        return range(self.start, self.stop)


def read(trace: Any, name: str, start: int, stop: int, units: int | Sequence[int] | slice = slice(None)) -> np.ndarray:
    """Rows start:stop of some units of quantity ``name`` as float32: (stop-start,) for one unit, else (rows, U)."""
    rows = trace[name][start:stop]  # only these rows are read from a memory-mapped trace
    if not isinstance(units, (int, slice)):
        units = list(units)
    return rows[:, units].detach().float().cpu().numpy()


def as_sequences(sequences: int | Iterable[int] | None, num_sequences: int) -> list[int]:
    """``sequences=`` as a list of indices (negative count from the end); the first sequence by default."""
    if sequences is None:
        sequences = [0]
    elif _integer(sequences) is not None:
        sequences = [sequences]
    chosen = []
    for item in sequences:
        s = _integer(item)
        if s is None:
            raise GatescopeError(f"sequences: expected sequence numbers, got {item!r}")
        if not -num_sequences <= s < num_sequences:
            raise GatescopeError(f"no sequence {s}: the trace has {num_sequences} (0 to {num_sequences - 1})")
        chosen.append(s % num_sequences)
    if not chosen:
        raise GatescopeError("sequences: no sequence chosen")
    return chosen


def _integer(value: Any) -> int | None:
    """``value`` as an int if it is one (a Python, numpy or 0-d torch integer; not a bool), else None."""
    if isinstance(value, bool):
        return None
    try:
        return operator.index(value)
    except TypeError:
        return None


def spans(offsets: np.ndarray, sequences: list[int], window: tuple[int, int] | None,
          max_tokens: int) -> tuple[list[Span], list[str]]:
    """The rows to draw: ``window`` (start, stop positions, as a slice) of each sequence, at most ``max_tokens``
    rows in all; and a note for each thing left out."""
    if max_tokens < 1:
        raise GatescopeError(f"max_tokens must be at least 1, got {max_tokens}")
    if window is not None:
        window = tuple(window)
        if len(window) != 2 or not all(w is None or _integer(w) is not None for w in window):
            raise GatescopeError(f"window must be (start, stop) positions in the sequence, got {window!r}")
    out: list[Span] = []
    notes: list[str] = []
    budget = max_tokens
    for k, s in enumerate(sequences):
        begin, end = int(offsets[s]), int(offsets[s + 1])
        length = end - begin
        lo, hi, _ = slice(*window).indices(length) if window is not None else (0, length, 1)
        if hi <= lo:
            raise GatescopeError(f"window {tuple(window)} is empty in sequence {s}, which has {length} tokens")
        if budget == 0:
            notes.append(f"cut: {len(sequences) - k} of the {len(sequences)} sequences asked for are not shown "
                         f"(max_tokens={max_tokens} reached)")
            break
        stop = min(hi, lo + budget)
        if stop < hi:
            notes.append(f"cut: sequence {s} positions {lo}-{hi - 1} asked for; showing {lo}-{stop - 1} "
                         f"(max_tokens={max_tokens}; window=(start, stop) shows others)")
        out.append(Span(s, begin + lo, begin + stop, lo))
        budget -= stop - lo
    return out, notes


def describe(span: Span, length: int) -> str:
    """``sequence 3, positions 0-11 of 12``: a span for a caption."""
    return f"sequence {span.sequence}, positions {span.first}-{span.first + span.stop - span.start - 1} of {length}"
