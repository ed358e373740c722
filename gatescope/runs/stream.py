"""One pass of a model over a corpus: streamed analyses and sharded traces, on one or several processes.

`stream_analysis` runs MODEL over the corpus in batches and feeds each batch's recording to a
streaming analysis (gatescope.analysis.streaming.analyses), keeping nothing else. The corpus is a
`CorpusStream`: read a line at a time with its labels alongside (gatescope.analysis.streaming.labels:
``--labels``, ``--feature-from``, ``--code-features``), so memory is one batch plus the accumulators,
whatever the corpus's length. `write_sharded` writes the recording
as a sharded trace folder (gatescope.traces.file), one shard at a time. Under torchrun both split
the work over the processes (gatescope.runs.distributed): rank r runs batches (or shards) r, r + K, ...;
the statistics are summed over the ranks, and rank 0 writes. A progress bar on stderr shows tokens
and tokens per second (of all ranks: rank 0 counts the batches of the others as it passes them).
"""
from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from gatescope.analysis.streaming.analyses import Rows
from gatescope.errors import GatescopeError
from gatescope.progress import token_progress
from gatescope.runs.chunks import check_memory, chunked, run_batch
from gatescope.runs.distributed import World, all_ok, all_reduce_sum, broadcast, join, leave


class CorpusStream:
    """A text corpus, one sequence a non-blank line, read and tokenised a line at a time and never held,
    with a label source's values alongside (gatescope.analysis.streaming.labels). The first pass (`scan`)
    counts the tokens, checks that the labels line up and finds their scheme, before any model runs;
    every pass reads the file again. Memory: one batch, and the labels' distinct values."""

    def __init__(self, model, path: str, source=None, report: bool = True) -> None:
        """report: say the tokens outside the vocabulary (once, in the scan)."""
        from gatescope.inputs.corpus import check, from_sequences

        self.model, self.path, self.source = model, path, source
        self.sequences = self.tokens = self.types = self.longest = 0
        self.first: np.ndarray | None = None
        self.scheme = None
        self._scan(report)
        check(model, from_sequences([self.first], path))  # ids this model takes

    def lines(self, report: bool = False) -> Iterator[tuple[np.ndarray, np.ndarray | None]]:
        """(token ids [T], label values [T] or None) of each line, in order."""
        from gatescope.inputs.corpus import Tokenizer, tokenised_lines

        tokenizer = Tokenizer(self.model.vocab)
        reader = self.source.reader() if self.source is not None else None
        tokens = 0
        for where, line, ids in tokenised_lines(self.path, tokenizer):
            tokens += len(ids)
            yield ids, None if reader is None else reader.take(where, line, ids)
        if reader is not None:
            reader.close(tokens)
        if report:
            tokenizer.report()

    def _scan(self, report: bool) -> None:
        from gatescope.analysis.streaming.labels import LabelScan

        scan, pending, size = LabelScan(), [], 0
        for ids, values in self.lines(report):
            self.first = ids if self.first is None else self.first
            self.sequences += 1
            self.tokens += len(ids)
            self.longest = max(self.longest, len(ids))
            self.types = max(self.types, int(ids.max()) + 1)
            if values is not None:
                pending.append(values)
                size += values.size
                if size >= 1 << 16:  # counted a few thousand values at a time
                    scan.update(np.concatenate(pending))
                    pending, size = [], 0
        if self.first is None:
            raise GatescopeError(f"empty input: {self.path} has no non-blank lines")
        if self.source is not None:
            if pending:
                scan.update(np.concatenate(pending))
            self.scheme = scan.scheme(self.source.name)

    def batches(self, size: int, equal_lengths: bool, chunk_steps: int = 0
                ) -> Iterator[tuple[torch.Tensor, torch.Tensor | None, Rows]]:
        """(padded batch [B, T], lengths [B] or None, its Rows: start, label values, token ids, held out),
        batched as `gatescope trace` batches a corpus (`corpus.batch_groups`), in the corpus's order; a
        line longer than ``chunk_steps`` (not 0) is a batch of its own, to be run in chunks."""
        from gatescope.analysis.streaming.labels import heldout_sequences
        from gatescope.inputs.corpus import batch_groups, pad_batch

        held = heldout_sequences(self.sequences, self.tokens)
        row = sequence = 0
        for group in batch_groups(self.lines(), size, lambda line: len(line[0]), equal_lengths, chunk_steps):
            x, lengths = pad_batch([torch.from_numpy(ids) for ids, _ in group])
            out, first = [], row
            for ids, _ in group:
                out.append(held(sequence, row, len(ids)))
                sequence, row = sequence + 1, row + len(ids)
            values = None if self.source is None else torch.from_numpy(np.concatenate([v for _, v in group]))
            yield x, lengths, Rows(first, values, torch.from_numpy(np.concatenate([i for i, _ in group])),
                                   torch.from_numpy(np.concatenate(out)))


