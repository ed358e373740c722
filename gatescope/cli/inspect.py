"""`gatescope inspect [MODEL]`: a report on a checkpoint's recurrent modules, gates and saturation.

The report itself is data (gatescope.analysis.weights); this module prints it with rich tables or
as JSON, and on a terminal opens the trace browser. Gate saturation follows Karpathy, Johnson &
Fei-Fei 2015 (fraction of time a gate is < 0.1 or > 0.9).
"""
from __future__ import annotations

import sys
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from gatescope.checkpoints.formats import CONVERTED_KEY
from gatescope.cli import report_console, with_formats
from gatescope.cli.output import print_json
from gatescope.cli.trace import input_options, is_onnx, onnx_run_options, one_input, record_onnx
from gatescope.runs.trace import RunOptions, counted, record_inputs
from gatescope.errors import GatescopeError
from gatescope.inputs import corpus as corpora

if TYPE_CHECKING:
    from gatescope.checkpoints.loader import LoadedModel
    from gatescope.inputs.corpus import Corpus
    from gatescope.traces.trace import Trace

DEFAULT_WORDS = 8  # words of the vocabulary run when the metadata has no sample_text


def default_model() -> Path:
    """The bundled sample model that `inspect` opens without a MODEL argument."""
    from gatescope import sample_models

    path = sample_models.path()
    if not path.is_file():
        raise GatescopeError(
            f"the bundled default model {path.name} is not there (train it with `gatescope samples train`); "
            "give a MODEL path"
        )
    return path


def sample_inputs(model: LoadedModel) -> Corpus:
    """What to run a model with a vocabulary on when no input is given: its metadata's
    "sample_text", else a few words of its vocabulary (special tokens like <unk> left out)."""
    texts = model.metadata.get("sample_text")
    if texts is not None:
        if not (isinstance(texts, list) and texts and all(isinstance(t, str) for t in texts)):
            raise GatescopeError("metadata 'sample_text' must be a non-empty list of strings")
        return corpora.gather(model, texts=texts)
    vocab = model.vocab
    specials = {vocab.unk, vocab.eos}
    words = [t for t in vocab.tokens if t not in specials and not (t.startswith("<") and t.endswith(">"))]
    ids = [str(vocab.index[w]) for w in words[:DEFAULT_WORDS]] or [str(vocab.index[vocab.tokens[0]])]
    return corpora.gather(model, ids=[" ".join(ids)])


def build_report(
    model_path: Path,
    texts: Iterable[str] = (),
    ids: Iterable[str] = (),
    input_path: str | None = None,
    device: str = "cpu",
    files: Iterable[str] = (),
    whole: bool = False,
    ids_files: Iterable[str] = (),
    strict: bool = False,
) -> tuple[dict[str, Any], Trace | None]:
    """The full report (weights, what the loader did not use, and saturation when the model can be
    run) and the trace, if any. A model the loader cannot run is reported from its weights; asking
    to run it on some input is an error."""
    from gatescope.analysis.weights import saturation_report, weight_report
    from gatescope.checkpoints.loader import load

    model = load(model_path, device=device)
    report = {"file": str(model_path), **weight_report(model)}
    projection = model.input_projection
    report["input_projection"] = None if projection is None else {
        "name": model.input_projection_name, "in_features": projection.in_features,
        "out_features": projection.out_features, "bias": projection.bias is not None,
    }
    report["unused"] = list(model.unused)
    report["outside"] = list(model.outside)  # declared outside the chain by the metadata roles
    report["converted"] = model.metadata.get(CONVERTED_KEY)  # {"from", "file", "notes"}: None for safetensors
    report["runnable"] = model.runnable
    refusal = [] if model.runnable else [f"cannot run this model as one chain: {model.refusal}"]
    report["warnings"] = refusal + model.load_warnings + report["warnings"]
    texts, ids, files, ids_files = list(texts), list(ids), list(files), list(ids_files)
    if (texts or ids or files or ids_files or input_path) or model.runnable:
        model.check_runnable()
        inputs = corpora.gather(model, texts, ids, files, whole, ids_files, input_path, strict)
        if inputs is None and model.vocab is not None:
            inputs = sample_inputs(model)
    else:
        inputs = None
    trace = None
    if inputs is not None:
        meta = {"model": str(model_path), "input": inputs.description}
        trace = record_inputs(model, inputs, RunOptions(meta=meta, progress=False))
        report["trace"] = {"sequences": trace.num_sequences, "tokens": trace.num_tokens}
        report["saturation"] = saturation_report(trace)
    else:
        report["trace"] = report["saturation"] = None
    return report, trace


