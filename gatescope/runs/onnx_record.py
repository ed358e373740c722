"""Recording the recurrent nodes of an ONNX graph: onnxruntime runs the graph, gatescope's cells compute the gates.

onnxruntime runs the model as it is, every recurrent node's inputs and outputs exposed, If branches and
Loops expanded as the run takes them (gatescope.runs.onnx_run). A node in a Loop body runs once per
iteration; its calls join, in order, into one sequence per batch row.

Each node then becomes a torch module through the ONNX reader's node mapping
(gatescope.checkpoints.formats.onnx: ONNX gate orders to torch's), and gatescope's recorder
(gatescope.recorder.recording.record) runs it on the node's own inputs and initial state, recording every
gate of every step. Its h at every step and its final h and c are checked against the node's own Y, Y_h
and Y_c from onnxruntime: the largest difference is kept in the trace's metadata, and one over
`MAX_DIFFERENCE` is a one-line refusal.

A stateful model (a voice detector whose h and c are graph inputs and outputs) runs chunk by chunk:
`Chunking` cuts one input along its time axis and feeds the named outputs of each chunk back as the
named inputs of the next; the recorded steps of the chunks join into one sequence per batch row.

Interventions (gatescope.recorder.interventions) on a node are applied by gatescope's cells, and the
node's edited outputs are fed through the rest of the graph by onnxruntime.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from gatescope.checkpoints.formats.onnx_graph import INPUT_ROLES, OUTPUT_ROLES, Graph, RecurrentNode
from gatescope.errors import GatescopeError, warn
from gatescope.names import format_name, parse_name
from gatescope.recorder.interventions import Intervention
from gatescope.recorder.recordable import module_info
from gatescope.runs.onnx_run import name_outputs, run_nodes
from gatescope.runs.trace import check_kinds
from gatescope.traces.trace import Trace


MAX_DIFFERENCE = 1e-4  # largest |h - Y| (and c - Y_c) accepted between gatescope's cells and onnxruntime


@dataclass
class Chunking:
    """Run a stateful graph chunk by chunk: ``input`` cut into pieces of ``size`` along ``axis``, and
    each output of ``carry`` (output name -> input name) fed back as that input of the next chunk."""

    input: str
    size: int
    axis: int = 1
    carry: dict[str, str] = field(default_factory=dict)
    carried: dict[str, np.ndarray] = field(default_factory=dict)  # the carried inputs of the next chunk


@dataclass
class NodeRun:
    """One recurrent node's recorded quantities over one run: kind name -> (B, T, H), and its check."""

    module: torch.nn.Module  # the torch module that computed it
    values: dict[str, torch.Tensor]  # quantity name -> (B, T, H), padded positions zero
    lengths: torch.Tensor  # (B,)
    difference: float  # the largest difference of h (and c) from onnxruntime's Y / Y_h / Y_c
    outputs: dict[str, np.ndarray] = field(default_factory=dict)  # an edited node's outputs, by value name
    calls: int = 1  # the node's runs joined here (chunks, Loop iterations)


# -- the cells --------------------------------------------------------------------------------------------
def node_module(graph: Graph, entry: RecurrentNode, values: Mapping[str, np.ndarray]) -> torch.nn.Module:
    """The torch module that computes ``entry`` with its run's weights (the ONNX reader's node mapping)."""
    from gatescope.checkpoints.discovery import discover_recurrent
    from gatescope.checkpoints.formats import onnx as onnx_format
    from gatescope.checkpoints.loader import _build_recurrent
    from gatescope.kinds import CELL_TYPES

    weights = {entry.node.input[i]: values[role] for i, role in enumerate(INPUT_ROLES)
               if role in ("W", "R", "B", "P") and role in values}
    module = onnx_format.node_module(graph.path, entry.node, weights)
    tensors = {f"{module.name}.{k}": torch.from_numpy(np.array(v, dtype=np.float32)) for k, v in module.tensors.items()}
    declared = {} if module.cell == CELL_TYPES[module.op] else {module.name: module.cell}
    (spec,) = discover_recurrent({k: tuple(v.shape) for k, v in tensors.items()}, declared)
    built = _build_recurrent(spec)
    built.load_state_dict({k.removeprefix(f"{module.name}."): v for k, v in tensors.items()})
    return built.eval()


