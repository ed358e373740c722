"""`gatescope trace MODEL -o TRACE`: record every gate of a checkpoint over some input into a trace file.

Input is token ids (``--text`` tokenised with the model's vocabulary, ``--ids``, or ``--file``
with one sequence a line) or float vectors (``--input``, for models without an embedding).
A corpus streams through the model in batches, and each batch's recording goes straight to its
place in the trace file (gatescope.tracefile.TraceWriter), so memory stays bounded by one batch
whatever the corpus's length; the file keeps the input's order and is renamed into place only
once complete (gatescope.files.atomic_write). The input helpers here are shared with `inspect`.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import click
import numpy as np
import torch

from gatescope.errors import GatescopeError
from gatescope.files import atomic_write, check_regular, check_writable, reading, text_lines

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


@dataclass
class Inputs:
    """The sequences to run: how many, and a re-iterable source of 1-D ids or [T, input] floats."""

    count: int
    sequences: Callable[[], Iterator[torch.Tensor]]
    description: str


def parse_ids(text: str) -> torch.Tensor:
    """``"3 17 4"`` (spaces or commas) -> LongTensor [3]."""
    pieces = text.replace(",", " ").split()
    if not pieces:
        raise GatescopeError("empty input: --ids needs at least one token id")
    try:
        return torch.tensor([int(p) for p in pieces], dtype=torch.int64)
    except ValueError:
        raise GatescopeError(f"--ids {text!r} is not a list of integers") from None


def gather_inputs(
    model,
    texts: Iterable[str] = (),
    ids: Iterable[str] = (),
    file: str | None = None,
    input_path: str | None = None,
) -> Inputs | None:
    """The sequences the options give (texts, then ids, then the file's lines), validated up front;
    None when no option gives any."""
    texts, ids = list(texts), list(ids)
    if input_path is not None:
        if texts or ids or file:
            raise GatescopeError("--input (float vectors) cannot be combined with --text, --ids or --file")
        return _float_inputs(model, Path(input_path))
    given = [model.encode(t) for t in texts] + [parse_ids(i) for i in ids]
    for sequence in given:
        model.check_input(torch.as_tensor(sequence).unsqueeze(0))
    if file is None:
        if not given:
            return None
        return Inputs(len(given), lambda: (torch.as_tensor(s) for s in given), f"{len(given)} sequences")
    path = Path(file)
    count = sum(1 for _ in _file_sequences(model, path))  # every line checked before any work
    if count == 0:
        raise GatescopeError(f"empty input: {path} has no non-blank lines")

    def sequences() -> Iterator[torch.Tensor]:
        yield from (torch.as_tensor(s) for s in given)
        yield from _file_sequences(model, path)

    return Inputs(len(given) + count, sequences, f"{path}")


def _file_sequences(model, path: Path) -> Iterator[torch.Tensor]:
    """Token ids of each non-blank line of a text file, read lazily."""
    for number, line in text_lines(path, "text file"):  # bounded lines of a regular file
        if not line.strip():
            continue
        try:
            ids = torch.tensor(model.encode(line), dtype=torch.int64)
        except GatescopeError as exc:
            raise GatescopeError(f"{path} line {number}: {exc}") from None
        yield ids


def _float_inputs(model, path: Path) -> Inputs:
    """The one tensor of a safetensors file, [S, T, input_size] or [T, input_size], one sequence a row."""
    from safetensors import SafetensorError, safe_open

    if model.takes_ids:
        raise GatescopeError("this model takes token ids; use --text, --ids or --file")
    check_regular(path, "safetensors file")
    try:
        with reading(path, "safetensors file"), safe_open(path, framework="pt") as f:
            keys = list(f.keys())
            if len(keys) != 1:
                raise GatescopeError(f"--input {path} must hold exactly one tensor; it has {len(keys)}")
            x = f.get_tensor(keys[0])
    except SafetensorError as exc:
        raise GatescopeError(f"{path} is not a readable safetensors file ({str(exc).splitlines()[0]})") from None
    if x.dim() == 2:
        x = x.unsqueeze(0)  # (1, T, I)
    if not x.is_floating_point() or x.dim() != 3 or x.shape[0] == 0:
        raise GatescopeError(
            f"--input tensor {keys[0]} is {x.dtype} {list(x.shape)}; expected floats [sequences, time, "
            f"{model.input_size}] or [time, {model.input_size}]"
        )
    model.check_input(x[:1])
    return Inputs(x.shape[0], lambda: iter(x), f"{path} ({x.shape[0]} sequences)")


def _batches(sequences: Iterable[torch.Tensor], size: int, equal_lengths: bool) -> Iterator[list[torch.Tensor]]:
    """Consecutive sequences in groups of `size` (cut where the length changes, if `equal_lengths`)."""
    batch: list[torch.Tensor] = []
    for sequence in sequences:
        if batch and (len(batch) == size or (equal_lengths and len(sequence) != len(batch[0]))):
            yield batch
            batch = []
        batch.append(sequence)
    if batch:
        yield batch


def _pad(batch: list[torch.Tensor], device: torch.device) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Sequences -> a padded batch [B, T(, I)] and lengths [B] (None when all are equally long)."""
    lengths = torch.tensor([len(s) for s in batch])
    padded = torch.nn.utils.rnn.pad_sequence(batch, batch_first=True)  # (B, T) or (B, T, I)
    return padded.to(device), None if bool((lengths == lengths[0]).all()) else lengths


def _padded_batches(model, inputs: Inputs, batch_size: int, progress: bool) -> Iterator[tuple[torch.Tensor, torch.Tensor | None, int]]:
    """(padded batch, lengths or None, number of sequences) in the inputs' order, with a progress bar.

    Sequences of different lengths are packed by the model, so padding is never recorded; a model
    with an LSTMCell / GRUCell (stepped in a loop) gets batches of equal-length sequences instead.
    """
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    device = next(model.parameters()).device
    has_cells = any(info["cell"].endswith("Cell") for info in model.modules_info)
    columns = (TextColumn("tracing"), BarColumn(), MofNCompleteColumn(), TextColumn("sequences"), TimeRemainingColumn())
    with Progress(*columns, console=Console(stderr=True), disable=not progress) as bar:
        task = bar.add_task("trace", total=inputs.count)
        for batch in _batches(inputs.sequences(), batch_size, equal_lengths=has_cells):
            x, lengths = _pad(batch, device)
            yield x, lengths, len(batch)
            bar.advance(task, len(batch))


@dataclass(frozen=True)
class RunOptions:
    """How inputs are run and recorded: batch size, what to keep, storage dtype, extra metadata."""

    batch_size: int = 64
    modules: list[str] | None = None
    kinds: list[str] | None = None
    dtype: torch.dtype = torch.float32
    meta: dict | None = None
    progress: bool = True

    def record(self, model):
        """A `gatescope.record` block over ``model`` with these options."""
        from gatescope.recording import record

        return record(model, modules=self.modules, kinds=self.kinds, dtype=self.dtype, meta=self.meta)


def record_inputs(model, inputs: Inputs, options: RunOptions = RunOptions()):
    """Run `inputs` through `model` batch by batch inside one `gatescope.record` block -> Trace (in memory)."""
    with torch.no_grad(), options.record(model) as rec:
        for x, lengths, _ in _padded_batches(model, inputs, options.batch_size, options.progress):
            model(x, lengths)
    return rec.trace


def write_inputs(path: str, model, inputs: Inputs, options: RunOptions = RunOptions()) -> tuple[int, int, int]:
    """Trace `inputs` straight into the trace file `path`, one batch at a time, in bounded memory.

    Returns (sequences, tokens, quantities). The file's layout is fixed by the first batch (names,
    widths) and by every sequence's length, counted before any work.
    """
    from gatescope.tracefile import TraceWriter

    with options.record(model):  # unknown modules or kinds fail before any work
        pass
    lengths = [len(s) for s in inputs.sequences()]
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)  # (S+1,)
    writer, row, widths = None, 0, {}
    try:
        for x, batch_lengths, _ in _padded_batches(model, inputs, options.batch_size, options.progress):
            with torch.no_grad(), options.record(model) as rec:
                model(x, batch_lengths)
            part = rec.trace
            if writer is None:
                widths = {name: part[name].shape[1] for name in part.names}
                writer = TraceWriter(path, widths, STORAGE_NAMES[options.dtype], offsets, part.token_ids is not None, part.meta)
            for name in part.names:
                writer.write(name, row, _storage(part[name]))
            if part.token_ids is not None:
                writer.write("token_ids", row, part.token_ids.numpy())
            row += part.num_tokens
    finally:
        if writer is not None:
            writer.close()
    return len(lengths), row, len(widths)


