"""Recording the recurrent nodes of an ONNX graph: onnxruntime runs the graph, gatescope's cells compute the gates.

onnxruntime (onnxruntime.ai) runs the model as it is, with every LSTM / GRU node's inputs (X, W, R, B,
sequence_lens, initial_h, initial_c; onnx/defs/rnn/defs.cc) and outputs (Y, Y_h, Y_c) made extra graph
outputs, so whatever computes them (a convolutional front-end, an STFT, an Unsqueeze of the weights,
an initial state computed in the graph) is the graph's own. The recurrent nodes inside If branches are
recorded in the branch the run takes: a first run reads each If's condition, and the branch taken is put
in the If's place (inlined), repeatedly for nested Ifs, before the run that reads the nodes.

Each node then becomes a torch module through the ONNX reader's node mapping
(gatescope.checkpoints.formats.onnx: ONNX gate orders to torch's), and gatescope's recorder
(gatescope.recorder.recording.record) runs it on the node's own inputs and initial state, recording every
gate of every step. Its h at every step and its final h and c are checked against the node's own Y, Y_h
and Y_c from onnxruntime: the largest difference is kept in the trace's metadata, and one over
`MAX_DIFFERENCE` is a one-line refusal.

A stateful model (a voice detector whose h and c are graph inputs and outputs) runs chunk by chunk:
`Chunking` cuts one input along its time axis and feeds the named outputs of each chunk back as the
named inputs of the next; the recorded steps of the chunks join into one sequence per batch row.
"""
from __future__ import annotations

import copy
import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gatescope.checkpoints.formats import onnx_graph as graphs
from gatescope.checkpoints.formats.onnx_graph import INPUT_ROLES, OUTPUT_ROLES, Graph, RecurrentNode
from gatescope.errors import GatescopeError, warn
from gatescope.recorder.recordable import module_info
from gatescope.recorder.rnn import variant_info
from gatescope.names import format_name, parse_name
from gatescope.recorder.interventions import Intervention
from gatescope.traces.trace import Trace


MAX_DIFFERENCE = 1e-4  # largest |h - Y| (and c - Y_c) accepted between gatescope's cells and onnxruntime
GATESCOPE_PREFIX = "gatescope."  # names given to unnamed node outputs and inlined values


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


# -- running the graph ---------------------------------------------------------------------------------
def _session(model, names: Sequence[str]):
    """An onnxruntime session of ``model`` whose outputs are its own and ``names``."""
    from gatescope.checkpoints.formats.converted import need

    ort = need("onnxruntime", "ONNX graphs for recording")
    onnx = graphs.onnx_package()
    model = copy.deepcopy(model)
    present = {o.name for o in model.graph.output}
    model.graph.output.extend(onnx.ValueInfoProto(name=n) for n in dict.fromkeys(names) if n not in present)
    options = ort.SessionOptions()
    options.log_severity_level = 3
    try:
        return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime's Fail / InvalidGraph / NotImplemented: one line
        raise GatescopeError(f"onnxruntime cannot load the model ({_first_line(exc)})") from None