def record_node(graph: Graph, entry: RecurrentNode, values: Mapping[str, np.ndarray],
                interventions: Sequence[Intervention] = ()) -> NodeRun:
    """Every gate of ``entry`` over its run, computed by gatescope's cells and checked against onnxruntime's
    outputs of the node; with ``interventions`` (named as in the trace), recorded again under them, and
    the node's outputs as the edited run gives them (`NodeRun.outputs`)."""
    from torch.nn.utils.rnn import pack_padded_sequence

    module = node_module(graph, entry, values)
    x = torch.from_numpy(np.asarray(values["X"], dtype=np.float32)).transpose(0, 1)  # (B, T, I)
    batch, steps = x.shape[:2]
    directions = 2 if module.bidirectional else 1
    state_shape = (directions, batch, module.hidden_size)
    h0 = _state(values.get("initial_h"), state_shape)
    c0 = _state(values.get("initial_c"), state_shape)
    lengths = values.get("sequence_lens")
    lengths = torch.full((batch,), steps) if lengths is None else torch.from_numpy(np.asarray(lengths, np.int64))
    if bool((lengths < 1).any()) or bool((lengths > steps).any()):
        raise GatescopeError(f"{entry.describe()}: sequence_lens {lengths.tolist()} must lie in 1..{steps}")
    given = x if bool((lengths == steps).all()) else pack_padded_sequence(x, lengths, batch_first=True,
                                                                           enforce_sorted=False)
    state = (h0, c0) if entry.op == "LSTM" else h0
    recorded, _ = _recorded(entry, module, given, state, steps)
    difference = _difference(entry, recorded, values, lengths)
    if difference > MAX_DIFFERENCE:
        raise GatescopeError(f"{entry.describe()}: gatescope's cells differ from onnxruntime's by {difference:.2g} "
                             f"(over {MAX_DIFFERENCE:g}); not recorded")
    outputs = {}
    if interventions:
        local = [dataclasses.replace(i, name=_local_name(i.name, module)) for i in interventions]
        recorded, (out, states) = _recorded(entry, module, given, state, steps, local)
        outputs = _node_outputs(entry, out, states, steps, directions)
    return NodeRun(module, recorded, lengths, difference, outputs)


def _local_name(name: str, module: torch.nn.Module) -> str:
    """A trace name (``rnn.l1.fwd.h``) as the node's own module records it (``lstm.l0.fwd.h``)."""
    from gatescope.names import root_name

    _, _, direction, kind = parse_name(name)
    return format_name(root_name(module), 0, direction, kind)


def _recorded(entry: RecurrentNode, module, given, state, steps: int, interventions=()):
    """``module`` run on ``given`` under record(): quantity (trace name) -> (B, T, H), and its output."""
    from gatescope.recorder.recording import record

    with torch.no_grad(), record(module, interventions=interventions) as rec:
        output = module(given, state)
    trace = rec.trace
    recorded = {}
    for name in trace.names:
        _, _, direction, kind = parse_name(name)
        padded = torch.nan_to_num(trace.padded(name), nan=0.0)  # (B, T_max, H)
        if padded.shape[1] < steps:
            padded = torch.cat([padded, padded.new_zeros(padded.shape[0], steps - padded.shape[1], padded.shape[2])], 1)
        recorded[format_name(entry.name, entry.layer, direction, kind)] = padded
    return recorded, output


def _node_outputs(entry: RecurrentNode, out, states, steps: int, directions: int) -> dict[str, np.ndarray]:
    """The node's Y [T, D, B, H], Y_h and Y_c [D, B, H] from its module's output (batch-first)."""
    from torch.nn.utils.rnn import PackedSequence, pad_packed_sequence

    if isinstance(out, PackedSequence):
        out = pad_packed_sequence(out, batch_first=True, total_length=steps)[0]
    batch = out.shape[0]
    y = out.reshape(batch, steps, directions, -1).permute(1, 2, 0, 3)  # (T, D, B, H)
    h_n, c_n = states if isinstance(states, tuple) else (states, None)
    arrays = {"Y": y, "Y_h": h_n, "Y_c": c_n}
    return {name: arrays[role].contiguous().numpy() for role, name in zip(OUTPUT_ROLES, entry.node.output)
            if name and arrays.get(role) is not None}