def recorded_widths(model, options) -> dict[str, int]:
    """Quantity name -> units, as ``options`` record them."""
    return options.record(model).kept


def open_corpus(model_path, file: str, device: str, distributed: bool, options=None):
    """(World, model on this rank's device, the corpus read once, token count); the caller calls `leave`.
    A model that cannot run, or ``options`` selecting nothing it records, is refused before any work."""
    from gatescope.inputs import corpus as corpora

    world, model = _open_model(model_path, device, distributed, options)
    inputs = corpora.gather(model, files=[file])
    return world, model, inputs, inputs.num_tokens


def _open_model(model_path, device: str, distributed: bool, options=None):
    from gatescope.checkpoints.loader import load
    from gatescope.runs.trace import check_selection

    world = join(distributed, device)
    model = load(model_path, device=world.device(device))
    model.check_runnable()
    if options is not None:
        check_selection(model, options.modules, options.kinds)
    return world, model


def _rows_from(rows: Rows, start: int, count: int) -> Rows:
    """``count`` of ``rows`` from its ``start``-th on (a chunk of a batch of one sequence)."""
    if start == 0 and count == rows.ids.numel():
        return rows
    cut = lambda t: None if t is None else t[start:start + count]  # noqa: E731
    return Rows(rows.start + start, cut(rows.values), cut(rows.ids), cut(rows.held))


def stream_analysis(world: World, model, stream: CorpusStream, analysis, options, description: str = "streaming"
                    ) -> None:
    """Feed every batch this rank owns to ``analysis`` (its ``update(quantities, rows)``), then sum
    the accumulators over the ranks: on return every rank holds the whole corpus's statistics."""
    error: GatescopeError | None = None
    has_cells = any(info["cell"].endswith("Cell") for info in model.modules_info)
    chunk_steps = chunked(model, options.chunk_steps)
    try:
        rec = options.record(model)
        check_memory(model, rec.kept, 4, min(options.batch_size, stream.sequences), stream.longest, chunk_steps)
        with token_progress(stream.tokens, description, options.progress and world.main) as advance, rec:
            batches = stream.batches(options.batch_size, has_cells, chunk_steps)
            for k, (x, lengths, rows) in enumerate(batches):
                if world.owns(k):  # a long line alone, in chunks: each chunk's rows follow the last's
                    for chunk in run_batch(model, rec, x, lengths, chunk_steps):
                        part = chunk.trace
                        # statistics are kept on the CPU: a batch recorded on a GPU comes over once
                        analysis.update({name: part[name].to("cpu") for name in part.names},
                                        _rows_from(rows, chunk.start, part.num_tokens))
                advance(rows.ids.numel())
    except GatescopeError as exc:
        error = exc
    if not all_ok(world, error is None):
        raise error or GatescopeError("another process of the run failed (its message is above)")
    all_reduce_sum(world, [t for acc in analysis.accumulators() for t in acc.state.values()])


def write_sharded(world: World, output: Path, model, inputs, options, shard_tokens: int) -> tuple[int, int, int, int]:
    """Trace the corpus into the sharded trace folder ``output``; rank r writes shards r, r + K, ...
    -> (sequences, tokens, quantities, shards). Written as a set (gatescope.folders): nothing is left on
    an error, Ctrl+C or SIGTERM, and what a killed run left is removed by the next."""
    from gatescope.folders import publish, temporary_folder
    from gatescope.runs.trace import write_inputs
    from gatescope.traces.file import check_destination, plan_shards, shard_name, write_index

    lengths = inputs.lengths.tolist()
    plan = plan_shards(lengths, shard_tokens)
    made: tuple[str, str] | None = None
    with contextlib.ExitStack() as held:  # rank 0 holds the temporary folder (and removes it unless published)
        if world.main:  # one rank makes the folder; a refusal reaches every rank, so none waits for it
            try:
                check_destination(output)
                made = ("ok", str(held.enter_context(temporary_folder(output))))
            except GatescopeError as exc:
                made = ("error", str(exc))
        status, value = broadcast(world, made)
        if status == "error":
            raise GatescopeError(value)
        tmp = Path(value)
        quiet = dataclasses.replace(options, progress=False)
        error: GatescopeError | None = None
        quantities = 0
        try:
            with token_progress(sum(lengths), "tracing", options.progress and world.main) as advance:
                for j, shard in enumerate(plan):
                    if world.owns(j):  # one shard's input at a time
                        counts = write_inputs(str(tmp / shard_name(j, len(plan))), model,
                                              inputs.part(shard.start, shard.stop), quiet)
                        quantities = counts[2]
                    advance(sum(lengths[s] for s in shard))
        except GatescopeError as exc:
            error = exc
        ok = all_ok(world, error is None)
        if world.main and ok:
            shards = [{"file": shard_name(j, len(plan)), "sequences": len(s), "tokens": sum(lengths[i] for i in s)}
                      for j, s in enumerate(plan)]
            write_index(tmp, shards, {"shard_tokens": shard_tokens})
            publish(tmp, output)
    if not ok:
        raise error or GatescopeError("another process of the run failed (its message is above)")
    return len(lengths), sum(lengths), quantities, len(plan)