def _run(model, feeds: Mapping[str, np.ndarray], names: Sequence[str], cache: dict | None = None,
         key: Any = None) -> dict[str, np.ndarray]:
    """The values ``names`` of one run of ``model`` on ``feeds`` (graph inputs, initializers and
    Constants read directly), and the graph's own outputs. The session is kept in ``cache`` under
    ``key`` (what identifies ``model``) and the names, for the next run of the same model (chunks)."""
    from onnx import numpy_helper

    known: dict[str, np.ndarray] = dict(feeds)
    for init in model.graph.initializer:
        if init.name in names:
            known[init.name] = numpy_helper.to_array(init)
    for node in model.graph.node:
        if node.op_type == "Constant" and node.output[0] in names and node.attribute[0].name == "value":
            known[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
    wanted = [n for n in names if n not in known]
    if cache is None:
        session = _session(model, wanted)
    else:
        session = cache.get(("session", key, tuple(wanted)))
        if session is None:
            session = cache[("session", key, tuple(wanted))] = _session(model, wanted)
    outputs = [o.name for o in session.get_outputs()]
    try:
        values = session.run(None, dict(feeds))
    except Exception as exc:
        raise GatescopeError(f"onnxruntime cannot run the model on this input ({_first_line(exc)})") from None
    return known | dict(zip(outputs, values))


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else type(exc).__name__


def _holds_recurrent(node) -> bool:
    for attr in node.attribute:
        for sub in [attr.g] if attr.HasField("g") else list(attr.graphs):
            for inner in sub.node:
                if inner.op_type in graphs.RECURRENT_OPS or _holds_recurrent(inner):
                    return True
    return False


def _names_defined(graph, skip=None) -> set[str]:
    """Every value name defined in ``graph`` and its subgraphs (but those of node ``skip``)."""
    names = {i.name for i in graph.input} | {i.name for i in graph.initializer}
    for node in graph.node:
        names.update(node.output)
        if node is skip:
            continue
        for attr in node.attribute:
            for sub in [attr.g] if attr.HasField("g") else list(attr.graphs):
                names |= _names_defined(sub)
    return names


def _renamed(node, rename: Mapping[str, str]):
    """A copy of ``node`` with its values renamed (also where its subgraphs read them)."""
    node = copy.deepcopy(node)
    node.input[:] = [rename.get(n, n) for n in node.input]
    node.output[:] = [rename.get(n, n) for n in node.output]
    for attr in node.attribute:
        for sub in [attr.g] if attr.HasField("g") else list(attr.graphs):
            for inner in sub.node:
                inner.CopyFrom(_renamed(inner, rename))
    return node


def _fresh(names: set[str], taken: set[str], prefix: str) -> dict[str, str]:
    """New names (``gatescope.<prefix>.<name>``) for the ``names`` that are ``taken``; the new names join ``taken``."""
    rename = {}
    for name in sorted(names):
        if name in taken:
            fresh = f"{GATESCOPE_PREFIX}{prefix}.{name}"
            while fresh in taken:
                fresh += "_"
            rename[name] = fresh
            taken.add(fresh)
    return rename


def _defined_in(body) -> set[str]:
    """The values a subgraph defines itself: its inputs, initializers and node outputs."""
    return ({i.name for i in body.input} | {i.name for i in body.initializer}
            | {o for n in body.node for o in n.output if o})


def _splice(graph, owner, nodes: list, initializers: list) -> None:
    """Put ``nodes`` in the place of node ``owner`` and add ``initializers`` to the graph."""
    graph.initializer.extend(initializers)
    kept = list(graph.node)
    position = kept.index(owner)
    kept[position:position + 1] = nodes
    del graph.node[:]
    graph.node.extend(kept)


def _copied(body, rename: Mapping[str, str], prefix: str = "") -> tuple[list, list]:
    """The nodes and initializers of ``body`` with ``rename`` applied (and named nodes' names prefixed)."""
    nodes = [_renamed(n, rename) for n in body.node]
    for node in nodes:
        if node.name and prefix:
            node.name = f"{GATESCOPE_PREFIX}{prefix}.{node.name}"
    initializers = []
    for init in body.initializer:
        init = copy.deepcopy(init)
        init.name = rename.get(init.name, init.name)
        initializers.append(init)
    return nodes, initializers


def _inline(model, if_node, then: bool) -> dict[str, list[str]]:
    """Put the branch of ``if_node`` the run takes in its place: its nodes and initializers join the
    graph (renamed where a name is taken), and Identity nodes give the If's outputs. Returns the renames."""
    from onnx import helper

    branch = next(a.g for a in if_node.attribute if a.name == ("then_branch" if then else "else_branch"))
    rename = _fresh(_defined_in(branch), _names_defined(model.graph, skip=if_node), if_node.name or "If")
    nodes, initializers = _copied(branch, rename)
    for out, value in zip(if_node.output, branch.output):
        if out:
            nodes.append(helper.make_node("Identity", [rename.get(value.name, value.name)], [out]))
    _splice(model.graph, if_node, nodes, initializers)
    return {old: [new] for old, new in rename.items()}


def _unroll(model, loop, iterations: int) -> dict[str, list[str]]:
    """Put ``iterations`` copies of the body of Loop node ``loop`` in its place, each iteration's values
    renamed (``gatescope.<loop>.<k>.<name>``), its state threaded from one copy to the next and its scan
    outputs concatenated. Returns the renames: a body value -> its name in each iteration."""
    from onnx import TensorProto, helper, numpy_helper

    body = next(a.g for a in loop.attribute if a.name == "body")
    carried = len(loop.input) - 2
    taken = _names_defined(model.graph, skip=loop)
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 13)
    nodes, initializers, copies = [], [], {}
    state = list(loop.input[2:])
    condition = loop.input[1] if len(loop.input) > 1 else ""
    scans: list[list[str]] = [[] for _ in body.output[1 + carried:]]
    prefix = loop.name or "Loop"
    defined = _defined_in(body)
    for k in range(iterations):
        rename = _fresh(defined, taken | defined, f"{prefix}.{k}")
        for name in defined:
            copies.setdefault(name, []).append(rename[name])
        inputs = [i.name for i in body.input]
        nodes.append(helper.make_node("Constant", [], [rename[inputs[0]]],
                                      value=helper.make_tensor("k", TensorProto.INT64, [], [k])))
        if len(inputs) > 1:
            nodes.append(helper.make_node("Identity", [condition], [rename[inputs[1]]]) if condition else
                         helper.make_node("Constant", [], [rename[inputs[1]]],
                                          value=helper.make_tensor("c", TensorProto.BOOL, [], [True])))
        nodes += [helper.make_node("Identity", [given], [rename[name]]) for given, name in zip(state, inputs[2:])]
        body_nodes, body_inits = _copied(body, rename, f"{prefix}.{k}")
        nodes += body_nodes
        initializers += body_inits
        outputs = [rename.get(o.name, o.name) for o in body.output]
        condition, state = outputs[0], outputs[1:1 + carried]
        for j, name in enumerate(outputs[1 + carried:]):
            scans[j].append(name)
    nodes += [helper.make_node("Identity", [given], [out]) for given, out in zip(state, loop.output[:carried]) if out]
    axes = f"{GATESCOPE_PREFIX}{prefix}.axes"
    initializers.append(numpy_helper.from_array(np.array([0], np.int64), axes))
    for out, pieces in zip(loop.output[carried:], scans):
        if not out:
            continue
        stacked = []
        for name in pieces:
            nodes.append(helper.make_node("Unsqueeze", [name, axes] if opset >= 13 else [name], [f"{name}.stacked"],
                                          **({} if opset >= 13 else {"axes": [0]})))
            stacked.append(f"{name}.stacked")
        nodes.append(helper.make_node("Concat", stacked, [out], axis=0))
    _splice(model.graph, loop, nodes, initializers)
    return copies


