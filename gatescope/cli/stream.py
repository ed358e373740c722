"""One pass of a model over a corpus: streamed analyses and sharded traces, on one or several processes.

`stream_analysis` runs MODEL over the corpus in batches and feeds each batch's recording to a
streaming analysis (gatescope.analysis.stream_analyses), keeping nothing else: memory is one
batch plus the accumulators, whatever the corpus's length. `write_sharded` writes the recording
as a sharded trace folder (gatescope.shardfile), one shard at a time. Under torchrun both split
the work over the processes (gatescope.distributed): rank r runs batches (or shards) r, r + K, ...;
the statistics are summed over the ranks, and rank 0 writes. A progress bar on stderr shows tokens
and tokens per second (of all ranks: rank 0 counts the batches of the others as it passes them).
"""
from __future__ import annotations

import dataclasses
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

from gatescope.distributed import World, all_ok, all_reduce_sum, broadcast, join, leave
from gatescope.errors import GatescopeError


@contextmanager
def token_progress(total: int, description: str, enabled: bool) -> Iterator[Callable[[int], None]]:
    """A rich bar on stderr over ``total`` tokens with tokens/s; yields ``advance(tokens)``."""
    from rich.console import Console
    from rich.progress import BarColumn, Progress, ProgressColumn, TextColumn, TimeRemainingColumn
    from rich.text import Text

    class Rate(ProgressColumn):
        def render(self, task) -> Text:
            return Text(f"{task.speed or 0:,.0f} tokens/s")

    columns = (TextColumn(description), BarColumn(), TextColumn("{task.completed:,.0f}/{task.total:,.0f} tokens"),
               Rate(), TimeRemainingColumn())
    with Progress(*columns, console=Console(stderr=True), disable=not enabled) as bar:
        task = bar.add_task(description, total=total)
        yield lambda tokens: bar.advance(task, tokens)


def _corpus_batches(model, inputs, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor | None, int]]:
    """(padded batch, lengths or None, tokens) of the corpus (a gatescope.corpus.Corpus), as `gatescope trace`
    batches it (the one place this module reads input)."""
    has_cells = any(info["cell"].endswith("Cell") for info in model.modules_info)
    for x, lengths in inputs.batches(batch_size, equal_lengths=has_cells):
        yield x, lengths, x.shape[0] * x.shape[1] if lengths is None else int(lengths.sum())


def _run(model, x: torch.Tensor, lengths: torch.Tensor | None, options):
    with torch.no_grad(), options.record(model) as rec:
        model(x.to(next(model.parameters()).device), lengths)
    return rec.trace


def recorded_widths(model, inputs, options) -> dict[str, int]:
    """Quantity name -> units, as ``options`` record them (one sequence run to find out)."""
    part = _run(model, inputs.sequence(0)[None], None, options)
    return {name: int(part[name].shape[1]) for name in part.names}


def open_corpus(model_path, file: str, device: str, distributed: bool, options=None):
    """(World, model on this rank's device, the corpus read once, token count); the caller calls `leave`.
    A model that cannot run, or ``options`` selecting nothing it records, is refused before any work."""
    from gatescope import corpus as corpora
    from gatescope.checkpoint import load
    from gatescope.cli.trace import check_selection

    world = join(distributed, device)
    model = load(model_path, device=world.device(device))
    model.check_runnable()
    if options is not None:
        check_selection(model, options.modules, options.kinds)
    inputs = corpora.gather(model, files=[file])
    return world, model, inputs, inputs.num_tokens


def stream_analysis(world: World, model, inputs, tokens: int, analysis, options, description: str = "streaming"
                    ) -> None:
    """Feed every batch this rank owns to ``analysis`` (its ``update(quantities, start_row)``), then sum
    the accumulators over the ranks: on return every rank holds the whole corpus's statistics."""
    error: GatescopeError | None = None
    try:
        row = 0
        with token_progress(tokens, description, options.progress and world.main) as advance:
            for k, (x, lengths, n) in enumerate(_corpus_batches(model, inputs, options.batch_size)):
                if world.owns(k):
                    part = _run(model, x, lengths, options)
                    # statistics are kept on the CPU: a batch recorded on a GPU comes over once
                    analysis.update({name: part[name].to("cpu") for name in part.names}, row)
                row += n
                advance(n)
    except GatescopeError as exc:
        error = exc
    if not all_ok(world, error is None):
        raise error or GatescopeError("another process of the run failed (its message is above)")
    all_reduce_sum(world, [t for acc in analysis.accumulators() for t in acc.state.values()])


