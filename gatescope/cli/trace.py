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

import warnings
from pathlib import Path

import click

from gatescope.cli import with_formats
from gatescope.cli.params import WholeNumber
from gatescope.errors import GatescopeError, shown
from gatescope.runs import CHUNK_STEPS
from gatescope.files import atomic_write, check_writable
from gatescope.inputs import corpus as corpora
from gatescope.kinds import kinds_by_cell
from gatescope.runs.trace import DTYPES, RunOptions, check_selection, counted, write_inputs
from gatescope.validation.limits import MAX_WHOLE_BYTES

def split_list(values: tuple[str, ...], option: str) -> list[str] | None:
    """Repeatable, comma-separated option values -> a list (None when none given; an option given but naming
    nothing, such as ``--kinds ""``, is an error rather than "all")."""
    items = [item for value in values for item in value.replace(",", " ").split()]
    if values and not items:
        raise GatescopeError(f"{option} {shown(' '.join(values))} names nothing; leave the option out for all")
    return items or None


def _set_whole_limit(ctx: click.Context, param: click.Parameter, megabytes: int) -> int:
    corpora.WHOLE_LIMIT.set(megabytes << 20)
    return megabytes


def input_options(f):
    """The options that give a model's input, shared by `trace` and `inspect`."""
    options = [
        click.option("--text", "texts", multiple=True, metavar="TEXT",
                     help="A sequence, tokenised with the model's vocabulary (repeatable)."),
        click.option("--file", "files", multiple=True, metavar="FILE",
                     help="A text corpus, one sequence a line (blank lines skipped; repeatable)."),
        click.option("--whole", is_flag=True,
                     help="Each --file is one sequence (for char models: a source file read as one stream), "
                          f"read whole: at most {MAX_WHOLE_BYTES >> 20} MB a file unless --max-whole-mb says more."),
        click.option("--max-whole-mb", type=WholeNumber(min=1), default=MAX_WHOLE_BYTES >> 20, show_default=True,
                     expose_value=False, callback=_set_whole_limit,
                     help="The largest --whole file read, in MB (a larger one is refused before it is read)."),
        click.option("--ids", "ids", multiple=True, metavar='"3 17 4"',
                     help="A sequence of token ids, for models without a vocabulary (repeatable)."),
        click.option("--ids-file", "ids_files", multiple=True, metavar="FILE",
                     help="Token ids, one sequence a line, separated by spaces or commas (repeatable)."),
        click.option("--input", "input_paths", multiple=True, metavar="X",
                     help="Float inputs for a model without an embedding: .safetensors (one tensor) or .npy, "
                          "[sequences, time, input_size] or [time, input_size]; or .csv/.tsv, one row per timestep, "
                          "one column per feature, sequences separated by a blank line or named by a "
                          "'sequence' header column. For an ONNX model: the graph's own input as it takes it "
                          "(.npy or .safetensors), several by name with NAME=FILE or NAME=NUMBER (repeatable)."),
        click.option("--strict", is_flag=True,
                     help="Words outside the vocabulary are an error (default: mapped to its unknown token, "
                          "and said on stderr)."),
    ]
    for option in reversed(options):
        f = option(f)
    return f


def one_input(input_paths: tuple[str, ...]) -> str | None:
    """The single ``--input`` of a checkpoint (several are for the named inputs of an ONNX graph)."""
    if len(input_paths) > 1:
        raise GatescopeError("--input is given once for a checkpoint (several, NAME=FILE, for an ONNX graph's inputs)")
    return input_paths[0] if input_paths else None


def onnx_run_options(f):
    """How an ONNX graph runs: chunk by chunk with its state carried (stateful models), shared by `trace` and `inspect`."""
    options = [
        click.option("--chunk", type=WholeNumber(min=1), metavar="SIZE",
                     help="ONNX: run the first --input in chunks of SIZE along --chunk-axis, each chunk's --carry "
                          "outputs fed back as the next chunk's inputs (a stateful model, e.g. a voice detector)."),
        click.option("--chunk-axis", type=WholeNumber(), default=1, show_default=True, metavar="AXIS",
                     help="ONNX: the axis of the first --input that --chunk cuts (its time axis)."),
        click.option("--carry", "carry", multiple=True, metavar="OUT=IN",
                     help="ONNX with --chunk: graph output OUT becomes graph input IN of the next chunk "
                          "(IN starts as zeros unless given with --input IN=FILE; repeatable)."),
    ]
    for option in reversed(options):
        f = option(f)
    return f


def is_onnx(model: Path) -> bool:
    from gatescope.checkpoints.formats import kind_of

    return kind_of(model) == "onnx"


