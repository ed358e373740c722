"""The recurrent nodes of an ONNX graph: where they sit, what feeds them, whether they can be recorded.

Reads any ONNX model (onnx.ai's IR: a graph of nodes whose If / Loop / Scan nodes hold subgraphs)
and finds every LSTM, GRU and RNN node (onnx/defs/rnn/defs.cc), at the top level or inside a
branch of an If (``then_branch`` / ``else_branch``) or the body of a Loop or Scan, with its
attributes, the chain of nodes that computes its input X, and where its initial state comes from.
Nothing runs here: gatescope.runs.onnx_record runs the graph with onnxruntime.

The weights of a model saved with external data (``onnx.save(..., save_as_external_data=True)``, and
every file ``torch.onnx.export(..., dynamo=True)`` writes: ``model.onnx.data`` beside the model) are
read within the door's limits: the data file sits in the model's own folder (a plain file name, no
folder part, no symbolic link), and each tensor's offset and length lie inside it and match its
shape and type.

Names: a node is called by the torch module it came from where the exporter says so
(``pkg.torch.onnx.name_scopes`` of ``torch.onnx.export(dynamo=True)``; the scope ``/rnn/LSTM`` of the
TorchScript exporter gives ``rnn``), else by its own name; the recurrent nodes of one scope are the
layers ``l0``, ``l1``, ... of one module, in graph order, as torch.onnx.export writes a stacked module.
"""
from __future__ import annotations

import ast
import contextlib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from gatescope.checkpoints.formats.onnx_zeros import always_zero
from gatescope.errors import GatescopeError
from gatescope.files import open_regular
from gatescope.kinds import cell_type
from gatescope.validation.limits import MAX_NAME_CHARS

RECURRENT_OPS = ("LSTM", "GRU", "RNN")
QUANTIZED_OPS = ("DynamicQuantizeLSTM",)  # com.microsoft's contrib op (onnxruntime/core/graph/contrib_ops)
INPUT_ROLES = ("X", "W", "R", "B", "sequence_lens", "initial_h", "initial_c", "P")
OUTPUT_ROLES = ("Y", "Y_h", "Y_c")
SUBGRAPH_OPS = ("If", "Loop", "Scan")
PASS_THROUGH = frozenset({  # ops that move values without computing them: skipped when saying what feeds a node
    "Transpose", "Reshape", "Squeeze", "Unsqueeze", "Cast", "Identity", "Flatten", "Expand", "Dropout",
})


@dataclass
class RecurrentNode:
    """One LSTM / GRU / RNN node of the graph, as `find_nodes` found it."""

    node: Any  # the onnx NodeProto
    place: tuple[tuple[str, str], ...]  # the subgraphs it sits in: (If/Loop node name, then / else / body)
    name: str  # the module name its quantities are recorded under (``rnn``)
    layer: int  # its layer in that module
    attributes: dict[str, Any]
    inputs: dict[str, str]  # role (X, W, ...) -> value name, for the inputs given
    feeds: list[str]  # the nodes that compute X, nearest first (``Relu node_relu``), pass-through ops skipped
    states: dict[str, str]  # initial_h / initial_c -> where it comes from (zeros, graph input, computed, ...)
    refusal: str | None = None  # why it cannot be recorded (None: it can)

    @property
    def op(self) -> str:
        return self.node.op_type

    @property
    def kinds(self) -> tuple[str, ...]:
        """The kinds its recording holds (a recordable node's): its family's, with no projection (ONNX has none)."""
        return cell_type(self.op).kinds_for(proj_size=0)

    @property
    def node_name(self) -> str:
        return self.node.name or "(unnamed)"

    @property
    def where(self) -> str:
        """``top level`` or ``If /cond then > ...``."""
        return " > ".join(f"{kind} of {owner}" for owner, kind in self.place) or "top level"

    def describe(self) -> str:
        """``LSTM node /rnn/LSTM (rnn, layer 0)``, for messages."""
        return f"{self.op} node {self.node_name} ({self.name}, layer {self.layer})"

    def info(self) -> dict[str, Any]:
        """The node as `inspect --json` gives it."""
        return {
            "node": self.node_name, "op": self.op, "name": self.name, "layer": self.layer, "where": self.where,
            "attributes": self.attributes, "inputs": self.inputs, "feeds": self.feeds, "initial_state": self.states,
            "recordable": self.refusal is None, "refusal": self.refusal,
        }


