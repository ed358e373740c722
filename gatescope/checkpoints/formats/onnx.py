"""ONNX models with LSTM / GRU / RNN nodes, read with the onnx package (onnx.ai operator specs).

The graph is read as embedding (a Gather from a 2-D initializer) -> LSTM / GRU nodes -> decoder
(MatMul + Add or Gemm with initializers), with only shape plumbing between them (Transpose,
Reshape, Squeeze, Slice, ...); any other computing node is refused. Consecutive recurrent nodes of
one scope (``/rnn/LSTM``, ``/rnn/LSTM_1``, as torch.onnx.export writes a stacked module) become one
torch module with layers ``_l0``, ``_l1``. Converted to torch's layout (torch/nn/modules/rnn.py):

- LSTM: W [D, 4H, I], R [D, 4H, H] in gate order i, o, f, c (torch's i, f, g, o); B [D, 8H] = [Wb, Rb]
  -> ``bias_ih``, ``bias_hh``; peepholes P [D, 3H] in order i, o, f -> ``weight_ch`` (i, f, o).
- GRU: gate order z, r, h (torch's r, z, n); ``linear_before_reset=1`` is torch's GRU, ``0`` the
  original GRU of Cho et al. 2014.
- RNN: W [D, H, I], R [D, H, H], B [D, 2H].
- direction ``forward`` -> ``_l{k}``; ``bidirectional`` -> ``_l{k}`` and ``_l{k}_reverse``; ``reverse`` ->
  ``_l{k}_reverse`` alone: a module that runs the backward direction only (recorded as ``bwd``).

Each node's attributes make its cell type (`node_cell`, gatescope.kinds.CellType; the metadata key
``cells`` carries it to the loader), computed as onnxruntime computes them (its cpu/rnn kernels are the
reference; the spec leaves input_forget without a formula, and ONNX's reference evaluator ignores
activations, clip and input_forget): ``activations`` with ``activation_alpha`` / ``activation_beta``
consumed in order by the activations that read them, with onnxruntime's defaults where none is left
(LeakyRelu 0.01, HardSigmoid 0.2 and 0.5, Elu 1.0, every other 0: ThresholdedRelu's alpha is 0, not the
spec's 1.0); ``clip`` on every pre-activation after bias and peephole; ``input_forget=1`` as f = 1 - i (the
forget gate's W, R, B and P rows are not read).

An ``initial_h`` / ``initial_c`` stored in the file (an initializer or a Constant) that is not all zeros is a
learned initial state: [D, batch, H], the same for every sequence of the batch (a graph made for batch 1
stores one), it becomes the module's ``h0`` / ``c0`` [L * D, H] (zeros for the layers whose node has none),
named in the metadata roles (``initial_state``: gatescope.checkpoints.initial_state), and the model runs
every sequence from it, as onnxruntime runs the graph. One fed as a graph input or computed in the graph is said in a
note: read as a checkpoint, that model starts from zeros.

Refused with a one-line error: the two directions of a node with different activations, a stored initial
state whose rows differ across the batch (a state per sequence, not one learned state).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from gatescope.checkpoints.formats.converted import Converted, from_numpy, need
from gatescope.checkpoints.formats.onnx_zeros import always_zero
from gatescope.errors import GatescopeError
from gatescope.files import check_regular, reading
from gatescope.kinds import CELL_TYPES, Activation, CellType
from gatescope.recorder.variants import METADATA_KEY as CELLS
from gatescope.validation.limits import MAX_ONNX_BYTES

PLUMBING = frozenset({
    "Transpose", "Reshape", "Squeeze", "Unsqueeze", "Concat", "Slice", "Shape", "Constant", "ConstantOfShape",
    "Cast", "Identity", "Expand", "Dropout", "Flatten", "Size", "Range", "Split", "Gather",
})
OUTPUT_NOTES = {"Softmax": "softmax", "LogSoftmax": "log-softmax"}
RECURRENT_OPS = ("LSTM", "GRU", "RNN")
BLOCKS = {"LSTM": ("i", "o", "f", "g"), "GRU": ("z", "r", "n"), "RNN": ("h",)}  # W / R / B rows, as gatescope kinds
PEEPHOLE_BLOCKS = ("i", "o", "f")  # P's order
# the activations attribute's slots, in its order (ONNX f, g, h), as CellType fields; and their defaults
SLOTS = {"LSTM": ("gate_activation", "activation", "output_activation"), "GRU": ("gate_activation", "activation"),
         "RNN": ("activation",)}
DEFAULT_ACTIVATIONS = {"LSTM": ["Sigmoid", "Tanh", "Tanh"], "GRU": ["Sigmoid", "Tanh"], "RNN": ["Tanh"]}
ACTIVATION_NAMES = {  # ONNX's names, lower-cased as onnxruntime reads them -> gatescope.kinds' names
    "relu": "relu", "tanh": "tanh", "sigmoid": "sigmoid", "affine": "affine", "leakyrelu": "leaky_relu",
    "thresholdedrelu": "thresholded_relu", "scaledtanh": "scaled_tanh", "hardsigmoid": "hard_sigmoid", "elu": "elu",
    "softsign": "softsign", "softplus": "softplus",
}
ORT_DEFAULTS = {"leaky_relu": (0.01, 0.0), "hard_sigmoid": (0.2, 0.5), "elu": (1.0, 0.0)}  # onnxruntime's; else 0


def node_cell(op: str, attrs: dict[str, Any], peepholes: bool) -> CellType:
    """The cell type an LSTM / GRU / RNN node computes, from its attributes (``onnx.helper.get_attribute_value``
    values) and whether it has peephole weights; ValueError says what cannot be read."""
    directions = 2 if _text(attrs.get("direction", "forward")) == "bidirectional" else 1
    fields: dict[str, Any] = dict(zip(SLOTS[op], _activations(op, attrs, directions)))
    if "clip" in attrs:
        fields["clip"] = float(attrs["clip"])
    if op == "LSTM":
        fields["peepholes"] = peepholes
        if attrs.get("input_forget", 0):
            fields["coupling"] = "forget_from_input"
    if op == "GRU":
        fields["reset_after"] = bool(attrs.get("linear_before_reset", 0))
    return CELL_TYPES[op].variant(**fields)


def _activations(op: str, attrs: dict[str, Any], directions: int) -> tuple[Activation, ...]:
    """The node's activations (one per slot), with alpha / beta as onnxruntime assigns them."""
    names = [_text(a).lower() for a in attrs.get("activations", [])] or DEFAULT_ACTIVATIONS[op] * directions
    slots = len(SLOTS[op])
    if len(names) == slots and directions == 2:
        names = names * 2
    if len(names) != slots * directions:
        raise ValueError(f"has {len(names)} activations; expected {slots} per direction")
    alphas, betas = list(attrs.get("activation_alpha", [])), list(attrs.get("activation_beta", []))
    found = []
    for name in names:
        key = name.lower()
        if key not in ACTIVATION_NAMES:
            raise ValueError(f"uses activation {name!r}, which is not one of ONNX's")
        kind = ACTIVATION_NAMES[key]
        reads = {"affine": "ab", "scaled_tanh": "ab", "hard_sigmoid": "ab"}.get(kind, "a" if kind in (
            "leaky_relu", "thresholded_relu", "elu") else "")
        alpha, beta = ORT_DEFAULTS.get(kind, (0.0, 0.0))
        if "a" in reads and alphas:
            alpha = float(alphas.pop(0))
        if "b" in reads and betas:
            beta = float(betas.pop(0))
        found.append(Activation(kind, alpha if "a" in reads else 0.0, beta if "b" in reads else 0.0))
    if found[:slots] != found[slots:] and directions == 2:
        shown = ", ".join(map(str, found))
        raise ValueError(f"computes its two directions with different activations ({shown}); "
                         "a torch module has one cell for both")
    return tuple(found[:slots])