ONNX_RECORDED = "ONNX graphs of other shapes are recorded over their own inputs (gatescope trace MODEL --input FILE)"
ONNX_NOT_EDITED = (f"{ONNX_RECORDED}, not edited from the command line (from Python: "
                   "gatescope.runs.onnx_record.record_graph(..., interventions=...))")


def load_checkpoint(model, device: str = "cpu", hint: str = ONNX_RECORDED):
    """gatescope.load(model); an ONNX graph the checkpoint reader cannot run as one chain is refused in one
    line that ends with ``hint`` (what can be done with it)."""
    from gatescope.checkpoints.loader import load

    try:
        return load(model, device=device)
    except GatescopeError as exc:
        if is_onnx(Path(model)):
            raise GatescopeError(f"{exc}; {hint}") from None
        raise


def load_language_model(model):
    """`load_checkpoint` for a command that edits the model and scores the next word (agreement, ablation,
    attribution): a model that does not score it is refused in one line, which says what the loader did not
    use; the loader's warnings come out only once the model is taken, so they never stand before that error."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        lm = load_checkpoint(model, hint=ONNX_NOT_EDITED)
    lm.check_language_model()
    for warning in caught:
        warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)
    return lm


def record_onnx(model: Path, input_paths, chunk, chunk_axis, carry, modules=None, kinds=None,
                dtype="float32", meta=None):
    """The ONNX graph at ``model`` read and recorded over its ``--input`` values (gatescope.runs.onnx_record)."""
    from gatescope.checkpoints.formats.onnx_graph import read_graph
    from gatescope.runs import onnx_inputs, onnx_record

    carried = dict(onnx_inputs.parse_pair(value, "--carry") for value in carry)
    if carried and chunk is None:
        raise GatescopeError("--carry feeds one chunk's outputs to the next: give --chunk SIZE")
    graph = read_graph(model)
    feeds = onnx_inputs.read_feeds(graph, input_paths, carried=list(carried.values()))
    chunking = None
    if chunk is not None:
        chunking = onnx_record.Chunking(next(iter(feeds)), chunk, chunk_axis, carried)
    recording = onnx_record.record_graph(graph, feeds, modules=modules, kinds=kinds, chunking=chunking,
                                         dtype=DTYPES[dtype], meta=meta)
    return graph, recording


@with_formats
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
@click.option("--batch-size", type=WholeNumber(min=1), default=64, show_default=True,
              help="Sequences run together.")
@click.option("--chunk-steps", type=WholeNumber(min=0), default=CHUNK_STEPS, show_default=True,
              help="A longer sequence (a --whole file) runs this many steps at a time, its recurrent state "
                   "carried exactly, each chunk written before the next: memory follows the chunk, not the "
                   "file (0: whole; a bidirectional model reads each sequence whole).")
@click.option("--modules", multiple=True, metavar="NAMES",
              help="Recurrent modules to record, e.g. rnn or encoder.rnn (comma-separated or repeated; default all).")
@click.option("--kinds", multiple=True, metavar="KINDS",
              help=f"Quantities to record, e.g. i,f,c,h (default all): {kinds_by_cell()}.")
@click.option("--shard-tokens", type=WholeNumber(min=1), metavar="N",
              help="Write -o as a folder of trace files of at most N tokens each, plus index.json (with --file).")
@onnx_run_options
@click.option("--distributed", is_flag=True,
              help="Split the corpus over the processes torchrun started (implied under torchrun).")
def trace(model: Path, output: Path, texts, files, whole, ids, ids_files, input_paths, strict, feature_files,
          stimuli_path, code_features, device, dtype, batch_size, chunk_steps, modules, kinds, shard_tokens, chunk,
          chunk_axis, carry, distributed) -> None:
    """Record every gate and state of MODEL over some input into a trace file.

    MODEL is a checkpoint ({formats}), or any ONNX graph.

    An ONNX model given --input runs in onnxruntime on its own inputs; every LSTM / GRU node of the graph
    (inside If branches and Loop bodies too) is recorded from the inputs the graph computes for it, and
    checked against the node's own outputs.

    \b
    Examples:
      gatescope trace model.safetensors --text "the boy near the cars greets" -o run.safetensors
      gatescope trace model.safetensors --file corpus.txt --batch-size 128 -o corpus.trace.safetensors
      gatescope trace model.safetensors --stimuli items.tsv -o agreement.trace.safetensors
      gatescope trace char.safetensors --file a.py --file b.py --whole --code-features -o code.trace.safetensors
      gatescope trace series.safetensors --input x.csv --feature anomaly=labels.txt -o run.trace.safetensors
      gatescope trace model.safetensors --file corpus.txt --shard-tokens 1000000 -o corpus.trace/
      gatescope trace model.onnx --input audio.npy -o run.trace.safetensors
      gatescope trace vad.onnx --input audio.npy --input sr=16000 --chunk 512 --carry stateN=state -o vad.trace.safetensors
    """
    from gatescope.inputs.features import (
        attach_code_features,
        attach_feature_file,
        parse_feature_option,
        stimuli_corpus,
    )
    from gatescope.runs.distributed import launched_by_torchrun

    modules, kinds = split_list(modules, "--modules"), split_list(kinds, "--kinds")
    if input_paths and is_onnx(model):
        others = (texts, files, ids, ids_files, whole, feature_files, stimuli_path, code_features, shard_tokens,
                  distributed)
        if any(others):
            raise GatescopeError("an ONNX graph runs on its own inputs (--input); --text, --file, --ids, --feature, "
                                 "--stimuli, --code-features and sharding do not apply")
        if device != "cpu":
            raise GatescopeError(f"--device {device}: an ONNX graph runs in onnxruntime on the CPU here")
        trace_onnx(model, output, input_paths, chunk, chunk_axis, carry, modules, kinds, dtype)
        return
    if chunk is not None or carry:
        raise GatescopeError("--chunk and --carry run an ONNX graph on its own inputs (--input)")
    input_path = one_input(input_paths)
    if shard_tokens is not None or distributed or launched_by_torchrun():  # a sharded folder, maybe by many ranks
        from gatescope.runs.stream import trace_sharded

        others = (texts, ids, ids_files, input_path, whole, strict, feature_files, stimuli_path, code_features)
        if any(others) or len(files) != 1:
            raise GatescopeError("a sharded trace is written from one corpus: give --file (once, alone)")
        options = RunOptions(batch_size, modules, kinds, DTYPES[dtype], meta={"model": str(model)},
                             chunk_steps=chunk_steps)
        summary = trace_sharded(model, output, files[0], device, options, shard_tokens, distributed)
        if summary:
            click.echo(summary)
        return
    features = [parse_feature_option(value) for value in feature_files]
    inputs = [("model", model), ("--input", input_path), ("--stimuli", stimuli_path)]
    inputs += [("--file", f) for f in files] + [("--ids-file", f) for f in ids_files]
    inputs += [("--feature", path) for _, path in features]
    check_writable(output, inputs)
    loaded = load_checkpoint(model, device=device)
    loaded.check_runnable()
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
                         meta={"model": str(model), "input": corpus.description}, chunk_steps=chunk_steps)
    atomic_write(output, lambda tmp: counts.append(write_inputs(tmp, loaded, corpus, options)))
    sequences, tokens, quantities = counts[0]
    attached = f", features {', '.join(corpus.features)}" if corpus.features else ""
    click.echo(f"wrote {output}: {counted(sequences, 'sequence')}, "
               f"{counted(tokens, 'token')}, {counted(quantities, 'quantity')}{attached}")


def trace_onnx(model: Path, output: Path, input_paths, chunk, chunk_axis, carry, modules, kinds, dtype) -> None:
    """`trace` of an ONNX graph over its own inputs."""
    check_writable(output, [("model", model)]
                   + [("--input", value.partition("=")[2] or value) for value in input_paths])
    meta = {"model": str(model), "input": ", ".join(input_paths)}
    _, recording = record_onnx(model, input_paths, chunk, chunk_axis, carry, modules, kinds, dtype, meta)
    trace = recording.trace
    trace.save(output)  # atomic
    nodes = trace.meta["onnx"]["nodes"]
    worst = max(n["max_difference"] for n in nodes)
    click.echo(f"wrote {output}: {counted(trace.num_sequences, 'sequence')}, {counted(trace.num_tokens, 'token')}, "
               f"{counted(len(trace), 'quantity')} of {counted(len(nodes), 'node')}, within {worst:.1g} of onnxruntime")


_MOVED_TO_RUNS = {"RunOptions", "record_inputs", "write_inputs", "check_selection", "counted", "DTYPES", "STORAGE_NAMES"}


def __getattr__(name: str):
    """The run helpers moved to gatescope.runs.trace; their old names here warn for one release."""
    if name in _MOVED_TO_RUNS:
        import warnings

        import gatescope.runs.trace as runs_trace

        warnings.warn(f"gatescope.cli.trace.{name} moved to gatescope.runs.trace.{name}", DeprecationWarning, stacklevel=2)
        return getattr(runs_trace, name)
    raise AttributeError(f"module 'gatescope.cli.trace' has no attribute {name!r}")