@dataclass
class Graph:
    """An ONNX model read for its recurrent nodes."""

    path: Path
    model: Any  # the onnx ModelProto, external data read in
    nodes: list[RecurrentNode] = field(default_factory=list)
    runs: dict = field(default_factory=dict, repr=False)  # prepared runs (gatescope.runs.onnx_record's sessions)

    @property
    def inputs(self) -> dict[str, Any]:
        """The graph inputs a run must feed (initializers excluded) -> their ValueInfoProto."""
        stored = {i.name for i in self.model.graph.initializer}
        return {i.name: i for i in self.model.graph.input if i.name not in stored}


def onnx_package():
    from gatescope.checkpoints.formats.converted import need

    return need("onnx", "ONNX files")


def read_graph(path: str | os.PathLike) -> Graph:
    """The model at ``path`` with its external data read (checked) and its recurrent nodes found.

    Raises GatescopeError when the file is not an ONNX model or its external data is out of bounds."""
    from gatescope.checkpoints.formats.onnx import load_model

    path = Path(path)
    model = load_model(path)
    read_external_data(path, model)
    graph = Graph(path, model)
    graph.nodes = find_nodes(model)
    return graph


# -- external data -------------------------------------------------------------------------------
def _tensors(graph) -> list:
    """Every TensorProto of a graph and its subgraphs: initializers and Constant / attribute tensors."""
    onnx = onnx_package()
    found = list(graph.initializer)
    for node in graph.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.TENSOR:
                found.append(attr.t)
            elif attr.type == onnx.AttributeProto.TENSORS:
                found.extend(attr.tensors)
            elif attr.type == onnx.AttributeProto.GRAPH:
                found.extend(_tensors(attr.g))
            elif attr.type == onnx.AttributeProto.GRAPHS:
                for sub in attr.graphs:
                    found.extend(_tensors(sub))
    return found


def read_external_data(path: Path, model) -> None:
    """Read the external data of ``model`` (saved at ``path``) into its tensors, checking that each data
    file is a regular file in the model's folder (no link) and each tensor's bytes lie inside it."""
    onnx = onnx_package()
    with contextlib.ExitStack() as stack:
        files: dict[str, Any] = {}
        for tensor in _tensors(model.graph):
            if tensor.data_location != onnx.TensorProto.EXTERNAL:
                continue
            info = {e.key: e.value for e in tensor.external_data}
            location = info.get("location", "")
            where = f"{path}: tensor {tensor.name[:MAX_NAME_CHARS]!r} is stored in {location[:MAX_NAME_CHARS]!r}"
            if not location or Path(location).name != location or location in (".", ".."):
                raise GatescopeError(f"{where}, which is not a file beside the model (gatescope reads external "
                                     "data from the model's own folder only)")
            data_path = path.parent / location
            if data_path.is_symlink():
                raise GatescopeError(f"{where}, a symbolic link; gatescope reads no link out of the model's folder")
            if location not in files:
                files[location] = stack.enter_context(open_regular(data_path, "external data file"))
            f = files[location]
            size = os.fstat(f.fileno()).st_size
            try:
                offset = int(info.get("offset", 0))
                length = int(info["length"]) if "length" in info else size - offset
            except ValueError:
                raise GatescopeError(f"{where} at offset {info.get('offset')!r}, length {info.get('length')!r}, "
                                     "which are not numbers") from None
            if offset < 0 or length < 0 or offset + length > size:
                raise GatescopeError(f"{where} at bytes {offset}..{offset + length}, outside the file "
                                     f"({size} bytes)")
            expected = _nbytes(tensor)
            if expected is not None and length != expected:
                raise GatescopeError(f"{where} with {length} bytes; its type and shape "
                                     f"{list(tensor.dims)} take {expected}")
            f.seek(offset)
            tensor.raw_data = f.read(length)
            tensor.data_location = onnx.TensorProto.DEFAULT
            del tensor.external_data[:]


def _nbytes(tensor) -> int | None:
    """Bytes a tensor's raw data takes, or None for a type whose raw size is not fixed (strings, 4-bit)."""
    from onnx import helper

    try:
        dtype = np.dtype(helper.tensor_dtype_to_np_dtype(tensor.data_type))
    except (KeyError, TypeError, ValueError):
        return None
    if dtype.kind in "OUS" or tensor.data_type in _PACKED_TYPES():
        return None
    return int(np.prod(tensor.dims, dtype=np.int64)) * dtype.itemsize