def node_weights(op: str, cell: CellType, w: np.ndarray, r: np.ndarray, b: np.ndarray | None,
                 p: np.ndarray | None, hidden: int) -> list[dict[str, np.ndarray]]:
    """Per direction, torch's parameters of one layer (``weight_ih`` ..., ``weight_ch``) from W, R, B, P, with
    the rows of ``cell.blocks`` (a coupled LSTM's forget rows are not read)."""
    order = [BLOCKS[op].index(kind) for kind in cell.blocks]
    gates = len(BLOCKS[op])
    out = []
    for d in range(w.shape[0]):
        tensors = {"weight_ih": _reorder(w[d], order, hidden), "weight_hh": _reorder(r[d], order, hidden)}
        if b is not None:
            tensors["bias_ih"] = _reorder(b[d, : gates * hidden], order, hidden)
            tensors["bias_hh"] = _reorder(b[d, gates * hidden :], order, hidden)
        if p is not None:
            tensors["weight_ch"] = _reorder(p[d], [PEEPHOLE_BLOCKS.index(k) for k in cell.peephole_kinds], hidden)
        out.append(tensors)
    return out


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


@dataclass
class _Module:
    """A torch module being assembled from one or more consecutive recurrent nodes."""

    name: str
    scope: str
    op: str
    hidden: int
    direction: str  # forward, reverse or bidirectional
    cell: CellType
    tensors: dict[str, np.ndarray] = field(default_factory=dict)
    layers: int = 0
    states: list[dict[str, np.ndarray]] = field(default_factory=list)  # each layer's stored h / c [D, H]

    def initial_states(self) -> dict[str, np.ndarray]:
        """h / c -> [L * D, H], torch's h0 layout, zeros for the layers whose node stores none."""
        out = {}
        for kind in ("h", "c"):
            given = [layer.get(kind) for layer in self.states]
            like = next((g for g in given if g is not None), None)
            if like is not None:
                out[kind] = np.concatenate([np.zeros_like(like) if g is None else g for g in given])
        return out


