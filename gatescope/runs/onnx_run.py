"""onnxruntime runs an ONNX graph with the recurrent nodes' inputs and outputs exposed, If branches and Loops expanded.

Every LSTM / GRU node's inputs (X, W, R, B, sequence_lens, initial_h, initial_c; onnx/defs/rnn/defs.cc) and
outputs (Y, Y_h, Y_c) become extra graph outputs of an onnxruntime (onnxruntime.ai) session, so whatever
computes them (a convolutional front-end, an STFT, an Unsqueeze of the weights, an initial state computed
in the graph) is the graph's own computation. A value inside a subgraph cannot be a graph output, so the
subgraphs that hold recurrent nodes are expanded first, as the run takes them: a run reads each If's
condition and the branch taken is put in the If's place (inlined); a run counts each Loop's iterations
(an extra scan output of the iteration number) and the body is unrolled that many times, its state
threaded from copy to copy and its scan outputs concatenated. Nested subgraphs expand in turn.

An edited node (`run_nodes` ``cuts``) leaves the graph and its outputs become graph inputs, so that
onnxruntime runs the rest of the graph on the edited values. Expanded models and sessions are kept on the
`Graph` (``runs``) by the decisions that made them, so a model run chunk by chunk pays for them once.
"""
from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from gatescope.checkpoints.formats import onnx_graph as graphs
from gatescope.checkpoints.formats.onnx_graph import INPUT_ROLES, OUTPUT_ROLES, Graph, RecurrentNode
from gatescope.errors import GatescopeError

GATESCOPE_PREFIX = "gatescope."  # names given to unnamed node outputs and to inlined and unrolled values


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
