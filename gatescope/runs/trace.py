"""Tracing a corpus through a loaded model: every gate of every step, in memory or straight into a trace file.

The corpus (gatescope.inputs.corpus) streams through the model in batches, a long sequence in chunks of
steps with its state carried (gatescope.runs.chunks); each chunk's recording goes straight to its place in
the trace file (gatescope.traces.file.TraceWriter), so memory stays bounded by one chunk of recorded values; the file keeps the input's order and is renamed into place only once complete
(gatescope.files.atomic_write). A selection of modules or kinds that matches nothing is an error naming what
the model has. `gatescope trace` and `gatescope inspect` run their inputs through here; so can a notebook.
"""
from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from gatescope.errors import GatescopeError
from gatescope.inputs.corpus import Corpus
from gatescope.kinds import KINDS, cell_type
from gatescope.progress import token_progress
from gatescope.runs import CHUNK_STEPS
from gatescope.runs.chunks import Chunk, batches, check_memory, chunked, placements, plan, run_batch
from gatescope.traces.trace import STORAGE_NAMES, storage_rows


DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def check_selection(model, modules: Sequence[str] | None, kinds: Sequence[str] | None) -> None:
    """Raise GatescopeError, naming what the model has, unless every module and kind selected is
    recorded: a module of the model's chain, a kind that at least one selected module computes."""
    have = {info["name"]: info for info in model.modules_info if info["name"] in model.recurrent_names}
    cells = {name: info["cell"] for name, info in have.items()}
    computed = {name: cell_type(info["cell"]).kinds_for(info["proj_size"]) for name, info in have.items()}
    unknown = [m for m in modules or () if m not in have]
    if unknown:
        raise GatescopeError(f"--modules {', '.join(unknown)}: no such recurrent module in the chain; "
                             f"the model has: {described(computed, cells)}")
    check_kinds(kinds, {name: computed[name] for name in modules or have}, cells)


def check_kinds(kinds: Sequence[str] | None, computed: Mapping[str, Sequence[str]], cells: Mapping[str, str],
                selected: str = "selected module") -> None:
    """Raise GatescopeError unless every kind of ``kinds`` is one gatescope knows and one that at least one
    module of ``computed`` (each selected module's name -> the kinds it computes) computes; the message
    names each of those modules with its cell (``cells``: module name -> cell name) and kinds.
    ``selected`` says what the modules are (``selected module``)."""
    bad = [k for k in kinds or () if k not in KINDS]
    if bad:
        raise GatescopeError(f"--kinds {', '.join(bad)}: unknown kind(s); {described(computed, cells)}")
    recorded = {k for names in computed.values() for k in names}
    missing = [k for k in kinds or () if k not in recorded]
    if missing:
        raise GatescopeError(f"--kinds {', '.join(missing)}: not computed by "
                             f"{'any ' if len(computed) > 1 else 'the '}{selected}; {described(computed, cells)}")


def described(computed: Mapping[str, Sequence[str]], cells: Mapping[str, str]) -> str:
    """``rnn (LSTM: i f g o c h), dec (GRU: r z n h)``: each module with its cell and the kinds it computes."""
    return ", ".join(f"{name} ({cells[name]}: {' '.join(kinds)})" for name, kinds in computed.items())


@dataclass(frozen=True)
class RunOptions:
    """How inputs are run and recorded: batch size, what to keep, storage dtype, extra metadata, and
    ``chunk_steps``: a longer sequence runs this many steps at a time, its state carried (0: whole)."""

    batch_size: int = 64
    modules: list[str] | None = None
    kinds: list[str] | None = None
    dtype: torch.dtype = torch.float32
    meta: dict | None = None
    progress: bool = True
    chunk_steps: int = CHUNK_STEPS

    def record(self, model):
        """A `gatescope.record` block over ``model`` with these options (by default, every module of
        the model's chain: a loaded module outside it is never run)."""
        from gatescope.recorder.recording import record

        modules = self.modules or getattr(model, "recurrent_names", None)
        return record(model, modules=modules, kinds=self.kinds, dtype=self.dtype, meta=self.meta)