def _PACKED_TYPES() -> frozenset[int]:  # 4-bit and 2-bit types: several values a byte
    from onnx import TensorProto

    return frozenset(getattr(TensorProto, n) for n in ("INT4", "UINT4", "FLOAT4E2M1", "INT2", "UINT2")
                     if hasattr(TensorProto, n))


# -- the recurrent nodes ---------------------------------------------------------------------------
def find_nodes(model) -> list[RecurrentNode]:
    """Every recurrent node of the model, in graph order (a subgraph's nodes where its owner sits)."""
    found: list[tuple[Any, tuple, dict, set, Any]] = []  # (node, place, producers, graph inputs, its graph)
    _walk(model.graph, (), {}, {i.name for i in model.graph.input}, found)
    nodes = []
    layers: dict[str, tuple[str, tuple, int]] = {}  # module name -> (op, place, layers so far)
    for node, place, producers, inputs, graph in found:
        attributes = _attributes(node)
        roles = {role: name for role, name in zip(INPUT_ROLES, node.input) if name}
        name = _module_name(node, len(nodes))
        op, where, count = layers.get(name, (node.op_type, place, 0))
        if (op, where) != (node.op_type, place):  # another cell, or another branch, under one scope: its own module
            name = _unique(name, layers)
            count = 0
        layers[name] = (node.op_type, place, count + 1)
        entry = RecurrentNode(node, place, name, count, attributes, roles, _feeds(roles.get("X"), producers, inputs),
                              _states(node, roles, producers, inputs, graph))
        entry.refusal = _refusal(entry)
        nodes.append(entry)
    return nodes


def _walk(graph, place: tuple, outer: dict, outer_inputs: set, found: list) -> None:
    producers = dict(outer)  # value name -> the node computing it (or an initializer's name -> "initializer")
    inputs = set(outer_inputs) | {i.name for i in graph.input}
    for value in graph.input if place else ():
        producers[value.name] = "body input"
    for init in graph.initializer:
        producers[init.name] = "initializer"
    for node in graph.node:
        if node.op_type in RECURRENT_OPS + QUANTIZED_OPS:
            found.append((node, place, dict(producers), set(inputs), graph))
        for attr in sorted(node.attribute, key=lambda a: a.name != "then_branch"):  # then before else
            subs = [attr.g] if attr.HasField("g") else list(attr.graphs)
            for sub in subs:
                kind = {"If": attr.name.removesuffix("_branch"), "Loop": "body"}.get(node.op_type,
                                                                                     f"{node.op_type} {attr.name}")
                _walk(sub, place + ((node.name or node.op_type, kind),), producers, inputs, found)
        for out in node.output:
            producers[out] = node


def _attributes(node) -> dict[str, Any]:
    from onnx import helper

    out = {}
    for attr in node.attribute:
        value = helper.get_attribute_value(attr)
        if isinstance(value, bytes):
            value = value.decode("utf-8", "replace")
        elif isinstance(value, list):
            value = [v.decode("utf-8", "replace") if isinstance(v, bytes) else v for v in value]
        out[attr.name] = value
    return out


def _module_name(node, index: int) -> str:
    """The module a node's quantities are named after (``rnn``), from the exporter's scope or the node's name."""
    for prop in node.metadata_props:
        if prop.key == "pkg.torch.onnx.name_scopes":
            try:
                scopes = [s for s in ast.literal_eval(prop.value) if s][:-1]  # the last is the aten op
            except (ValueError, SyntaxError):
                scopes = []
            if scopes:
                return ".".join(_identifier(s) for s in scopes)
    parts = [p for p in node.name.split("/") if p]
    if len(parts) > 1:  # TorchScript exporter: /rnn/LSTM_1 -> rnn
        return ".".join(_identifier(p) for p in parts[:-1])
    if parts:
        return _identifier(parts[0].removeprefix("node_"))
    return f"{node.op_type.lower()}_{index}"


def _identifier(part: str) -> str:
    cleaned = re.sub(r"\W", "_", part)[:100] or "_"
    return cleaned


