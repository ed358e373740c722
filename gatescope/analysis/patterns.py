"""Pattern search: LSTMVis's select-and-match (Strobelt et al. 2018, "LSTMVis", IEEE TVCG).

A selection is a span of token rows and the units that are "on" (above a threshold, 0.3 as in
LSTMVis) at every step of it. `match` finds the other spans of the same length where the same
units are on, ranked by the number of (step, unit) cells that are on, i.e. by the Hamming
distance between the binarised window and the all-on selection (LSTMVis's ranking by matching
cells). The selected units are binarised once; window counts are differences of a cumulative sum,
so a match over a million tokens is one pass over the trace. Unlike LSTMVis's flat stream,
windows never cross a sequence boundary (LSTMVis #62), and the results do not overlap.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from gatescope.analysis import selection
from gatescope.analysis.selection import resolve_unit, width
from gatescope.analysis.table import Table
from gatescope.errors import GatescopeError
from gatescope.names import UnitName
from gatescope.trace import Trace

THRESHOLD = 0.3


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
        span = trace[name][start:stop].to(torch.float64)  # (L, H)
        units = torch.nonzero((span > threshold).all(0)).flatten().tolist()
        if not units:
            raise GatescopeError(f"no unit of {name} is above {threshold} over all of rows {start}:{stop}")
    else:
        units = [resolve_unit(trace, UnitName(name, int(u))).index for u in units]
        if not units:
            raise GatescopeError("select at least one unit")
    return Selection(name, tuple(units), start, stop, threshold)


def on_counts(trace: Trace, chosen: Selection) -> torch.Tensor:
    """Int64 [N]: how many of the selected units are on at each row (one pass over the trace)."""
    tensor, cols = trace[chosen.name], torch.tensor(chosen.units)
    chunk_rows = max(1, selection.BUDGET // tensor.shape[1])  # few, large reads: one op per chunk
    counts = torch.empty(tensor.shape[0], dtype=torch.int64)
    for a in range(0, tensor.shape[0], chunk_rows):
        block = tensor[a : a + chunk_rows].index_select(1, cols)  # (rows, k)
        counts[a : a + chunk_rows] = (block > chosen.threshold).to(torch.int32).sum(1)
    return counts


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
    cum = torch.zeros(n + 1, dtype=torch.int64)
    torch.cumsum(on_counts(trace, selection), 0, out=cum[1:])
    windows = cum[length:] - cum[:-length]  # (N-L+1,) on cells of the window starting at each row
    ok = torch.ones_like(windows, dtype=torch.bool)
    inner = trace.offsets[1:-1]  # windows starting within L-1 rows before a boundary cross it
    crossing = (inner[:, None] - torch.arange(1, length)[None, :]).flatten()
    ok[crossing[(crossing >= 0) & (crossing < ok.numel())]] = False
    if not include_self:
        ok[max(0, selection.start - length + 1) : selection.start + length] = False
    taken = torch.zeros(n, dtype=torch.bool)
    picked: list[int] = []
    ok &= windows > 0
    for value in torch.unique(windows[ok]).flip(0).tolist():  # best first, one score at a time
        for s in torch.nonzero(ok & (windows == value)).flatten().tolist():
            if not bool(taken[s : s + length].any()):
                picked.append(s)
                taken[s : s + length] = True
                if len(picked) == top:
                    break
        if len(picked) == top:
            break
    joiner = "" if trace.meta.get("tokenizer") == "char" else " "
    cells = length * k
    rows = []
    for rank, s in enumerate(picked, 1):
        sequence = trace.sequence_of(s)
        matched = int(windows[s])
        rows.append({
            "rank": rank, "start": s, "stop": s + length, "sequence": sequence,
            "position": s - int(trace.offsets[sequence]), "matched": matched, "cells": cells,
            "score": matched / cells, "distance": cells - matched,
            "text": joiner.join(trace.tokens(s, s + length)),
        })
    columns = ["rank", "start", "stop", "sequence", "position", "matched", "cells", "score", "distance", "text"]
    return Table(rows, columns)