def _state(value, shape: tuple[int, ...]) -> torch.Tensor:
    if value is None:
        return torch.zeros(shape)
    return torch.from_numpy(np.broadcast_to(np.asarray(value, np.float32), shape).copy())


def _difference(entry: RecurrentNode, recorded: dict[str, torch.Tensor], values, lengths: torch.Tensor) -> float:
    """The largest |gatescope - onnxruntime| over h at every step (Y), the final h (Y_h) and c (Y_c)."""
    worst = 0.0
    batch = lengths.numel()
    rows = torch.arange(batch)
    last = lengths - 1
    for d, direction in enumerate(("fwd", "bwd")):
        h_name = format_name(entry.name, entry.layer, direction, "h")
        if h_name not in recorded:
            break
        h = recorded[h_name]  # (B, T, H)
        final = last if direction == "fwd" else torch.zeros_like(last)
        checks = []
        if "Y" in values:
            y = torch.from_numpy(np.asarray(values["Y"], np.float32))[:, d].transpose(0, 1)  # (B, T, H)
            checks.append((h, y))
        if "Y_h" in values:
            checks.append((h[rows, final], torch.from_numpy(np.asarray(values["Y_h"], np.float32))[d]))
        c_name = format_name(entry.name, entry.layer, direction, "c")
        if "Y_c" in values and c_name in recorded:
            checks.append((recorded[c_name][rows, final], torch.from_numpy(np.asarray(values["Y_c"], np.float32))[d]))
        for ours, theirs in checks:
            worst = max(worst, float((ours - theirs).abs().max()) if ours.numel() else 0.0)
    return worst


# -- the trace ---------------------------------------------------------------------------------------------
@dataclass
class GraphRecording:
    """What `record_graph` gives: the trace, and the graph's own outputs of each run (one, or one a chunk)."""

    trace: Trace
    outputs: list[dict[str, np.ndarray]]


def record_graph(
    graph: Graph,
    feeds: Mapping[str, np.ndarray],
    modules: Sequence[str] | None = None,
    kinds: Sequence[str] | None = None,
    chunking: Chunking | None = None,
    interventions: Sequence[Intervention] = (),
    dtype: torch.dtype = torch.float32,
    meta: Mapping[str, Any] | None = None,
) -> GraphRecording:
    """Record the recurrent nodes of ``graph`` over one run on ``feeds`` (graph input name -> array).

    modules: the module names to record (`RecurrentNode.name`; default every recordable node); kinds: the
    kinds to keep (default all); chunking: run chunk by chunk with the state carried (`Chunking`);
    interventions: `Intervention` edits named as in the trace (``rnn.l0.fwd.h``): each edited node is
    computed by gatescope under its edits, and its edited outputs are fed through the rest of the graph
    by onnxruntime (the nodes after it, recurrent or not, see the edit). The trace's metadata ``onnx``
    lists each node recorded with its largest difference from onnxruntime (of the unedited node).

    Returns a `GraphRecording`. Raises GatescopeError when a kind is unknown or computed by none of the
    chosen nodes (or none that the input runs: `check_kinds`), when a node's recording differs from
    onnxruntime's by more than `MAX_DIFFERENCE`, when the chosen nodes saw different sequences, or when
    nothing can be recorded."""
    entries = chosen_nodes(graph, modules)
    _check_kinds(kinds, entries)
    edits = _edits_by_node(entries, interventions)
    if edits and chunking is not None:
        raise GatescopeError("interventions apply to one run; a chunked run cannot take them")
    name_outputs(graph)
    runs: list[dict[int, NodeRun]] = []
    outputs: list[dict[str, np.ndarray]] = []
    for chunk_feeds in _chunks(graph, feeds, chunking):
        run, cuts = {}, {}
        for k in sorted(edits):  # entries are in graph order: each edit sees the edits before it
            _, node_values = run_nodes(graph, chunk_feeds, entries, cuts)
            if len(node_values.get(k, ())) > 1:
                raise GatescopeError(f"{entries[k].describe()} runs once per iteration of a Loop; gatescope "
                                     "edits nodes that run once")
            if k in node_values:
                run[k] = record_node(graph, entries[k], node_values[k][0], edits[k])
                cuts |= run[k].outputs
        own, node_values = run_nodes(graph, chunk_feeds, entries, cuts)
        run |= {k: _join([record_node(graph, entries[k], values) for values in calls])
                for k, calls in node_values.items() if k not in run}
        runs.append(run)
        outputs.append(own)
        if chunking is not None:
            missing = [out for out in chunking.carry if out not in own]
            if missing:
                raise GatescopeError(f"--carry {missing[0]}: not an output of the graph (it has: {', '.join(own)})")
            chunking.carried = {name: own[out] for out, name in chunking.carry.items()}
    recorded = [k for k in range(len(entries)) if all(k in run for run in runs)]
    if not recorded:
        raise GatescopeError("no recurrent node ran on this input (they sit in If branches it does not take)")
    _check_kinds(kinds, [entries[k] for k in recorded], "module this input runs")
    joined = {k: _join([run[k] for run in runs]) for k in recorded}
    values, lengths = _aligned(entries, joined)
    if kinds is not None:
        values = {n: v for n, v in values.items() if parse_name(n).kind in kinds}
    offsets = torch.cat([torch.zeros(1, dtype=torch.int64), lengths.cumsum(0)])
    tensors = {n: _rows(v, lengths).to(dtype) for n, v in values.items()}
    nodes = [{"node": entries[k].node_name, "module": entries[k].name, "layer": entries[k].layer,
              "where": entries[k].where, "calls": joined[k].calls, "max_difference": joined[k].difference}
             for k in recorded]
    info: dict[str, Any] = {"model": graph.path.name, "nodes": nodes, "runs": len(runs)}
    not_run = [entries[k].node_name for k in range(len(entries)) if k not in recorded]
    if not_run:
        info["not_run"] = not_run  # in an If branch this input does not take
    trace_meta = {"modules": _modules_meta(entries, joined), "onnx": info, **dict(meta or {})}
    trace = Trace(tensors, offsets, token_ids=_token_ids(feeds, lengths), meta=trace_meta)
    return GraphRecording(trace, outputs)