def read(path: Path) -> Converted:
    onnx = need("onnx", "ONNX files")
    return _Reader(path, load_model(path), onnx).convert()


def load_model(path: Path):
    """The ONNX model in ``path`` without its external data; a file over protobuf's 2 GB limit
    (`MAX_ONNX_BYTES`) is refused before it is read."""
    onnx = need("onnx", "ONNX files")
    size = check_regular(path, "ONNX model")
    if size > MAX_ONNX_BYTES:
        raise GatescopeError(f"{path} is {size} bytes; an ONNX model file holds at most {MAX_ONNX_BYTES} "
                             "(protobuf's limit: larger weights go in external data files)")
    with reading(path, "ONNX model"):
        try:
            return onnx.load(str(path), load_external_data=False)
        except OSError:
            raise
        except Exception as exc:  # protobuf's DecodeError and friends: the file is not an ONNX model
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise GatescopeError(f"{path} is not a readable ONNX model ({reason})") from None


class _Reader:
    def __init__(self, path: Path, model, onnx) -> None:
        self.path = path
        self.onnx = onnx
        self.graph = model.graph
        self.values: dict[str, np.ndarray] = {}
        for init in self.graph.initializer:
            self.values[init.name] = self._array(init)
        for node in self.graph.node:
            if node.op_type == "Constant":
                attr = next((a for a in node.attribute if a.name == "value"), None)
                if attr is not None:
                    self.values[node.output[0]] = self._array(attr.t)
        self.inputs = {i.name for i in self.graph.input} - set(self.values)
        self.notes: list[str] = []

    def _array(self, tensor) -> np.ndarray:
        from onnx import numpy_helper

        if tensor.data_location == self.onnx.TensorProto.EXTERNAL:
            raise GatescopeError(f"{self.path}: {tensor.name} is stored in an external data file; "
                                 "save the model with its weights inside (onnx.save(model, path))")
        return numpy_helper.to_array(tensor)

    def _attrs(self, node) -> dict[str, Any]:
        return {a.name: self.onnx.helper.get_attribute_value(a) for a in node.attribute}

    def fail(self, node, message: str) -> GatescopeError:
        return GatescopeError(f"{self.path}: {node.op_type} node {node.name or '(unnamed)'} {message}")

    def convert(self) -> Converted:
        tensors: dict[str, np.ndarray] = {}
        roles: dict[str, Any] = {"embedding": None, "recurrent": [], "decoder": None}
        modules: list[_Module] = []
        notes = self.notes
        pending_matmul = None  # (node, name, weight) of a MatMul waiting for its Add
        for node in self.graph.node:
            op = node.op_type
            if op in RECURRENT_OPS:
                if roles["decoder"] or pending_matmul:
                    raise self.fail(node, "follows the decoder; gatescope runs embedding -> recurrent -> decoder")
                self._recurrent(node, modules)
            elif op == "Gather" and self._weight_input(node, 0, dims=2) is not None:
                if modules or roles["embedding"]:
                    raise self.fail(node, "is a second embedding lookup; gatescope runs one embedding first")
                name = self._name(node, node.input[0], "embedding", ".weight")
                tensors[f"{name}.weight"] = self.values[node.input[0]]
                roles["embedding"] = f"{name}.weight"
            elif op == "MatMul" and (weight := self._weight_input(node, 1, dims=2)) is not None:
                self._check_decoder_place(node, modules, roles, pending_matmul)
                pending_matmul = (node, weight.T)  # (O, I)
            elif op == "Add" and pending_matmul and any(
                    self._weight_input(node, i, dims=1) is not None for i in (0, 1)):
                mat_node, weight = pending_matmul
                bias = next(self.values[i] for i in node.input if i in self.values and self.values[i].ndim == 1)
                bias_name = next(i for i in node.input if i in self.values)
                name = self._name(mat_node, bias_name, "decoder", ".bias")
                tensors[f"{name}.weight"], tensors[f"{name}.bias"] = weight, bias
                roles["decoder"], pending_matmul = name, None
            elif op == "Gemm" and self._weight_input(node, 1, dims=2) is not None:
                self._check_decoder_place(node, modules, roles, pending_matmul)
                name = self._gemm(node, tensors)
                roles["decoder"] = name
            elif op in OUTPUT_NOTES and roles["decoder"]:
                notes.append(f"the {OUTPUT_NOTES[op]} after the decoder is not applied: gatescope gives the logits")
            elif op in PLUMBING:
                if op == "Gather" and any(self.values.get(i, np.zeros(0)).ndim >= 2 for i in node.input):
                    raise self.fail(node, "gathers from a weight gatescope does not understand")
            else:
                raise self.fail(node, "is not one gatescope runs (it reads an embedding Gather, LSTM, GRU and "
                                      "RNN nodes, and a MatMul+Add or Gemm decoder)")
        if pending_matmul:
            node, weight = pending_matmul
            name = self._name(node, "", "decoder", ".weight")
            tensors[f"{name}.weight"] = weight
            roles["decoder"] = name
        if not modules:
            raise GatescopeError(f"{self.path} has no LSTM, GRU or RNN node")
        for module in modules:
            tensors.update({f"{module.name}.{k}": v for k, v in module.tensors.items()})
            roles["recurrent"].append(module.name)
            if states := module.initial_states():
                tensors.update({f"{module.name}.{kind}0": v for kind, v in states.items()})
                roles.setdefault("initial_state", {})[module.name] = {k: f"{module.name}.{k}0" for k in states}
        metadata: dict[str, Any] = {"roles": roles}
        cells = {m.name: {"cell": m.op, **m.cell.info()} for m in modules if m.cell != CELL_TYPES[m.op]}
        if cells:
            metadata[CELLS] = cells
        return Converted(from_numpy(tensors), metadata, "ONNX", notes)

    # -- pieces -----------------------------------------------------------------------------
    def _weight_input(self, node, index: int, dims: int) -> np.ndarray | None:
        if index >= len(node.input) or node.input[index] not in self.values:
            return None
        value = self.values[node.input[index]]
        return value if value.ndim == dims and np.issubdtype(value.dtype, np.floating) else None

    def _check_decoder_place(self, node, modules, roles, pending) -> None:
        if not modules:
            raise self.fail(node, "comes before any recurrent node (an input projection gatescope does not read)")
        if roles["decoder"] or pending:
            raise self.fail(node, "is a second linear layer after the recurrent nodes; gatescope runs one decoder")

    def _name(self, node, tensor_name: str, fallback: str, suffix: str) -> str:
        """A torch module name: from a torch-style tensor name (``decoder.bias``), else the node's scope."""
        if tensor_name.endswith(suffix) and "::" not in tensor_name:
            return tensor_name[: -len(suffix)]
        return self._scope(node) or fallback

    @staticmethod
    def _scope(node) -> str:
        """``/rnn/LSTM_1`` -> ``rnn``; names made of dotted identifiers."""
        parts = [p for p in node.name.split("/") if p][:-1]
        return ".".join(re.sub(r"\W", "_", p) for p in parts)

    def _gemm(self, node, tensors) -> str:
        attrs = self._attrs(node)
        if attrs.get("alpha", 1.0) != 1.0 or attrs.get("beta", 1.0) != 1.0 or attrs.get("transA", 0):
            raise self.fail(node, "has alpha, beta or transA set; gatescope reads a plain linear layer")
        weight = self.values[node.input[1]]
        weight = weight if attrs.get("transB", 0) else weight.T  # (O, I)
        bias = self.values.get(node.input[2]) if len(node.input) > 2 and node.input[2] else None
        name = self._name(node, node.input[1], "decoder", ".weight")
        tensors[f"{name}.weight"] = weight
        if bias is not None:
            if bias.shape != (weight.shape[0],):
                raise self.fail(node, f"has a bias of shape {list(bias.shape)}; expected [{weight.shape[0]}]")
            tensors[f"{name}.bias"] = bias
        return name

    def _recurrent(self, node, modules: list[_Module]) -> None:
        op, attrs = node.op_type, self._attrs(node)
        inputs = list(node.input) + [""] * (8 - len(node.input))
        direction = _text(attrs.get("direction", "forward"))
        if direction not in ("forward", "reverse", "bidirectional"):
            raise self.fail(node, f"has direction {direction!r}, not forward, reverse or bidirectional")
        directions = 2 if direction == "bidirectional" else 1
        p = None
        if op == "LSTM" and inputs[7]:
            p = self._weight_input(node, 7, dims=2)
            if p is None:
                raise self.fail(node, "has peephole weights P that are not stored in the file")
        try:
            cell = node_cell(op, attrs, peepholes=p is not None)
        except ValueError as exc:
            raise self.fail(node, str(exc)) from None
        stored = {}  # the initial states stored in the file, not all zeros
        for index, label in ((5, "initial_h"), (6, "initial_c")):
            if inputs[index] in self.values and np.any(self.values[inputs[index]]):
                stored[label] = self.values[inputs[index]]
            if inputs[index] in self.inputs:
                self.notes.append(f"{node.name or op}: {label} is an input of the graph; gatescope starts from zeros")
            elif inputs[index] and inputs[index] not in self.values and not always_zero(self.graph, inputs[index]):
                self.notes.append(f"{node.name or op}: {label} is computed in the graph; read as a checkpoint, the model "
                                  "starts from zeros (gatescope trace MODEL --input FILE records from the graph's own)")
        w, r = (self._weight_input(node, i, dims=3) for i in (1, 2))
        if w is None or r is None:
            raise self.fail(node, "has weights W and R that are not stored in the file")
        hidden = int(attrs.get("hidden_size", r.shape[-1]))
        gates = len(BLOCKS[op])
        if w.shape[:2] != (directions, gates * hidden) or r.shape != (directions, gates * hidden, hidden):
            rows = gates * hidden
            raise self.fail(node, f"has W {list(w.shape)} and R {list(r.shape)}; expected "
                                  f"[{directions}, {rows}, input] and [{directions}, {rows}, {hidden}]")
        b = self.values.get(inputs[3]) if inputs[3] else None
        if inputs[3] and b is None:
            raise self.fail(node, "has a bias B that is not stored in the file")
        if b is not None and b.shape != (directions, 2 * gates * hidden):
            raise self.fail(node, f"has B {list(b.shape)}; expected [{directions}, {2 * gates * hidden}]")
        if p is not None and p.shape != (directions, 3 * hidden):
            raise self.fail(node, f"has P {list(p.shape)}; expected [{directions}, {3 * hidden}]")
        if cell.coupled:
            self.notes.append(f"{node.name or op}: input_forget=1 computes f = 1 - i (as onnxruntime does); "
                              "the forget gate's weights are not read")
        module = self._module_for(node, modules, op, hidden, direction, cell, w.shape[-1])
        suffixes = ("_reverse",) if direction == "reverse" else ("", "_reverse")
        for suffix, tensors in zip(suffixes, node_weights(op, cell, w, r, b, p, hidden)):
            end = f"_l{module.layers}{suffix}"
            module.tensors.update({f"{k}{end}": v for k, v in tensors.items()})
        module.layers += 1
        module.states.append({label[-1]: self._initial_state(node, label, value, directions, hidden).astype(w.dtype)
                              for label, value in stored.items()})

    def _initial_state(self, node, label: str, value: np.ndarray, directions: int, hidden: int) -> np.ndarray:
        """A stored ``initial_h`` / ``initial_c`` [D, batch, H] as the one learned state [D, H] it is."""
        if value.ndim != 3 or value.shape[::2] != (directions, hidden) or not np.issubdtype(value.dtype, np.floating):
            raise self.fail(node, f"has an {label} of {value.dtype} {list(value.shape)}; expected float "
                                  f"[{directions}, batch, {hidden}]")
        if not np.array_equal(value, np.broadcast_to(value[:, :1], value.shape), equal_nan=True):
            raise self.fail(node, f"stores an {label} that differs across its batch of {value.shape[1]}: a state "
                                  "for each sequence, where gatescope runs every sequence from one learned "
                                  "initial state")
        return value[:, 0]

    def _module_for(self, node, modules, op, hidden, direction, cell, width) -> _Module:
        """The previous module when this node is its next layer (same scope, cell and sizes), else a new one."""
        scope = self._scope(node)
        last = modules[-1] if modules else None
        directions = 2 if direction == "bidirectional" else 1
        if (last is not None and scope and last.scope == scope and last.op == op and last.hidden == hidden
                and last.direction == direction and last.cell == cell and width == directions * hidden):
            return last
        taken = {m.name for m in modules}
        name = scope or op.lower()
        if name in taken:
            name = next(f"{name}_{i}" for i in range(1, len(modules) + 2) if f"{name}_{i}" not in taken)
        module = _Module(name, scope, op, hidden, direction, cell)
        modules.append(module)
        return module


def _reorder(rows: np.ndarray, order: list[int], hidden: int) -> np.ndarray:
    """Gate blocks of ``hidden`` rows put in torch's order."""
    return np.concatenate([rows[g * hidden : (g + 1) * hidden] for g in order])


def node_module(path: Path, node, values: dict[str, np.ndarray]) -> _Module:
    """One LSTM / GRU node as a torch module's tensors, by the mapping the reader uses for a whole graph.

    path: the model's file (for messages); values: the node's W, R, B (and P) by their input names, as a
    run of the graph computed them. Raises GatescopeError for what the mapping refuses, in one line."""
    onnx = need("onnx", "ONNX files")
    node = onnx.NodeProto.FromString(node.SerializeToString())
    for index in (5, 6):  # the initial state is the run's, not the mapping's
        if index < len(node.input):
            node.input[index] = ""
    reader = _Reader.__new__(_Reader)
    reader.path, reader.onnx, reader.values, reader.inputs, reader.notes = path, onnx, dict(values), set(), []
    modules: list[_Module] = []
    reader._recurrent(node, modules)
    return modules[0]
