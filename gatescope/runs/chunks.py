"""Long sequences in chunks of steps, the recurrent state carried exactly, in memory bounded by the chunk.

A recording holds every quantity of every step of a batch at once (float32 while it is computed), so a
whole file read as one sequence (``gatescope trace --file a.py --whole``), a book or a long time series
would need memory in proportion to batch x longest sequence x every quantity. Here a sequence longer than
``chunk_steps`` is run ``chunk_steps`` steps at a time (a batch of B such sequences ``chunk_steps // B`` steps
of each, so that a chunk always holds about ``chunk_steps`` rows): each chunk is one recorded call of the model from the
state the previous chunk left (`gatescope.checkpoints.chain.ChainState`: h, c, or whatever state each
module returns), and its quantities go to the file or the analysis before the next chunk runs. A
recurrent step depends only on its input and the state before it, so the values equal an unchunked run.

Batches (`plan`): the sequences are batched longest first, so that a batch pads little (a corpus of lines
of source, whose lengths vary tenfold, in corpus order would compute twice its tokens) and one long file
never pads short ones to its length; a chunked batch shrinks (as a PackedSequence does) when its shorter
sequences end: every chunk runs the sequences still going, a prefix of the batch. Each chunk's rows are
placed at their sequences' rows (`placements`), so the trace keeps the corpus's order.

A bidirectional layer reads its sequence from the end as well as from the start: its backward direction
at step t needs every later step, so no chunk can be run before the whole sequence is read. A model
with one runs every sequence whole; `check_memory` says in one line when that does not fit.

`check_memory` estimates a batch's (or chunk's) memory before anything runs, and refuses in one line,
naming the options that lower it, when the machine does not have it.
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from gatescope.checkpoints.chain import ChainState
from gatescope.errors import GatescopeError
from gatescope.inputs.corpus import batch_groups
from gatescope.runs import CHUNK_STEPS

if TYPE_CHECKING:
    from gatescope.recorder.recording import Recording

# float32 copies of a recorded quantity alive at once while a chunk is recorded: the engine's (T, B, H),
# its rows in sequence order, the storage dtype's copy and the gate pre-activations beside them
WORKING_COPIES = 4


def chunked(model, chunk_steps: int) -> int:
    """The chunk length for ``model``: ``chunk_steps``, or 0 (never chunk) for a model with a bidirectional
    layer, which must read each sequence whole, and when ``chunk_steps`` is 0."""
    bidirectional = any(info.get("bidirectional") for info in model.modules_info)
    return 0 if bidirectional else chunk_steps


def plan(lengths: Sequence[int], batch_size: int, equal_lengths: bool) -> list[list[int]]:
    """Groups of sequence indices, each one batch of ``batch_size`` at most: the sequences longest first (in
    corpus order among equals), so that a batch pads little. ``equal_lengths`` (a model that steps a cell)
    also ends a group where the length changes."""
    lengths = [int(n) for n in lengths]
    order = sorted(range(len(lengths)), key=lambda s: -lengths[s])  # stable: corpus order among equals
    return list(batch_groups(order, batch_size, lambda s: lengths[s], equal_lengths))


@dataclass(frozen=True)
class Chunk:
    """One recorded call: steps ``start`` onwards of the batch's first ``lengths.numel()`` sequences,
    ``lengths`` steps each; ``trace`` holds their rows, sequence after sequence."""

    start: int
    lengths: torch.Tensor  # (B',) int64, B' <= B: the sequences still running
    trace: object  # gatescope.traces.trace.Trace


def run_batch(model, rec: Recording, x: torch.Tensor, lengths: torch.Tensor | None, chunk_steps: int) -> Iterator[Chunk]:
    """Record ``model`` over the padded batch x [B, T(, F)] with ``lengths`` [B] (None: all T), inside the open
    recording ``rec`` (`RunOptions.record`, one block for the whole run); when T exceeds ``chunk_steps``
    (not 0), in chunks of ``chunk_steps`` rows (``chunk_steps // B`` steps of each sequence) with the state
    carried, the batch sorted longest first.

    Yields each chunk's recording before the next runs."""
    batch, steps = x.shape[:2]
    full = torch.full((batch,), steps, dtype=torch.int64) if lengths is None else lengths.cpu()
    if not chunk_steps or steps <= chunk_steps:
        yield Chunk(0, full, _record(model, rec, x, lengths, None))
        return
    if bool((full[1:] > full[:-1]).any()):
        raise ValueError("a chunked batch must be sorted longest first")
    state = ChainState()
    every = max(1, chunk_steps // batch)  # a chunk holds chunk_steps rows, whatever the batch
    for start in range(0, steps, every):
        active = int((full > start).sum())
        state.keep(active)
        part = (full[:active] - start).clamp(max=every)  # (B',)
        piece = x[:active, start:start + int(part.max())]
        given = None if bool((part == part[0]).all()) else part
        yield Chunk(start, part, _record(model, rec, piece, given, state))


def _record(model, rec: Recording, x: torch.Tensor, lengths: torch.Tensor | None, state: ChainState | None):
    device = next(model.parameters()).device
    with torch.no_grad():
        model(x.to(device), lengths, decode=False, state=state)
    return rec.take()


def batches(corpus, options, chunk_steps: int, equal_lengths: bool
            ) -> Iterator[tuple[np.ndarray, torch.Tensor, torch.Tensor | None]]:
    """(sequence indices, padded batch [B, T(, F)], lengths [B] or None) of `plan` over a corpus in memory."""
    for group in plan(corpus.lengths, options.batch_size, equal_lengths):
        x, lengths = corpus.padded(group)
        yield np.asarray(group), x, lengths


def placements(group: np.ndarray, chunk: Chunk, offsets: np.ndarray) -> list[tuple[int, int, int]]:
    """Where a chunk's rows go in the corpus: (first row in the chunk, past its last, first corpus row),
    one per run of sequences whose rows follow each other in the corpus too."""
    runs: list[tuple[int, int, int]] = []
    at = 0
    for s, n in zip(group[: chunk.lengths.numel()].tolist(), chunk.lengths.tolist()):
        row = int(offsets[s]) + chunk.start
        if runs and runs[-1][2] + runs[-1][1] - runs[-1][0] == row:
            runs[-1] = (runs[-1][0], at + n, runs[-1][2])
        else:
            runs.append((at, at + n, row))
        at += n
    return runs


def check_memory(model, widths: dict[str, int], storage_bytes: int, batch: int, steps: int, chunk_steps: int) -> None:
    """Raise GatescopeError, before anything runs, when recording ``batch`` sequences of ``steps`` steps (in
    chunks of ``chunk_steps``; 0: whole) would need more memory than the model's device has available.

    widths: recorded quantity -> units; storage_bytes: bytes of one stored value."""
    rows = min(batch * steps, chunk_steps) if chunk_steps and steps > chunk_steps else batch * steps
    need = estimate(model, widths, storage_bytes, rows)
    have = available_memory(next(model.parameters()).device)
    if have is None or need <= have:
        return
    if chunk_steps and steps > chunk_steps:
        lower = f"lower --chunk-steps (now {chunk_steps}) or --batch-size"
    elif chunk_steps:
        lower = "lower --batch-size"
    elif chunked(model, 1):
        lower = f"give --chunk-steps (e.g. {CHUNK_STEPS}: a longer sequence then runs in chunks) or lower --batch-size"
    else:
        lower = ("lower --batch-size (a bidirectional layer reads each sequence whole: its backward direction "
                 "needs every later step, so it is not run in chunks)")
    raise GatescopeError(f"recording {batch} sequence(s) x {steps:,} steps at once would need about "
                         f"{need / 2**30:.1f} GiB, and {have / 2**30:.1f} GiB is available: {lower}, "
                         "or record less (--kinds, --modules, --dtype float16)")


def estimate(model, widths: dict[str, int], storage_bytes: int, rows: int) -> int:
    """Bytes to record ``rows`` (sequence x step) of ``widths`` and run the model over them."""
    units = sum(widths.values())
    run = sum(4 * info["hidden_size"] * 4 * (2 if info.get("bidirectional") else 1) * info.get("num_layers", 1)
              for info in model.modules_info)  # a layer's gates (4H floats) while it runs
    return rows * (units * (4 * WORKING_COPIES + storage_bytes) + run)


def available_memory(device: torch.device) -> int | None:
    """Bytes the device can still allocate: the GPU's free memory, or the system's MemAvailable; None
    where it cannot be told."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None