def _edits_by_node(entries: Sequence[RecurrentNode], interventions: Sequence[Intervention]
                   ) -> dict[int, list[Intervention]]:
    """Each intervention under the index of the node it edits; a name no chosen node records is an error."""
    by_node: dict[int, list[Intervention]] = {}
    for intervention in interventions:
        path, layer, direction, kind = parse_name(intervention.name)
        k = next((k for k, e in enumerate(entries) if e.name == path and e.layer == layer), None)
        if k is None:
            known = ", ".join(dict.fromkeys(f"{e.name}.l{e.layer}" for e in entries))
            raise GatescopeError(f"intervention on {intervention.name}: no recorded node is {path} layer {layer} "
                                 f"(the nodes: {known})")
        by_node.setdefault(k, []).append(intervention)
    return by_node


def _check_kinds(kinds: Sequence[str] | None, entries: Sequence[RecurrentNode],
                 selected: str = "selected module") -> None:
    """`check_kinds` over the modules of ``entries`` (a module's nodes are its layers)."""
    modules = dict.fromkeys(entry.name for entry in entries)
    of = {name: [entry for entry in entries if entry.name == name] for name in modules}
    computed = {name: tuple(dict.fromkeys(k for entry in of[name] for k in entry.kinds)) for name in modules}
    cells = {name: "/".join(dict.fromkeys(entry.op for entry in of[name])) for name in modules}
    check_kinds(kinds, computed, cells, selected)


def chosen_nodes(graph: Graph, modules: Sequence[str] | None) -> list[RecurrentNode]:
    """The nodes to record: those of ``modules`` (all must be recordable), else every recordable one."""
    if modules is not None:
        known = dict.fromkeys(e.name for e in graph.nodes)
        unknown = [m for m in modules if m not in known]
        if unknown:
            raise GatescopeError(f"no recurrent module {', '.join(unknown)}; the graph has: {', '.join(known)}")
        entries = [e for e in graph.nodes if e.name in modules]
        refused = next((e for e in entries if e.refusal), None)
        if refused is not None:
            raise GatescopeError(f"{refused.describe()} cannot be recorded: {refused.refusal}")
        return entries
    entries = [e for e in graph.nodes if e.refusal is None]
    if not entries:
        if not graph.nodes:
            raise GatescopeError(f"{graph.path} has no LSTM, GRU or RNN node")
        first = graph.nodes[0]
        raise GatescopeError(f"{first.describe()} cannot be recorded: {first.refusal}")
    for entry in graph.nodes:
        if entry.refusal:
            warn(f"{entry.describe()} is not recorded: {entry.refusal}")
    return entries


