"""`gatescope trace MODEL -o TRACE`: record every gate of a checkpoint over some input into a trace file.

Input is read and tokenised once by gatescope.inputs.corpus (``--text``, ``--file`` one sequence a line
or ``--whole`` files, ``--ids``, ``--ids-file``, or float vectors with ``--input``), and may carry
per-token features into the trace: ``--feature NAME=FILE``, ``--stimuli`` (agreement items and
their labels, from gatescope.inputs.stimuli.agreement), ``--code-features`` (gatescope.inputs.stimuli.code_features).
The corpus streams through the model in batches, and each batch's recording goes straight to its
place in the trace file (gatescope.traces.file.TraceWriter), so memory stays bounded by one batch
of recorded values; the file keeps the input's order and is renamed into place only once complete
(gatescope.files.atomic_write). A selection of modules or kinds that matches nothing is an error
naming what the model has. The run helpers here are shared with `inspect`.
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import click
import numpy as np
import torch

from gatescope.errors import GatescopeError
from gatescope.files import atomic_write, check_writable
from gatescope.inputs import corpus as corpora
from gatescope.inputs.corpus import Corpus
from gatescope.kinds import KINDS, cell_type

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def _padded_batches(
    model, corpus: Corpus, batch_size: int, progress: bool
) -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:
    """(padded batch, lengths or None) in the corpus's order, on the model's device, with a progress bar.

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
        task = bar.add_task("trace", total=corpus.num_sequences)
        for x, lengths in corpus.batches(batch_size, equal_lengths=has_cells):
            yield x.to(device), lengths
            bar.advance(task, x.shape[0])


def check_selection(model, modules: Sequence[str] | None, kinds: Sequence[str] | None) -> None:
    """Raise GatescopeError, naming what the model has, unless every module and kind selected is
    recorded: a module of the model's chain, a kind that at least one selected module computes."""
    have = {info["name"]: info for info in model.modules_info if info["name"] in model.recurrent_names}

    def described(name: str) -> str:
        info = have[name]
        return f"{name} ({info['cell']}: {' '.join(cell_type(info['cell']).kinds_for(info['proj_size']))})"

    unknown = [m for m in modules or () if m not in have]
    if unknown:
        raise GatescopeError(f"--modules {', '.join(unknown)}: no such recurrent module in the chain; "
                             f"the model has: {', '.join(described(n) for n in have)}")
    selected = list(modules or have)
    bad = [k for k in kinds or () if k not in KINDS]
    if bad:
        raise GatescopeError(f"--kinds {', '.join(bad)}: unknown kind(s); LSTM has i f g o c h (m with proj_size), "
                             "GRU r z n h")
    recorded = {k for name in selected for k in cell_type(have[name]["cell"]).kinds_for(have[name]["proj_size"])}
    missing = [k for k in kinds or () if k not in recorded]
    if missing:
        raise GatescopeError(f"--kinds {', '.join(missing)}: not computed by "
                             f"{'any selected module' if len(selected) > 1 else 'the selected module'}; "
                             f"{', '.join(described(n) for n in selected)}")


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
        """A `gatescope.record` block over ``model`` with these options (by default, every module of
        the model's chain: a loaded module outside it is never run)."""
        from gatescope.recorder.recording import record

        modules = self.modules or getattr(model, "recurrent_names", None)
        return record(model, modules=modules, kinds=self.kinds, dtype=self.dtype, meta=self.meta)


def record_inputs(model, corpus: Corpus, options: RunOptions = RunOptions()):
    """Run `corpus` through `model` batch by batch inside one `gatescope.record` block -> Trace (in
    memory), with the corpus's features attached."""
    with torch.no_grad(), options.record(model) as rec:
        for x, lengths in _padded_batches(model, corpus, options.batch_size, options.progress):
            model(x, lengths, decode=False)  # the logits are not recorded
    trace = rec.trace
    for name, values in corpus.features.items():
        trace.add_feature(name, values)
    return trace