STORAGE_NAMES = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16"}


def _storage(values: torch.Tensor) -> np.ndarray:
    """A recorded tensor's bytes as numpy (bfloat16 kept as its 16 raw bits)."""
    values = values.detach().cpu()
    return values.view(torch.int16).numpy() if values.dtype == torch.bfloat16 else values.numpy()


def counted(n: int, noun: str) -> str:
    """``counted(1, "sequence") == "1 sequence"``, ``counted(2, "quantity") == "2 quantities"``."""
    if n == 1:
        return f"1 {noun}"
    return f"{n} {noun[:-1]}ies" if noun.endswith("y") else f"{n} {noun}s"


def split_list(values: tuple[str, ...]) -> list[str] | None:
    """Repeatable, comma-separated option values -> a list (None when none given)."""
    items = [item for value in values for item in value.replace(",", " ").split()]
    return items or None


@click.command("trace")
@click.argument("model", type=click.Path(path_type=Path))
@click.option("-o", "--output", required=True, type=click.Path(path_type=Path),
              help="The trace file to write (a folder with --shard-tokens).")
@click.option("--text", "texts", multiple=True, metavar="TEXT",
              help="A sequence, tokenised with the model's vocabulary (repeatable).")
@click.option("--file", "file", metavar="FILE",
              help="A text corpus, one sequence a line (blank lines skipped); streamed in batches.")