def _iterations_name(loop) -> str:
    return f"{GATESCOPE_PREFIX}{loop.name or 'Loop'}.iterations"


def _counting(model, loops: Sequence[Any]):
    """A copy of ``model`` whose Loops ``loops`` also give their iteration numbers as a scan output."""
    from onnx import helper

    model = copy.deepcopy(model)
    for node in model.graph.node:
        if any(node.name == loop.name and list(node.output) == list(loop.output) for loop in loops):
            body = next(a.g for a in node.attribute if a.name == "body")
            name = _iterations_name(node)
            body.node.append(helper.make_node("Identity", [body.input[0].name], [name]))
            body.output.append(helper.make_tensor_value_info(name, helper.TensorProto.INT64, []))
            node.output.append(name)
    return model


def _expanded(model, feeds: Mapping[str, np.ndarray], cache: dict) -> tuple[Any, dict[str, list[str]], tuple]:
    """``model`` with every If that holds a recurrent node replaced by the branch this run takes, and every
    such Loop by its iterations, unrolled; the names each original value has in it (one name, or one
    an iteration); and the decisions taken (branches, iteration counts), which identify the result.
    Expanded models and their sessions are kept in ``cache`` by those decisions (never changed once there)."""
    key: tuple = ()
    if ("model", key) not in cache:
        cache[("model", key)] = (model, {})
    while True:
        model, copies = cache[("model", key)]
        owners = [n for n in model.graph.node if n.op_type in ("If", "Loop") and _holds_recurrent(n)]
        if not owners:
            return model, copies, key
        ifs = [n for n in owners if n.op_type == "If"]
        loops = [n for n in owners if n.op_type == "Loop"]
        if ("counted", key) not in cache:
            cache[("counted", key)] = _counting(model, loops) if loops else model
        names = [n.input[0] for n in ifs] + [_iterations_name(n) for n in loops]
        values = _run(cache[("counted", key)], feeds, names, cache, ("counted", key))
        decisions = []
        for node in owners:
            if node.op_type == "If":
                condition = np.asarray(values[node.input[0]])
                if condition.size != 1:
                    raise GatescopeError(f"If node {node.name}: its condition has {condition.size} values, not one")
                decisions.append(bool(condition.reshape(())))
            else:
                decisions.append(int(np.asarray(values[_iterations_name(node)]).shape[0]))
        step = key + (tuple(decisions),)
        if ("model", step) not in cache:
            cache[("model", step)] = _expand(model, copies, owners, decisions)
        key = step