def _chunks(model, corpus: Corpus, options: RunOptions) -> Iterator[tuple[np.ndarray, Chunk]]:
    """(sequence indices of the batch, one recorded chunk) over the whole corpus, after a memory check of
    the largest batch; a progress bar in tokens on stderr."""
    equal_lengths = any(info["cell"].endswith("Cell") for info in model.modules_info)
    chunk_steps = chunked(model, options.chunk_steps)
    lengths = corpus.lengths
    groups = plan(lengths, options.batch_size, equal_lengths)
    storage = torch.empty((), dtype=options.dtype).element_size()
    rec = options.record(model)
    for group in {(len(g), int(lengths[g].max())) for g in groups}:  # (batch, steps): refused before any run
        check_memory(model, rec.kept, storage, *group, chunk_steps)
    with token_progress(corpus.num_tokens, "tracing", options.progress) as advance, rec:
        for group, x, batch_lengths in batches(corpus, options, chunk_steps, equal_lengths):
            for chunk in run_batch(model, rec, x, batch_lengths, chunk_steps):
                yield group, chunk
                advance(int(chunk.lengths.sum()))


def record_inputs(model, corpus: Corpus, options: RunOptions = RunOptions()):
    """Run `corpus` through `model` batch by batch (a long sequence in chunks, its state carried) -> Trace
    (in memory, in the corpus's order), with the corpus's features attached."""
    from gatescope.traces.trace import Trace

    tensors: dict[str, torch.Tensor] = {}
    token_ids, meta = None, {}
    for group, chunk in _chunks(model, corpus, options):
        part = chunk.trace
        if not tensors:
            tensors = {name: part[name].new_empty((corpus.num_tokens, part[name].shape[1])) for name in part.names}
            token_ids = None if part.token_ids is None else torch.empty(corpus.num_tokens, dtype=torch.int64)
            meta = part.meta
        for first, stop, row in placements(group, chunk, corpus.offsets):
            for name in part.names:
                tensors[name][row:row + stop - first] = part[name][first:stop]
            if token_ids is not None:
                token_ids[row:row + stop - first] = part.token_ids[first:stop]
    trace = Trace(tensors, torch.from_numpy(corpus.offsets), token_ids=token_ids, meta=meta)
    for name, values in corpus.features.items():
        trace.add_feature(name, values)
    return trace


def write_inputs(path: str, model, corpus: Corpus, options: RunOptions = RunOptions()) -> tuple[int, int, int]:
    """Trace `corpus` straight into the trace file `path`, one chunk at a time, in bounded memory.

    Returns (sequences, tokens, quantities). The file's layout is fixed by the first chunk (names,
    widths) and by the corpus's offsets; the corpus's features are written with it.
    """
    from gatescope.traces.file import FEATURE_PREFIX, TraceWriter

    writer, written, widths = None, 0, {}
    try:
        for group, chunk in _chunks(model, corpus, options):
            part = chunk.trace
            if writer is None:
                widths = {name: part[name].shape[1] for name in part.names}
                writer = TraceWriter(path, widths, STORAGE_NAMES[options.dtype], corpus.offsets,
                                     part.token_ids is not None, part.meta, dict.fromkeys(corpus.features, "F32"))
                for name, values in corpus.features.items():
                    writer.write(FEATURE_PREFIX + name, 0, values.astype("<f4"))
            for first, stop, row in placements(group, chunk, corpus.offsets):
                for name in part.names:
                    writer.write(name, row, storage_rows(part[name][first:stop]))
                if part.token_ids is not None:
                    writer.write("token_ids", row, part.token_ids[first:stop].numpy())
            written += part.num_tokens
    finally:
        if writer is not None:
            writer.close()
    if written != corpus.num_tokens or not widths:
        raise GatescopeError(f"the trace would hold {written} of {corpus.num_tokens} tokens and {len(widths)} "
                             "quantities; nothing written")
    return corpus.num_sequences, written, len(widths)


def counted(n: int, noun: str) -> str:
    """``counted(1, "sequence") == "1 sequence"``, ``counted(2, "quantity") == "2 quantities"``."""
    if n == 1:
        return f"1 {noun}"
    return f"{n} {noun[:-1]}ies" if noun.endswith("y") else f"{n} {noun}s"