def _unique(name: str, taken) -> str:
    if name not in taken:
        return name
    return next(f"{name}_{i}" for i in range(1, len(taken) + 2) if f"{name}_{i}" not in taken)


def _describe(producer, name: str, inputs: set) -> str | None:
    if producer == "initializer":
        return f"initializer {name}"
    if producer == "body input":
        return f"loop body input {name}"
    if producer is None:
        return f"graph input {name}" if name in inputs else f"value {name}"
    return None


def _feeds(value: str | None, producers: dict, inputs: set, most: int = 4) -> list[str]:
    """The computing nodes behind ``value``, nearest first (pass-through ops skipped), up to ``most``."""
    chain: list[str] = []
    seen = set()
    while value and len(chain) < most and value not in seen:
        seen.add(value)
        producer = producers.get(value)
        said = _describe(producer, value, inputs)
        if said is not None:
            chain.append(said)
            break
        if producer.op_type not in PASS_THROUGH:
            chain.append(f"{producer.op_type} {producer.name or '(unnamed)'}")
        if producer.op_type in SUBGRAPH_OPS:  # its inputs are a condition or a trip count, not what it gives
            break
        value = next((i for i in producer.input if i), None)
    return chain


def _states(node, roles: dict, producers: dict, inputs: set, graph) -> dict[str, str]:
    """Where each initial state comes from: zeros (not given), a graph input, an initializer, or computed
    (said to be zeros when it always is)."""
    kinds = ("initial_h", "initial_c") if node.op_type in ("LSTM", "DynamicQuantizeLSTM") else ("initial_h",)
    out = {}
    for role in kinds:
        value = roles.get(role)
        if value is None:
            out[role] = "zeros"
            continue
        producer = producers.get(value)
        said = _describe(producer, value, inputs)
        if said is None:
            said = f"computed by {producer.op_type} {producer.name or ''}".strip()
            said = f"zeros, {said}" if always_zero(graph, value) else said
        out[role] = said
    return out


def _refusal(entry: RecurrentNode) -> str | None:
    """Why the node cannot be recorded, in one line; None when it can (the cell mapping decides the rest)."""
    node, attrs = entry.node, entry.attributes
    if node.op_type in QUANTIZED_OPS:
        return (f"{node.op_type} (com.microsoft) computes with 8-bit weights; gatescope records float LSTM, GRU "
                "and RNN nodes only (export the model without dynamic quantization)")
    if node.domain not in ("", "ai.onnx"):
        return f"is an operator of domain {node.domain!r}, not the ONNX standard's"
    if attrs.get("layout", 0):
        return "has layout=1 (batch-major), which onnxruntime's CPU kernels refuse to run"
    scans = [owner for owner, kind in entry.place if kind not in ("then", "else", "body")]
    if scans:
        return (f"sits in the body of {scans[0]} (a Scan); gatescope records the recurrent nodes of the top level, "
                "of If branches and of Loop bodies")
    return _mapping_refusal(entry)


def _mapping_refusal(entry: RecurrentNode) -> str | None:
    """What the ONNX reader's node mapping (gatescope.checkpoints.formats.onnx) refuses in the node's
    attributes, tried on zero weights of the node's sizes (the weights themselves may be computed in the graph)."""
    from gatescope.checkpoints.formats import onnx as onnx_format
    from gatescope.kinds import CELL_TYPES

    if entry.op not in CELL_TYPES:
        return f"gatescope records {' and '.join(CELL_TYPES)} cells; there is no {entry.op} cell yet"
    attrs = entry.attributes
    hidden = int(attrs.get("hidden_size", 0))
    if hidden < 1:
        return "has no hidden_size attribute"
    directions = 2 if attrs.get("direction") == "bidirectional" else 1
    rows = CELL_TYPES[entry.op].gates * hidden
    shapes = {"W": (directions, rows, 1), "R": (directions, rows, hidden), "B": (directions, 2 * rows),
              "P": (directions, 3 * hidden)}
    weights = {name: np.zeros(shapes[role], np.float32) for role, name in entry.inputs.items() if role in shapes}
    try:
        onnx_format.node_module(Path("model.onnx"), entry.node, weights)
    except GatescopeError as exc:
        said = str(exc).removeprefix("model.onnx: ")
        return said.removeprefix(f"{entry.op} node {entry.node.name or '(unnamed)'} ")
    return None
