"""Pattern search: LSTMVis's select-and-match (Strobelt et al. 2018, "LSTMVis", IEEE TVCG).

A selection is a span of token rows and the units that are "on" (above a threshold) at every step
of it. LSTMVis's default threshold is 0.3 on tanh-range states; on a sigmoid gate (0..1) 0.3 is
nearly always exceeded, so `default_threshold` gives 0.5 there. `match` finds the other spans of
the same length where the same units are on, ranked by the number of (step, unit) cells that are
on, i.e. by the Hamming distance between the binarised window and the all-on selection (LSTMVis's
ranking by matching cells). The selected units are binarised once; window counts are differences of
a cumulative sum, so a match over a million tokens is one pass over the trace. Unlike LSTMVis's
flat stream, windows never cross a sequence boundary (LSTMVis #62), and the results do not overlap.

The matching itself (`units_on`, `count_on`, `best_spans`) works on numpy arrays, so the trace
browser, which reads a trace file without torch, ranks with exactly this code; `select` and
`match` apply it to a `Trace`.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from gatescope.analysis import selection
from gatescope.analysis.selection import width
from gatescope.analysis.table import Table
from gatescope.errors import GatescopeError
from gatescope.kinds import KINDS
from gatescope.names import check_unit_indices
from gatescope.traces.trace import Trace

THRESHOLD = 0.3  # LSTMVis's default, on tanh-range values
GATE_THRESHOLD = 0.5  # on a sigmoid gate's 0..1


def default_threshold(kind: str) -> float:
    """The threshold a unit of ``kind`` is "on" above by default: 0.5 for a sigmoid gate, else 0.3."""
    return GATE_THRESHOLD if KINDS[kind].is_gate else THRESHOLD


@dataclass(frozen=True)
class Selection:
    """Units of quantity ``name`` that are on over rows ``start:stop`` of a trace."""

    name: str
    units: tuple[int, ...]
    start: int
    stop: int
    threshold: float = THRESHOLD

    @property
    def length(self) -> int:
        return self.stop - self.start


@dataclass(frozen=True)
class Spans:
    """The best spans of a match: first rows and on cells, best first, and how many were ranked."""

    starts: np.ndarray  # (K,) int64, first row of each span
    matched: np.ndarray  # (K,) int64, on (step, unit) cells in each span
    candidates: int  # windows ranked: inside one sequence, apart from the selection, some cell on


def units_on(span: np.ndarray, threshold: float) -> np.ndarray:
    """The units on over a whole span: indices of the columns of ``span`` (L, H) above ``threshold`` in every row."""
    with np.errstate(invalid="ignore"):  # NaN is never on
        return np.flatnonzero((np.asarray(span) > threshold).all(0))


def count_on(
    read: Callable[[int, int], np.ndarray],
    num_rows: int,
    threshold: float,
    chunk_rows: int,
    cancelled: Callable[[float], bool] | None = None,
) -> np.ndarray | None:
    """How many selected units are on at each row: (N,) int64, from ``read(a, b)`` -> (b-a, k) values.

    Rows are read ``chunk_rows`` at a time; ``cancelled(fraction done)`` returning True stops it (None back).
    """
    counts = np.empty(num_rows, dtype=np.int64)
    for a in range(0, num_rows, chunk_rows):
        if cancelled is not None and cancelled(a / num_rows):
            return None
        block = read(a, min(a + chunk_rows, num_rows))  # (rows, k)
        with np.errstate(invalid="ignore"):
            counts[a : a + chunk_rows] = (block > threshold).sum(1)
    return counts


def best_spans(
    counts: np.ndarray, offsets: np.ndarray, start: int, length: int, top: int, include_self: bool = False
) -> Spans:
    """The ``top`` non-overlapping windows of ``length`` rows with the most on cells, best first.

    counts (N,): on units per row (`count_on`); offsets (S+1,): sequence boundaries, which no window
    crosses; the window starting at ``start`` and those overlapping it are left out unless ``include_self``.
    Equal scores go in row order.
    """
    n = len(counts)
    cum = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(counts, out=cum[1:])
    windows = cum[length:] - cum[:-length]  # (N-L+1,) on cells of the window starting at each row
    ok = windows > 0
    inner = np.asarray(offsets)[1:-1]  # windows starting within L-1 rows before a boundary cross it
    crossing = (inner[:, None] - np.arange(1, length)[None, :]).ravel()
    ok[crossing[(crossing >= 0) & (crossing < ok.size)]] = False
    if not include_self:
        ok[max(0, start - length + 1) : start + length] = False
    candidates = np.flatnonzero(ok)
    order = candidates[np.argsort(-windows[candidates], kind="stable")]  # best first, then by row
    taken = np.zeros(n, dtype=bool)
    picked: list[int] = []
    for s in order.tolist():
        if not taken[s : s + length].any():
            picked.append(s)
            taken[s : s + length] = True
            if len(picked) == top:
                break
    starts = np.array(picked, dtype=np.int64)
    return Spans(starts, windows[starts], int(candidates.size))


def select(
    trace: Trace,
    name: str,
    start: int,
    stop: int,
    threshold: float = THRESHOLD,
    units: list[int] | None = None,
) -> Selection:
    """Select rows ``start:stop`` (within one sequence) and the units of ``name`` on over all of them.

    units: use these unit indices instead of those found on (they need not be on).
    """
    width(trace, name)  # an unknown quantity: the trace's own error, which lists the quantities it has
    if not 0 <= start < stop <= trace.num_tokens:
        raise GatescopeError(f"span {start}:{stop} is not a non-empty span of the trace's {trace.num_tokens} rows")
    if trace.sequence_of(start) != trace.sequence_of(stop - 1):
        raise GatescopeError(f"span {start}:{stop} crosses a sequence boundary; select within one sequence")
    if units is None:
        units = units_on(trace[name][start:stop].to(torch.float64).numpy(), threshold).tolist()  # of (L, H)
        if not units:
            raise GatescopeError(f"no unit of {name} is above {threshold} over all of rows {start}:{stop}")
    else:
        if not units:
            raise GatescopeError("select at least one unit")
        check_unit_indices(name, units, width(trace, name))
    return Selection(name, tuple(units), start, stop, threshold)


def on_counts(trace: Trace, chosen: Selection) -> torch.Tensor:
    """Int64 [N]: how many of the selected units are on at each row (one pass over the trace)."""
    tensor, cols = trace[chosen.name], torch.tensor(chosen.units)
    chunk_rows = max(1, selection.BUDGET // tensor.shape[1])  # few, large reads: one op per chunk

    def read(a: int, b: int) -> np.ndarray:
        return tensor[a:b].index_select(1, cols).float().numpy()  # (rows, k)

    return torch.from_numpy(count_on(read, tensor.shape[0], chosen.threshold, chunk_rows))


def match(trace: Trace, selection: Selection, top: int = 20, include_self: bool = False) -> Table:
    """Spans of the selection's length where its units are on, best first, not overlapping.

    Rows: rank, start, stop (trace rows), sequence, position (of start in its sequence),
    matched (on cells in the window), cells (length x units), score = matched / cells,
    distance = cells - matched (Hamming distance to the selection), text (the span's tokens).
    """
    if top < 1:
        raise GatescopeError("top must be at least 1")
    length, k = selection.length, len(selection.units)
    n = trace.num_tokens
    if not selection.units or not 0 < length <= n:
        raise GatescopeError(f"the selection needs at least one unit and a span of 1 to {n} rows")
    if selection.name not in trace.names or max(selection.units) >= width(trace, selection.name):
        raise GatescopeError(f"the selection's units are not in this trace ({selection.name})")
    spans = best_spans(on_counts(trace, selection).numpy(), trace.offsets.numpy(), selection.start, length, top,
                       include_self)
    joiner = "" if trace.meta.get("tokenizer") == "char" else " "
    cells = length * k
    rows = []
    for rank, (s, matched) in enumerate(zip(spans.starts.tolist(), spans.matched.tolist()), 1):
        sequence = trace.sequence_of(s)
        rows.append({
            "rank": rank, "start": s, "stop": s + length, "sequence": sequence,
            "position": s - int(trace.offsets[sequence]), "matched": matched, "cells": cells,
            "score": matched / cells, "distance": cells - matched,
            "text": joiner.join(trace.tokens(s, s + length)),
        })
    columns = ["rank", "start", "stop", "sequence", "position", "matched", "cells", "score", "distance", "text"]
    return Table(rows, columns)