# -- printing ---------------------------------------------------------------------------------
def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.3g}"


def print_report(report: dict[str, Any]) -> None:
    """The report as rich tables on stdout."""
    console = report_console()
    console.print(f"[bold]{report['file']}[/]: {report['parameters']:,} parameters")
    emb, dec, vocab = report["embedding"], report["decoder"], report["vocab"]
    projection = report["input_projection"]
    parts = [
        f"embedding {emb['name']} ({emb['num_embeddings']} x {emb['embedding_dim']})" if emb else "no embedding",
        *([f"input {projection['name']} ({projection['in_features']} -> {projection['out_features']})"]
          if projection else []),
        *report["recurrent"],
        f"decoder {dec['name']} ({dec['in_features']} -> {dec['out_features']})" if dec else "no decoder",
    ]
    if vocab:
        parts[-1] += f"; vocabulary of {vocab['size']} {vocab['tokenizer']} tokens"
    console.print(" -> ".join(parts) if report["runnable"] else
                  "[yellow]not runnable as one chain[/] (see the warnings below); the weights:")
    if report["converted"]:
        converted = report["converted"]
        notes = converted["notes"]
        console.print(f"converted from {converted['from']} ({converted['file']})"
                      + (":" if notes else ", nothing dropped, renamed or assumed"))
        for note in notes:
            console.print(f"  - {note}")
    if report["unused"]:
        console.print(f"unused tensors: {', '.join(report['unused'])} (the model's outputs are refused)")
    if report["outside"]:
        console.print(f"outside the chain (metadata roles): {', '.join(report['outside'])}")

    modules = _table("Recurrent modules (timescale: 1/(1-sigmoid(b)) of the f or z gate bias, in steps)",
                    "module", "cell", "in->hid", "proj", "bias", "params", "time min", "median", "max")
    for module in report["modules"]:
        for layer in module["layers"]:
            ts = layer["timescale"] or {}  # None without a forget or update gate (a plain RNN)
            modules.add_row(
                f"{module['name']} l{layer['layer']} {layer['direction']}", module["cell"],
                f"{layer['input_size']}->{module['hidden_size']}", str(module["proj_size"] or "-"),
                "yes" if module["bias"] else "no", f"{layer['parameters']:,}",
                _num(ts.get("min")), _num(ts.get("median")), _num(ts.get("max")),
            )
    console.print(modules)

    gates = _table("Gates (bias = b_ih + b_hh; radius = spectral radius of the gate's recurrent matrix)",
                  "module", "gate", "|W_ih|", "|W_hh|", "bias", "std", "min", "max", "radius")
    for module in report["modules"]:
        for layer in module["layers"]:
            for gate, s in layer["gates"].items():
                gates.add_row(
                    f"{module['name']} l{layer['layer']} {layer['direction']}", gate,
                    *(_num(s[k]) for k in ("weight_ih_norm", "weight_hh_norm", "bias_mean", "bias_std", "bias_min",
                                          "bias_max", "spectral_radius")),
                )
    console.print(gates)

    if report["saturation"]:
        console.print(_saturation_table(report))
    for warning in report["warnings"]:
        console.print(f"[yellow]warning:[/] {warning}")


