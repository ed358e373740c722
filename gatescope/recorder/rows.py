"""How recorded values become a trace's rows: every sequence's steps in order, sequence after sequence,
padding dropped (the row layout of docs/trace-format.md), in the storage dtype.

The engine hands a recording each quantity time-major, (T, B, H) as torch's recurrent kernels lay out
their outputs, or as T steps of a cell called in a loop, whose batch may shrink as sequences end (as in a
PackedSequence: its first rows still running, which `check_still_running` holds each step to). A trace
holds them as (N, H) rows; `to_rows` reorders and converts in as few passes over the values as torch's
operators allow, because a trace's time outside the kernel goes mostly to moving values through memory
(docs/guide/performance.md).
"""
from __future__ import annotations

import torch
from torch import Tensor

from gatescope.errors import GatescopeError


def pad_shrinking(steps: list[Tensor], what: str) -> tuple["list[Tensor] | Tensor", Tensor | None]:
    """Steps [(B_t, H)] with B_t never growing -> the steps themselves (equal batches) or a padded
    (T, B, H) tensor and each row's length."""
    sizes = [s.shape[0] for s in steps]
    if len(set(sizes)) == 1:
        return steps, None
    if any(b > a for a, b in zip(sizes, sizes[1:])):
        raise GatescopeError(
            f"{what}: the batch grew from one step to the next ({sizes}); record a cell whose batch only "
            "shrinks as sequences end (rows still running first), or one sequence at a time"
        )
    batch = torch.tensor(sizes)
    lengths = (batch.unsqueeze(0) > torch.arange(sizes[0]).unsqueeze(1)).sum(1)  # (B,)
    padded = steps[0].new_zeros(len(steps), sizes[0], steps[0].shape[1])
    for t, value in enumerate(steps):
        padded[t, : value.shape[0]] = value
    return padded, lengths


def check_still_running(path: str, step: int, last: Tensor | None, input: Tensor, hx) -> None:
    """Refuse a cell's step whose batch shrank other than by its last rows. `pad_shrinking` reads a shrinking
    batch as its first B_t rows still running (sequences sorted longest first, as in a PackedSequence), which
    holds when the state passed in (``hx``) is the first B_t rows of ``last``, the h the cell's previous step
    returned (None at a sequence's first step). Rows chosen otherwise (a mask over unsorted lengths) would
    glue one sequence's steps to another's."""
    rows = input.shape[0] if input.dim() == 2 else None
    if last is None or rows is None or last.dim() != 2 or rows >= last.shape[0]:
        return
    state = hx[0] if isinstance(hx, (tuple, list)) else hx  # an LSTMCell's (h, c); a GRUCell's h
    if state is not None and state.shape == last[:rows].shape:
        state, kept = state.detach(), last[:rows]
        if bool(((state == kept) | (state.isnan() & kept.isnan())).all()):
            return
    raise GatescopeError(
        f"{path}: at step {step} the batch shrank from {last.shape[0]} to {rows} rows, but the state passed in is not "
        f"the first {rows} rows of the step before: a cell's shrinking batch is read as its first rows still running "
        "(sequences sorted longest first, as in a PackedSequence), so sort them so, or record one sequence at a time"
    )


def joined(rows: list[Tensor]) -> Tensor:
    """The rows of every call, one after another (a single call's as they are: no copy)."""
    return rows[0] if len(rows) == 1 else torch.cat(rows)


def to_rows(by_sequence: Tensor, lengths: Tensor | None, dtype: torch.dtype | None = None) -> Tensor:
    """(B, T, H) values -> (sum of lengths, H) rows in ``dtype`` (default: the values' own), sequence by
    sequence, padding dropped; ``lengths`` None: every sequence has all T steps.

    The engine hands over time-major values, so ``by_sequence`` is most often the (B, T, H) view of a
    (T, B, H) whose rows lie at a fixed stride (contiguous, or a gate's columns of oneDNN's workspace): with
    every sequence whole, one copy both reorders the rows and converts them to the storage dtype;
    otherwise the rows are gathered from that memory as it lies, by their flat row numbers (2-4 times
    faster than a boolean mask over the strided view), after any narrowing conversion, so that the
    gather moves the narrower values."""
    batch, steps, width = by_sequence.shape
    dtype = dtype or by_sequence.dtype
    if lengths is None or bool((lengths == steps).all()):
        if by_sequence.is_contiguous() and dtype == by_sequence.dtype:
            return by_sequence.view(batch * steps, width)  # explicit: B may be 0
        rows = torch.empty((batch, steps, width), dtype=dtype, device=by_sequence.device)
        return rows.copy_(by_sequence).view(batch * steps, width)
    valid = torch.arange(steps, device=lengths.device) < lengths.unsqueeze(1)  # (B, T), row order b then t
    b, t = valid.to(by_sequence.device).nonzero(as_tuple=True)  # (rows,) each, b then t
    if by_sequence.is_contiguous():  # rows already in sequence order (a cell's stacked steps)
        flat, index = by_sequence.view(batch * steps, width), b * steps + t
    else:  # time-major memory, (T * B, H) rows at a fixed stride: a view (a copy for any other layout)
        flat, index = by_sequence.transpose(0, 1).flatten(0, 1), t * batch + b
    if dtype.itemsize < flat.dtype.itemsize:
        flat = flat.to(dtype)
    return flat.index_select(0, index).to(dtype)  # (rows, H)