def trace_sharded(model_path, output: Path, file: str, device: str, options, shard_tokens: int | None,
                  distributed: bool) -> str | None:
    """`gatescope trace --file ... --shard-tokens N -o DIR` (under torchrun or not) -> the summary, on rank 0."""
    from gatescope.runs.trace import counted

    if file is None:
        raise GatescopeError("a sharded trace is written from a corpus: give --file")
    if shard_tokens is None:
        raise GatescopeError("several processes write a sharded trace: give --shard-tokens N and a folder with -o")
    world, model, inputs, _ = open_corpus(model_path, file, device, distributed, options)
    try:
        options = dataclasses.replace(options, meta={**(options.meta or {}), "input": inputs.description})
        sequences, tokens, quantities, shards = write_sharded(world, output, model, inputs, options, shard_tokens)
    finally:
        leave(world)
    if not world.main:
        return None
    return (f"wrote {output}: {counted(shards, 'shard')}, {counted(sequences, 'sequence')}, "
            f"{counted(tokens, 'token')}, {counted(quantities, 'quantity')}")


@dataclass(frozen=True)
class LabelOptions:
    """The label source of a streamed command: exactly one of ``labels`` (a file), ``feature_from``
    (an agreement TSV) or ``code_features``; ``feature`` picks one of the latter two's features."""

    labels: str | None = None
    feature_from: str | None = None
    code_features: bool = False
    feature: str | None = None


def _streamed(model_path, file: str, run, device: str, distributed: bool, make, labels: LabelOptions | None = None):
    """Open the corpus (and its labels), build the analysis with ``make(widths of everything recorded,
    stream)``, record only the kinds it reads, stream; -> the analysis, summed over the ranks, or None
    off rank 0."""
    from gatescope.analysis.streaming.labels import label_source

    world, model = _open_model(model_path, device, distributed)
    try:
        source = None if labels is None else label_source(model, labels.labels, labels.feature_from,
                                                          labels.code_features, labels.feature)
        stream = CorpusStream(model, file, source, report=world.main)
        analysis = make(recorded_widths(model, run), stream)
        run = dataclasses.replace(run, kinds=analysis.kinds())
        passes = getattr(analysis, "passes", lambda: [None])()
        for i, phase in enumerate(passes, 1):
            if phase is not None:
                analysis.begin(phase)
            stream_analysis(world, model, stream, analysis, run,
                            "streaming" if phase is None else f"pass {i}/{len(passes)} ({phase})")
    finally:
        leave(world)
    return analysis if world.main else None


def stream_units(model_path, file: str, labels: LabelOptions, *, kinds, metric: str, grid_bins: int, run,
                 device: str, distributed: bool):
    """`analyze units MODEL --file CORPUS (--labels | --feature-from | --code-features)`: the ranking Table
    (None off rank 0)."""
    from gatescope.analysis.streaming.analyses import StreamingRanking

    def make(widths, stream):
        return StreamingRanking(widths, stream.scheme, kinds=kinds, metric=metric, grid_bins=grid_bins)

    analysis = _streamed(model_path, file, run, device, distributed, make, labels)
    return None if analysis is None else analysis.result()


def stream_saturation(model_path, file: str, *, kinds, low: float, high: float, run, device: str, distributed: bool):
    """`analyze saturation MODEL --file CORPUS`: (saturation Table, timescales Table or None), None off rank 0."""
    from gatescope.analysis.streaming.analyses import StreamingSaturation

    analysis = _streamed(model_path, file, run, device, distributed,
                         lambda widths, stream: StreamingSaturation(widths, kinds=kinds, low=low, high=high))
    return None if analysis is None else (analysis.result(), analysis.timescales())


def stream_probes(model_path, file: str, labels: LabelOptions, *, kinds, epochs: int, l1: float, l2: float,
                  seed: int, control: bool, run, device: str, distributed: bool):
    """`analyze probe MODEL --file CORPUS ...`: one probe per quantity (and one on the control task),
    epochs + 2 passes -> Table."""
    import os

    from gatescope.analysis.streaming.analyses import StreamingProbes

    if distributed or int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise GatescopeError("probe training takes its Adam steps in corpus order, in one process: run "
                             "analyze probe --file without torchrun")

    def make(widths, stream):
        return StreamingProbes(widths, stream.scheme, kinds=kinds, epochs=epochs, l1=l1, l2=l2, seed=seed,
                               control_types=stream.types if control else None)

    return _streamed(model_path, file, run, device, False, make, labels).result()