def write_inputs(path: str, model, corpus: Corpus, options: RunOptions = RunOptions()) -> tuple[int, int, int]:
    """Trace `corpus` straight into the trace file `path`, one batch at a time, in bounded memory.

    Returns (sequences, tokens, quantities). The file's layout is fixed by the first batch (names,
    widths) and by the corpus's offsets; the corpus's features are written with it.
    """
    from gatescope.traces.file import FEATURE_PREFIX, TraceWriter

    with options.record(model):  # unknown modules or kinds fail before any work
        pass
    writer, row, widths = None, 0, {}
    try:
        for x, batch_lengths in _padded_batches(model, corpus, options.batch_size, options.progress):
            with torch.no_grad(), options.record(model) as rec:
                model(x, batch_lengths, decode=False)
            part = rec.trace
            if writer is None:
                widths = {name: part[name].shape[1] for name in part.names}
                writer = TraceWriter(path, widths, STORAGE_NAMES[options.dtype], corpus.offsets,
                                     part.token_ids is not None, part.meta, tuple(corpus.features))
                for name, values in corpus.features.items():
                    writer.write(FEATURE_PREFIX + name, 0, values.astype("<f4"))
            for name in part.names:
                writer.write(name, row, _storage(part[name]))
            if part.token_ids is not None:
                writer.write("token_ids", row, part.token_ids.numpy())
            row += part.num_tokens
    finally:
        if writer is not None:
            writer.close()
    if row != corpus.num_tokens or not widths:
        raise GatescopeError(f"the trace would hold {row} of {corpus.num_tokens} tokens and {len(widths)} quantities; "
                             "nothing written")
    return corpus.num_sequences, row, len(widths)


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


def input_options(f):
    """The options that give a model's input, shared by `trace` and `inspect`."""
    options = [
        click.option("--text", "texts", multiple=True, metavar="TEXT",
                     help="A sequence, tokenised with the model's vocabulary (repeatable)."),
        click.option("--file", "files", multiple=True, metavar="FILE",
                     help="A text corpus, one sequence a line (blank lines skipped; repeatable)."),
        click.option("--whole", is_flag=True,
                     help="Each --file is one sequence (for char models: a source file read as one stream)."),
        click.option("--ids", "ids", multiple=True, metavar='"3 17 4"',
                     help="A sequence of token ids, for models without a vocabulary (repeatable)."),
        click.option("--ids-file", "ids_files", multiple=True, metavar="FILE",
                     help="Token ids, one sequence a line, separated by spaces or commas (repeatable)."),
        click.option("--input", "input_path", metavar="X",
                     help="Float inputs for a model without an embedding: .safetensors (one tensor) or .npy, "
                          "[sequences, time, input_size] or [time, input_size]; or .csv/.tsv, one row per timestep, "
                          "one column per feature, sequences separated by a blank line or named by a "
                          "'sequence' header column."),
        click.option("--strict", is_flag=True,
                     help="Words outside the vocabulary are an error (default: mapped to its unknown token, "
                          "and said on stderr)."),
    ]
    for option in reversed(options):
        f = option(f)
    return f


@click.command("trace")
@click.argument("model", type=click.Path(path_type=Path))
@click.option("-o", "--output", required=True, type=click.Path(path_type=Path),
              help="The trace file to write (a folder with --shard-tokens).")
@input_options
@click.option("--feature", "feature_files", multiple=True, metavar="NAME=FILE",
              help="Attach a per-token feature: .npy or one value a line (NaN allowed), one per token of the "
                   "whole input (repeatable).")
@click.option("--stimuli", "stimuli_path", metavar="ITEMS.tsv",
              help="Trace agreement items (prefix<TAB>correct<TAB>wrong<TAB>condition): each prefix and its "
                   "correct verb, with the features subject_number, in_attractor and is_verb.")