def write_sharded(world: World, output: Path, model, inputs, options, shard_tokens: int) -> tuple[int, int, int, int]:
    """Trace the corpus into the sharded trace folder ``output``; rank r writes shards r, r + K, ...
    -> (sequences, tokens, quantities, shards). Written as a set: nothing is left on an error."""
    from gatescope.cli.trace import write_inputs
    from gatescope.shardfile import new_folder, plan_shards, publish, shard_name, write_index

    lengths = inputs.lengths.tolist()
    plan = plan_shards(lengths, shard_tokens)
    made: tuple[str, str] | None = None
    if world.main:  # one rank makes the folder; a refusal reaches every rank, so none waits for it
        try:
            made = ("ok", str(new_folder(output)))
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
    if world.main:
        if not ok:
            shutil.rmtree(tmp, ignore_errors=True)
        else:
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
    from gatescope.cli.trace import counted

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


def corpus_labels(labels_file: str, tokens: int):
    """Labels for the corpus from a labels file: one value per token, in corpus order."""
    from gatescope.analysis.labels import make_labels, read_labels_file

    values = read_labels_file(labels_file)
    if len(values) != tokens:
        raise GatescopeError(f"{Path(labels_file).name} has {len(values)} values; the corpus has {tokens} tokens "
                             f"(one label a token, in the corpus's order)")
    return make_labels(torch.as_tensor(values), name=Path(labels_file).name)


def _streamed(model_path, file: str, run, device: str, distributed: bool, make):
    """Open the corpus, build the analysis with ``make(widths of everything recorded, tokens)``, record only
    the kinds it reads, stream; -> (the analysis, summed over the ranks, or None off rank 0; tokens)."""
    world, model, inputs, tokens = open_corpus(model_path, file, device, distributed)
    try:
        widths = recorded_widths(model, inputs, run)
        analysis = make(widths, tokens)
        stream_analysis(world, model, inputs, tokens, analysis, dataclasses.replace(run, kinds=analysis.kinds()))
    finally:
        leave(world)
    return (analysis if world.main else None), tokens


def stream_units(model_path, file: str, labels_file: str, *, kinds, metric: str, grid_bins: int, run, device: str,
                 distributed: bool):
    """`analyze units MODEL --file CORPUS --labels FILE`: the ranking Table (None off rank 0)."""
    from gatescope.analysis.stream_analyses import StreamingRanking

    def make(widths, tokens):
        return StreamingRanking(widths, corpus_labels(labels_file, tokens), kinds=kinds, metric=metric,
                                grid_bins=grid_bins)

    analysis, _ = _streamed(model_path, file, run, device, distributed, make)
    return None if analysis is None else analysis.result()


def stream_saturation(model_path, file: str, *, kinds, low: float, high: float, run, device: str, distributed: bool):
    """`analyze saturation MODEL --file CORPUS`: (saturation Table, timescales Table or None), None off rank 0."""
    from gatescope.analysis.stream_analyses import StreamingSaturation

    analysis, _ = _streamed(model_path, file, run, device, distributed,
                            lambda widths, tokens: StreamingSaturation(widths, kinds=kinds, low=low, high=high))
    return None if analysis is None else (analysis.result(), analysis.timescales())


def stream_probes(model_path, file: str, labels_file: str, *, kinds, epochs: int, l1: float, l2: float, seed: int,
                  run, device: str, distributed: bool):
    """`analyze probe MODEL --file CORPUS --labels FILE`: one probe per quantity, epochs + 2 passes -> Table."""
    from gatescope.analysis.selection import heldout_from_offsets
    from gatescope.analysis.stream_analyses import StreamingProbes

    world, model, inputs, tokens = open_corpus(model_path, file, device, distributed)
    try:
        if world.size > 1:
            raise GatescopeError("probe training takes its Adam steps in corpus order, in one process: run "
                                 "analyze probe --file without torchrun")
        labels = corpus_labels(labels_file, tokens)
        held = heldout_from_offsets(torch.from_numpy(inputs.offsets))
        probes = StreamingProbes(recorded_widths(model, inputs, run), labels, held, kinds=kinds, epochs=epochs,
                                 l1=l1, l2=l2, seed=seed)
        run = dataclasses.replace(run, kinds=probes.kinds())
        passes = probes.passes()
        for i, phase in enumerate(passes, 1):
            probes.begin(phase)
            stream_analysis(world, model, inputs, tokens, probes, run, f"pass {i}/{len(passes)} ({phase})")
    finally:
        leave(world)
    return probes.result()