def _expand(model, copies: dict[str, list[str]], owners: Sequence[Any], decisions: Sequence[bool | int]
            ) -> tuple[Any, dict[str, list[str]]]:
    """A copy of ``model`` with each If of ``owners`` inlined (its decision: the branch) and each Loop unrolled
    (its decision: the iterations), and the names of the original values in it."""
    positions = [next(i for i, n in enumerate(model.graph.node) if n is owner) for owner in owners]
    model = copy.deepcopy(model)
    for position, decision in sorted(zip(positions, decisions), reverse=True):  # later ones first: positions hold
        node = model.graph.node[position]
        made = _inline(model, node, decision) if node.op_type == "If" else _unroll(model, node, decision)
        copies = {old: [m for n in names for m in made.get(n, [n])] for old, names in copies.items()}
        copies |= {old: names for old, names in made.items() if old not in copies}
    return model, copies


def name_outputs(graph: Graph) -> None:
    """Give every recurrent node's unnamed outputs a name (``gatescope.node3.Y_c``), so that they can be read."""
    for k, entry in enumerate(graph.nodes):
        node = entry.node
        count = 3 if node.op_type in ("LSTM",) else 2
        while len(node.output) < count:
            node.output.append("")
        for i, role in enumerate(OUTPUT_ROLES[:count]):
            if not node.output[i]:
                node.output[i] = f"{GATESCOPE_PREFIX}node{k}.{role}"