@click.option("--code-features", is_flag=True,
              help="Attach in_string, in_comment, bracket_depth, indent_level (char models over Python "
                   "source; use --file ... --whole).")
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
def trace(model: Path, output: Path, texts, files, whole, ids, ids_files, input_path, strict, feature_files,
          stimuli_path, code_features, device, dtype, batch_size, modules, kinds, shard_tokens, distributed) -> None:
    """Record every gate and state of MODEL (a safetensors checkpoint) over some input into a trace file.

    \b
    Examples:
      gatescope trace model.safetensors --text "the boy near the cars greets" -o run.safetensors
      gatescope trace model.safetensors --file corpus.txt --batch-size 128 -o corpus.trace.safetensors
      gatescope trace model.safetensors --stimuli items.tsv -o agreement.trace.safetensors
      gatescope trace char.safetensors --file a.py --file b.py --whole --code-features -o code.trace.safetensors
      gatescope trace series.safetensors --input x.csv --feature anomaly=labels.txt -o run.trace.safetensors
      gatescope trace model.safetensors --file corpus.txt --shard-tokens 1000000 -o corpus.trace/
    """
    from gatescope.checkpoints.loader import load
    from gatescope.inputs.features import (
        attach_code_features,
        attach_feature_file,
        parse_feature_option,
        stimuli_corpus,
    )
    from gatescope.runs.distributed import launched_by_torchrun

    if shard_tokens is not None or distributed or launched_by_torchrun():  # a sharded folder, maybe by many ranks
        from gatescope.cli.stream import trace_sharded

        others = (texts, ids, ids_files, input_path, whole, strict, feature_files, stimuli_path, code_features)
        if any(others) or len(files) != 1:
            raise GatescopeError("a sharded trace is written from one corpus: give --file (once, alone)")
        options = RunOptions(batch_size, split_list(modules), split_list(kinds), DTYPES[dtype],
                             meta={"model": str(model)})
        summary = trace_sharded(model, output, files[0], device, options, shard_tokens, distributed)
        if summary:
            click.echo(summary)
        return
    check_writable(output)
    features = [parse_feature_option(value) for value in feature_files]
    inputs = [("model", model), ("--input", input_path), ("--stimuli", stimuli_path)]
    inputs += [("--file", f) for f in files] + [("--ids-file", f) for f in ids_files]
    inputs += [("--feature", path) for _, path in features]
    for role, given in inputs:
        if given is not None and Path(given).resolve() == output.resolve():
            raise GatescopeError(f"the output {output} is the {role} file; choose another path")
    loaded = load(model, device=device)
    loaded.check_runnable()
    modules, kinds = split_list(modules), split_list(kinds)
    check_selection(loaded, modules, kinds)
    if stimuli_path is not None:
        if texts or files or ids or ids_files or input_path:
            raise GatescopeError("--stimuli gives the input; it cannot be combined with --text, --file, --ids, "
                                 "--ids-file or --input")
        corpus = stimuli_corpus(loaded, stimuli_path, strict)
    else:
        corpus = corpora.gather(loaded, texts, ids, files, whole, ids_files, input_path, strict,
                                keep_text=code_features)
    if corpus is None:
        raise GatescopeError("empty input: give --text, --file, --ids, --ids-file, --input or --stimuli")
    if code_features:
        attach_code_features(loaded, corpus)
    for name, path in features:
        attach_feature_file(corpus, name, path)
    counts: list[tuple[int, int, int]] = []
    options = RunOptions(batch_size, modules, kinds, DTYPES[dtype],
                         meta={"model": str(model), "input": corpus.description})
    atomic_write(output, lambda tmp: counts.append(write_inputs(tmp, loaded, corpus, options)))
    sequences, tokens, quantities = counts[0]
    attached = f", features {', '.join(corpus.features)}" if corpus.features else ""
    click.echo(f"wrote {output}: {counted(sequences, 'sequence')}, "
               f"{counted(tokens, 'token')}, {counted(quantities, 'quantity')}{attached}")