def _table(title: str, *columns: str):
    from rich import box
    from rich.table import Table

    t = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True)
    for i, column in enumerate(columns):
        t.add_column(column, justify="left" if i < 2 else "right", no_wrap=i == 0)
    return t


def _saturation_table(report: dict[str, Any]):
    trace = report["trace"]
    saturation = _table(
        f"Gate saturation over {counted(trace['sequences'], 'sequence')}, {counted(trace['tokens'], 'token')}: "
        "fraction of time < 0.1 (left) or > 0.9 (right), and units saturated more than half the time",
        "quantity", "left", "right", "units left", "units right",
    )
    for name, s in report["saturation"].items():
        saturation.add_row(name, _fraction(s["left"]), _fraction(s["right"]),
                           f"{s['units_mostly_left']}/{s['units']}", f"{s['units_mostly_right']}/{s['units']}")
    return saturation


def _fraction(value: float | None) -> str:
    """A saturation fraction, or ``n/a`` where none could be measured (the gates are NaN: the report warns)."""
    return "n/a" if value is None else f"{value:.3f}"


def build_onnx_report(path: Path, input_paths: tuple[str, ...], chunk: int | None, chunk_axis: int,
                      carry: tuple[str, ...], **chain_inputs: Any) -> tuple[dict[str, Any], Trace | None]:
    """The report on an ONNX graph: its inputs and every recurrent node (where it sits, what feeds it, whether
    it can be recorded), recorded over ``input_paths`` when given (each node's largest difference from
    onnxruntime, gate saturation); without them, and when the graph is an embedding -> recurrent -> decoder
    chain, the checkpoint report of `build_report` too. A graph none of whose nodes can be recorded is a
    one-line error saying why."""
    from gatescope.analysis.weights import saturation_report
    from gatescope.checkpoints.formats.onnx_graph import read_graph
    from gatescope.runs.onnx_inputs import graph_report

    graph = read_graph(path)
    if not graph.nodes:
        raise GatescopeError(f"{path} has no LSTM, GRU or RNN node")
    if all(entry.refusal for entry in graph.nodes):
        entry = graph.nodes[0]
        raise GatescopeError(f"{path}: {entry.describe()} cannot be recorded: {entry.refusal}")
    recording = None
    if input_paths:
        graph, recording = record_onnx(path, input_paths, chunk, chunk_axis, carry,
                                       meta={"model": str(path), "input": ", ".join(input_paths)})
    elif chunk is not None or carry:
        raise GatescopeError("--chunk and --carry run an ONNX graph on its own inputs: give --input")
    report: dict[str, Any] = {"file": str(path), "onnx": graph_report(graph, recording)}
    if recording is not None:
        trace = recording.trace
        report["trace"] = {"sequences": trace.num_sequences, "tokens": trace.num_tokens}
        report["saturation"] = saturation_report(trace)
        return report, trace
    try:
        chain, trace = build_report(path, **chain_inputs)
    except GatescopeError as exc:
        if any(chain_inputs.get(k) for k in ("texts", "ids", "files", "ids_files")):
            raise
        report["chain"] = str(exc)  # not an embedding -> recurrent -> decoder chain: the nodes are the report
        return report, None
    return chain | report, trace