def run_nodes(graph: Graph, feeds: Mapping[str, np.ndarray], entries: Sequence[RecurrentNode],
              cuts: Mapping[str, np.ndarray] | None = None,
              ) -> tuple[dict[str, np.ndarray], dict[int, list[dict[str, np.ndarray]]]]:
    """One run of the graph: its outputs, and each entry's inputs and outputs by role, one dict for
    each time the node ran (once; or once an iteration in a Loop body), under the entry's index.

    An entry in an If branch the run does not take is left out. ``cuts``: values that replace what
    computes them (the outputs of an edited node: the node leaves the graph and they are fed in), so
    that the rest of the graph runs on the edited values."""
    model, copies, key = _expanded(graph.model, feeds, graph.runs)
    feeds = dict(feeds)
    if cuts:
        model = copy.deepcopy(model)
        feeds |= _cut(model, {n: v for name, v in cuts.items() for n in copies.get(name, [name])})
        key += (("cut", tuple(sorted(cuts))),)
    present = {o for n in model.graph.node if n.op_type in graphs.RECURRENT_OPS for o in n.output}
    calls: dict[int, list[dict[str, str]]] = {}
    for k, entry in enumerate(entries):
        roles = dict(zip(INPUT_ROLES, entry.node.input)) | dict(zip(OUTPUT_ROLES, entry.node.output))
        names = {role: copies.get(name, [name]) for role, name in roles.items() if name}
        count = sum(n in present for n in names["Y"])
        if count:
            calls[k] = [{role: ns[c] if len(ns) > 1 else ns[0] for role, ns in names.items()} for c in range(count)]
    values = _run(model, feeds, [n for call in calls.values() for names in call for n in names.values()],
                  graph.runs, key)
    own = {o.name: values[o.name] for o in graph.model.graph.output if o.name in values}
    nodes = {k: [{role: values[name] for role, name in names.items()} for names in call] for k, call in calls.items()}
    return own, nodes


def _cut(model, values: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Remove the nodes computing ``values`` from ``model`` and make those values graph inputs; the feeds."""
    from onnx import helper

    kept = [n for n in model.graph.node if not set(n.output) & set(values)]
    del model.graph.node[:]
    model.graph.node.extend(kept)
    for name, value in values.items():
        elem = helper.np_dtype_to_tensor_dtype(np.asarray(value).dtype)
        model.graph.input.append(helper.make_tensor_value_info(name, elem, None))
    return dict(values)


# -- the cells --------------------------------------------------------------------------------------------
def node_module(graph: Graph, entry: RecurrentNode, values: Mapping[str, np.ndarray]) -> torch.nn.Module:
    """The torch module that computes ``entry`` with its run's weights (the ONNX reader's node mapping)."""
    from gatescope.checkpoints.discovery import discover_recurrent
    from gatescope.checkpoints.formats import onnx as onnx_format
    from gatescope.checkpoints.loader import _build_recurrent

    weights = {entry.node.input[i]: values[role] for i, role in enumerate(INPUT_ROLES)
               if role in ("W", "R", "B", "P") and role in values}
    module = onnx_format.node_module(graph.path, entry.node, weights)
    tensors = {f"{module.name}.{k}": torch.from_numpy(np.array(v, dtype=np.float32)) for k, v in module.tensors.items()}
    (spec,) = discover_recurrent({k: tuple(v.shape) for k, v in tensors.items()})
    built = _build_recurrent(spec, reset_after=module.reset_after)
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

    Returns a `GraphRecording`. Raises GatescopeError when a node's recording differs from onnxruntime's
    by more than `MAX_DIFFERENCE`, when the chosen nodes saw different sequences, or when nothing can be
    recorded."""
    entries = chosen_nodes(graph, modules)
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
            out[entry.name] = module_info(entry.name, run.module) | variant_info(run.module)
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


# -- the command line's inputs and report ------------------------------------------------------------------
def parse_pair(value: str, option: str) -> tuple[str, str]:
    """``A=B`` -> (A, B); anything else is a one-line error naming ``option``."""
    left, sep, right = value.partition("=")
    if not sep or not left or not right:
        raise GatescopeError(f"{option} {value}: expected NAME=VALUE")
    return left, right


def input_types(graph: Graph) -> dict[str, tuple[np.dtype | None, list[int | str]]]:
    """Each graph input a run feeds -> (numpy dtype or None when unknown, its shape with named dimensions)."""
    from onnx import helper

    out = {}
    for name, value in graph.inputs.items():
        tensor = value.type.tensor_type
        try:
            dtype = np.dtype(helper.tensor_dtype_to_np_dtype(tensor.elem_type)) if tensor.elem_type else None
        except (KeyError, TypeError, ValueError):
            dtype = None
        shape = [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in tensor.shape.dim]
        out[name] = (dtype, shape)
    return out


