"""Which parts of a trace an analysis reads: quantities by kind, units by name, rows in chunks.

Traces loaded from disk are memory-mapped; these helpers read them in row chunks so that an
analysis never needs a whole trace in memory, only the column block it works on.
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator

import torch

from gatescope.errors import GatescopeError
from gatescope.kinds import ALL_KINDS, kinds_by_cell
from gatescope.names import UnitName, check_unit_indices, format_unit, parse_name, parse_unit
from gatescope.traces.trace import Trace

CHUNK_ROWS = 65536  # rows read from a trace at once (read at call time: tests make it small)
BUDGET = 1 << 24  # elements of a working block (float64: 128 MiB)


def parse_kinds(kinds: str | Iterable[str] | None) -> tuple[str, ...] | None:
    """``"h,c,f"`` or ``["h", "c"]`` -> ("h", "c", ...); None = all kinds."""
    if kinds is None:
        return None
    if isinstance(kinds, str):
        kinds = [k for k in kinds.replace(" ", "").split(",") if k]
    kinds = tuple(kinds)
    unknown = [k for k in kinds if k not in ALL_KINDS]
    if unknown or not kinds:
        raise GatescopeError(f"unknown kind(s) {', '.join(unknown) or '(none)'}: {kinds_by_cell()}")
    return kinds


def select_quantities(trace: Trace, kinds: str | Iterable[str] | None = None) -> list[str]:
    """The trace's quantity names of the given kinds (all by default), in trace order."""
    wanted = parse_kinds(kinds)
    names = [n for n in trace.names if wanted is None or parse_name(n).kind in wanted]
    if not names:
        have = sorted({parse_name(n).kind for n in trace.names})
        raise GatescopeError(
            f"the trace has no quantity of kind {','.join(wanted or ())}; it holds kinds {','.join(have) or 'none'}"
        )
    return names


def width(trace: Trace, name: str) -> int:
    """Number of units of quantity ``name``."""
    return int(trace[name].shape[1])


def unit_row(name: str, index: int) -> dict[str, str | int]:
    """The columns that name a unit in every analysis table: unit, name, layer, direction, kind, index."""
    qn = parse_name(name)
    return {"unit": format_unit(name, index), "name": name, "layer": qn.layer,
            "direction": qn.direction, "kind": qn.kind, "index": index}


def resolve_unit(trace: Trace, unit: str | UnitName) -> UnitName:
    """Check a unit name (``rnn.l0.fwd.h:3``) against ``trace``; unknown ones raise GatescopeError."""
    parsed = parse_unit(unit) if isinstance(unit, str) else unit
    if parsed.name not in trace.names:
        raise GatescopeError(f"unknown unit {unit}: the trace has no quantity {parsed.name}")
    check_unit_indices(parsed.name, [parsed.index], width(trace, parsed.name), where=f"unknown unit {unit}: ")
    return parsed


def iter_rows(trace: Trace, name: str, chunk_rows: int | None = None) -> Iterator[tuple[int, torch.Tensor]]:
    """(start row, float64 block [rows, H]) over the whole quantity, ``chunk_rows`` at a time."""
    tensor = trace[name]
    chunk_rows = chunk_rows or CHUNK_ROWS
    for start in range(0, tensor.shape[0], chunk_rows):
        yield start, tensor[start : start + chunk_rows].to(torch.float64)


def read_columns(
    trace: Trace, name: str, columns: slice, rows: torch.Tensor | None = None, chunk_rows: int | None = None
) -> torch.Tensor:
    """float64 [n, len(columns)]: the given columns of ``name``, only the rows where ``rows`` (bool [N]) holds."""
    tensor = trace[name]
    chunk_rows = chunk_rows or CHUNK_ROWS
    parts = []
    for start in range(0, tensor.shape[0], chunk_rows):
        block = tensor[start : start + chunk_rows, columns].to(torch.float64)
        parts.append(block if rows is None else block[rows[start : start + chunk_rows]])
    return torch.cat(parts) if parts else torch.empty(0, 0, dtype=torch.float64)


def column_blocks(num_rows: int, num_columns: int, budget: int | None = None) -> Iterator[slice]:
    """Column slices small enough that a [num_rows, block] float64 array fits the working budget."""
    budget = budget or BUDGET
    step = max(1, min(num_columns, budget // max(1, num_rows)))
    for start in range(0, num_columns, step):
        yield slice(start, min(num_columns, start + step))


def heldout_rows(trace: Trace, fraction: float = 0.2) -> torch.Tensor:
    """Bool [N]: rows held out for evaluation, whole sequences at a time (every 1/fraction-th).

    Splitting by sequence keeps a sentence's tokens on one side; a trace with fewer than
    1/fraction sequences holds out its last ``fraction`` of rows instead.
    """
    return heldout_from_offsets(trace.offsets, fraction)


def heldout_from_offsets(offsets: torch.Tensor, fraction: float = 0.2) -> torch.Tensor:
    """`heldout_rows` of a corpus whose sequences start at ``offsets`` [S+1] (no trace needed)."""
    n, s = int(offsets[-1]), offsets.numel() - 1
    every = max(2, round(1 / fraction))
    held = torch.zeros(n, dtype=torch.bool)
    if s >= every:
        lengths = offsets.diff()
        seq_held = (torch.arange(s) % every) == every - 1
        held = torch.repeat_interleave(seq_held, lengths)
    else:
        held[n - max(1, int(n * fraction)) :] = True
    return held