@click.option("--ids", "ids", multiple=True, metavar='"3 17 4"',
              help="A sequence of token ids, for models without a vocabulary (repeatable).")
@click.option("--input", "input_path", metavar="X.safetensors",
              help="Float inputs for a model without an embedding: a safetensors file holding one tensor, "
                   "[sequences, time, input_size] (or [time, input_size] for one sequence).")
@click.option("--device", default="cpu", show_default=True, help="Where to run the model: cpu, cuda, cuda:1, ...")
@click.option("--dtype", type=click.Choice(list(DTYPES)), default="float32", show_default=True,
              help="Storage dtype of the recorded values (float16/bfloat16 halve the file).")
@click.option("--batch-size", type=click.IntRange(min=1), default=64, show_default=True,
              help="Sequences run together.")
@click.option("--modules", multiple=True, metavar="NAMES",
              help="Recurrent modules to record, e.g. rnn or encoder.rnn (comma-separated or repeated; default all).")
@click.option("--kinds", multiple=True, metavar="KINDS",
              help="Quantities to record, e.g. i,f,c,h (LSTM i f g o c h m; GRU r z n h; default all).")
@click.option("--shard-tokens", type=click.IntRange(min=1), metavar="N",
              help="Write -o as a folder of trace files of at most N tokens each, plus index.json (with --file).")
@click.option("--distributed", is_flag=True,
              help="Split the corpus over the processes torchrun started (implied under torchrun).")
def trace(model: Path, output: Path, texts, file, ids, input_path, device, dtype, batch_size, modules, kinds,
          shard_tokens, distributed) -> None:
    """Record every gate and state of MODEL (a safetensors checkpoint) over some input into a trace file.

    \b
    Examples:
      gatescope trace model.safetensors --text "the boy near the cars greets" -o run.safetensors
      gatescope trace model.safetensors --file corpus.txt --batch-size 128 -o corpus.trace.safetensors
      gatescope trace bare_lstm.safetensors --input x.safetensors -o run.safetensors
      gatescope trace model.safetensors --file corpus.txt --shard-tokens 1000000 -o corpus.trace/
    """
    from gatescope.checkpoint import load
    from gatescope.distributed import launched_by_torchrun

    if shard_tokens is not None or distributed or launched_by_torchrun():  # a sharded folder, maybe by many ranks
        from gatescope.cli.stream import trace_sharded

        if texts or ids or input_path:
            raise GatescopeError("a sharded trace is written from a corpus: give --file alone")
        options = RunOptions(batch_size, split_list(modules), split_list(kinds), DTYPES[dtype],
                             meta={"model": str(model)})
        summary = trace_sharded(model, output, file, device, options, shard_tokens, distributed)
        if summary:
            click.echo(summary)
        return
    check_writable(output)
    for role, given in (("model", model), ("--file", file), ("--input", input_path)):
        if given is not None and Path(given).resolve() == output.resolve():
            raise GatescopeError(f"the output {output} is the {role} file; choose another path")
    loaded = load(model, device=device)
    inputs = gather_inputs(loaded, texts, ids, file, input_path)
    if inputs is None:
        raise GatescopeError("empty input: give --text, --file, --ids or --input")
    counts: list[tuple[int, int, int]] = []
    options = RunOptions(batch_size, split_list(modules), split_list(kinds), DTYPES[dtype],
                         meta={"model": str(model), "input": inputs.description})
    atomic_write(output, lambda tmp: counts.append(write_inputs(tmp, loaded, inputs, options)))
    sequences, tokens, quantities = counts[0]
    click.echo(f"wrote {output}: {counted(sequences, 'sequence')}, "
               f"{counted(tokens, 'token')}, {counted(quantities, 'quantity')}")