def _chunks(graph: Graph, feeds: Mapping[str, np.ndarray], chunking: Chunking | None):
    """The feeds of each run: ``feeds`` once, or chunk by chunk with the carried state."""
    if chunking is None:
        yield dict(feeds)
        return
    whole = np.asarray(feeds[chunking.input])
    axis = chunking.axis % whole.ndim
    steps = whole.shape[axis]
    count = steps // chunking.size
    if count == 0:
        raise GatescopeError(f"--chunk {chunking.size}: the input {chunking.input} has only {steps} "
                             f"values along axis {chunking.axis}")
    if steps % chunking.size:
        warn(f"the last {steps % chunking.size} values of {chunking.input} (less than one chunk of "
             f"{chunking.size}) are not run")
    chunking.carried = {}
    for c in range(count):
        piece = np.take(whole, np.arange(c * chunking.size, (c + 1) * chunking.size), axis=axis)
        yield dict(feeds) | chunking.carried | {chunking.input: piece}


def _join(runs: Sequence[NodeRun]) -> NodeRun:
    """Calls of one node that continue one another (chunks, Loop iterations) as one run, joined along time."""
    if len(runs) == 1:
        return runs[0]
    for run in runs:
        steps = next(iter(run.values.values())).shape[1]
        if not bool((run.lengths == steps).all()):
            raise GatescopeError("a node run in chunks or in a Loop must run every step of each call (no "
                                 "sequence_lens shorter than its input)")
        if run.lengths.shape != runs[0].lengths.shape:
            raise GatescopeError("the calls of a node in chunks or in a Loop must hold the same sequences")
    values = {name: torch.cat([run.values[name] for run in runs], dim=1) for name in runs[0].values}
    lengths = sum(run.lengths for run in runs)
    return NodeRun(runs[0].module, values, lengths, max(r.difference for r in runs), calls=sum(r.calls for r in runs))


def _aligned(entries: Sequence[RecurrentNode], runs: Mapping[int, NodeRun]
             ) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Every quantity of the nodes (B, T, H), once they are checked to have seen the same sequences; their lengths."""
    (first, head), *rest = runs.items()
    for k, run in rest:
        if not torch.equal(run.lengths, head.lengths):
            raise GatescopeError(
                f"{entries[first].describe()} and {entries[k].describe()} saw different sequences ({_shape(head)} "
                f"and {_shape(run)}); record them one at a time with --modules")
    return {name: value for run in runs.values() for name, value in run.values.items()}, head.lengths


def _shape(run: NodeRun) -> str:
    return f"{run.lengths.numel()} sequence(s) of {run.lengths.tolist()[:4]} steps"


def _rows(values: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """(B, T, H) -> (sum of lengths, H), sequence by sequence."""
    return torch.cat([values[b, : int(n)] for b, n in enumerate(lengths.tolist())])


def _modules_meta(entries: Sequence[RecurrentNode], runs: Mapping[int, NodeRun]) -> list[dict]:
    """The trace metadata's ``modules``: one entry per module name, its layers the nodes recorded."""
    out: dict[str, dict[str, Any]] = {}
    for k, run in runs.items():
        entry = entries[k]
        if entry.name not in out:
            out[entry.name] = module_info(entry.name, run.module)
        out[entry.name]["num_layers"] = max(out[entry.name]["num_layers"], entry.layer + 1)
    return list(out.values())


def _token_ids(feeds: Mapping[str, np.ndarray], lengths: torch.Tensor) -> torch.Tensor | None:
    """The model's integer input as token ids, when there is exactly one laid out [B, T] or [T, B] as recorded."""
    batch, steps = lengths.numel(), int(lengths.max())
    found = []
    for value in feeds.values():
        value = np.asarray(value)
        if value.ndim != 2 or value.dtype.kind not in "iu":
            continue
        if value.shape == (batch, steps):
            found.append(value)
        elif value.shape == (steps, batch):
            found.append(value.T)
    if len(found) != 1:
        return None
    ids = torch.from_numpy(np.ascontiguousarray(found[0]).astype(np.int64))
    return torch.cat([ids[b, : int(n)] for b, n in enumerate(lengths.tolist())])