def read_feeds(graph: Graph, given: Sequence[str], carried: Sequence[str] = ()) -> dict[str, np.ndarray]:
    """The graph's inputs from ``--input`` values: ``NAME=FILE`` (or ``NAME=NUMBER`` for a scalar), or a bare
    FILE for the first graph input no other value names. FILE is .npy (never unpickled) or .safetensors
    (one tensor); each array is cast to the type the graph declares. An input in ``carried`` (the
    state a chunked run carries) that is not given starts as zeros of its declared shape. The inputs
    come in the order given (so the first is the one ``--chunk`` cuts), then the zeros."""
    types = input_types(graph)
    assigned: list[tuple[str | None, str]] = []  # (graph input or None for a bare file, text), in the given order
    for value in given:
        name, sep, rest = value.partition("=")
        assigned.append((name, rest) if sep and name in types else (None, value))
    names = [n for n, _ in assigned if n is not None]
    twice = next((n for n in names if names.count(n) > 1), None)
    if twice is not None:
        raise GatescopeError(f"--input {twice} is given twice")
    free = iter([n for n in types if n not in names])
    feeds: dict[str, np.ndarray] = {}
    for name, text in assigned:
        name = name or next(free, None)
        if name is None:
            raise GatescopeError(f"--input {text}: the graph's inputs are {', '.join(types)}, all given; "
                                 "name each with NAME=FILE")
        feeds[name] = _read_value(name, text, types[name][0])
    for name in types:
        if name in feeds:
            continue
        dtype, shape = types[name]
        if name in carried and all(isinstance(d, int) for d in shape):
            feeds[name] = np.zeros(shape, dtype or np.float32)
            continue
        described = f"{dtype or 'a tensor'} {shape}"
        raise GatescopeError(f"the graph also takes {name} ({described}); give it with --input {name}=FILE")
    return feeds


def _read_value(name: str, text: str, dtype: np.dtype | None) -> np.ndarray:
    from gatescope.inputs.corpus import _read_npy, _read_safetensors

    path = Path(text)
    if not path.exists() and _number(text) is not None:
        array = np.asarray(_number(text))
    elif path.suffix.lower() == ".npy":
        array = _read_npy(path)[0]
    elif path.suffix.lower() == ".safetensors":
        array = _read_safetensors(path)[0]
    else:
        raise GatescopeError(f"--input {name}={text}: give a .npy or .safetensors file (or a number)")
    if array.dtype.kind not in "biuf":
        raise GatescopeError(f"--input {name}={text}: holds {array.dtype} values, not numbers")
    if dtype is None:
        return array
    if dtype.kind in "iub" and array.dtype.kind == "f" and not np.array_equal(array, np.round(array)):
        raise GatescopeError(f"--input {name}={text}: the graph takes {dtype} values, the file holds fractions")
    return array.astype(dtype)


def _number(text: str) -> int | float | bool | None:
    lowered = text.strip().lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return None


def graph_report(graph: Graph, recording: GraphRecording | None = None) -> dict[str, Any]:
    """What `inspect` says of an ONNX graph: its inputs and each recurrent node (`RecurrentNode.info`), and
    with a recording, each node's largest difference from onnxruntime and how many steps it ran."""
    types = input_types(graph)
    report: dict[str, Any] = {
        "inputs": {n: {"type": str(t) if t is not None else None, "shape": s} for n, (t, s) in types.items()},
        "outputs": [o.name for o in graph.model.graph.output],
        "nodes": [entry.info() for entry in graph.nodes],
    }
    if recording is not None:
        ran = {(n["node"], n["module"], n["layer"]): n for n in recording.trace.meta["onnx"]["nodes"]}
        for info in report["nodes"]:
            done = ran.get((info["node"], info["name"], info["layer"]))
            info["max_difference"] = None if done is None else done["max_difference"]
            info["calls"] = None if done is None else done["calls"]
    return report