def print_onnx_report(report: dict[str, Any]) -> None:
    """An ONNX graph's report: its recurrent nodes, then the checkpoint report or the saturation of a run."""
    console = report_console()
    graph = report["onnx"]
    inputs = ", ".join(f"{n} ({v['type']} {v['shape']})" for n, v in graph["inputs"].items())
    console.print(f"[bold]{report['file']}[/]: an ONNX graph; inputs {inputs or 'none'}", soft_wrap=True)
    console.print("recurrent nodes (recorded as module.layer):", soft_wrap=True)
    for node in graph["nodes"]:
        difference = node.get("max_difference")
        checked = "" if difference is None else f", within {difference:.1g} of onnxruntime"
        recordable = f"recordable{checked}" if node["recordable"] else f"[yellow]not recordable[/]: {node['refusal']}"
        state = "; ".join(f"{k.removeprefix('initial_')}: {v}" for k, v in node["initial_state"].items())
        console.print(f"  [bold]{node['node']}[/] {node['op']} -> {node['name']}.l{node['layer']}, {node['where']}; "
                      f"{recordable}", soft_wrap=True)
        console.print(f"    fed by {' <- '.join(node['feeds']) or '?'}; initial state {state}", soft_wrap=True, markup=False)
    if "modules" in report:
        print_report(report)
    elif report.get("saturation"):
        console.print(_saturation_table(report))
    if "chain" in report:
        console.print("not read as a checkpoint (an embedding -> recurrent -> decoder chain): record it over its own "
                      "inputs with --input", soft_wrap=True)


def open_browser(trace: Trace) -> None:
    """Open the trace browser (Textual, imported only here) on the trace."""
    from gatescope.tui.app import run_browser

    run_browser(trace)


@with_formats
@click.command("inspect")
@click.argument("model", required=False, type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON on stdout (and nothing else).")
@input_options
@onnx_run_options
@click.option("--no-tui", is_flag=True, help="Do not open the trace browser, even on a terminal.")
@click.option("--device", default="cpu", show_default=True, help="Where to run the model: cpu, cuda, ...")
def inspect(
    model: Path | None, as_json: bool, texts: tuple[str, ...], files: tuple[str, ...], whole: bool,
    ids: tuple[str, ...], ids_files: tuple[str, ...], input_paths: tuple[str, ...], strict: bool,
    chunk: int | None, chunk_axis: int, carry: tuple[str, ...], no_tui: bool, device: str,
) -> None:
    """Report on MODEL, a checkpoint ({formats}) or an ONNX graph (default: the bundled agreement LSTM).

    An ONNX graph: every LSTM / GRU / RNN node, where it sits (top level, an If branch, a Loop body),
    what feeds it, its initial state and whether it can be recorded; with --input (the graph's own
    inputs) the nodes are recorded and each one's largest difference from onnxruntime reported.

    From the weights: each recurrent module and layer, per-gate weight norms and bias statistics,
    each unit's memory timescale 1/(1 - sigmoid(b)) from the forget-gate bias (LSTM) or the
    update-gate bias (GRU), and warnings (NaN/Inf weights, spectral radius far above 1). When the
    model can run (a vocabulary in its metadata, or --text/--file/--ids/--ids-file/--input), it traces
    the input and reports gate saturation; on a terminal it then opens the trace browser. Tensors the
    runnable model does not use are listed ("unused" in --json) with a warning, and every command that
    reads the model's logits refuses it until they are declared outside the chain (convert --roles
    outside=NAME, listed as "outside"); a model that is not
    one embedding -> recurrent stack -> decoder chain is reported from its weights only.

    \b
    Examples:
      gatescope inspect
      gatescope inspect model.safetensors --json
      gatescope inspect model.safetensors --text "the boys near the car greet" --no-tui
      gatescope inspect model.onnx --input audio.npy --json
    """
    path = model if model is not None else default_model()
    if is_onnx(path):
        report, trace = build_onnx_report(path, input_paths, chunk, chunk_axis, carry, texts=texts, ids=ids,
                                          device=device, files=files, whole=whole, ids_files=ids_files, strict=strict)
    elif chunk is not None or carry:
        raise GatescopeError("--chunk and --carry run an ONNX graph on its own inputs (--input)")
    else:
        report, trace = build_report(path, texts, ids, one_input(input_paths), device, files, whole, ids_files, strict)
    if as_json:
        print_json(report, indent=2)
        return
    (print_onnx_report if "onnx" in report else print_report)(report)
    if trace is not None and not no_tui and sys.stdout.isatty():
        open_browser(trace)
