"""ONNX models with LSTM / GRU nodes, read with the onnx package (onnx.ai operator specs).

The graph is read as embedding (a Gather from a 2-D initializer) -> LSTM / GRU nodes -> decoder
(MatMul + Add or Gemm with initializers), with only shape plumbing between them (Transpose,
Reshape, Squeeze, Slice, ...); any other computing node is refused. Consecutive recurrent nodes of
one scope (``/rnn/LSTM``, ``/rnn/LSTM_1``, as torch.onnx.export writes a stacked module) become one
torch module with layers ``_l0``, ``_l1``. Converted to torch's layout (torch/nn/modules/rnn.py):

- LSTM: W [D, 4H, I], R [D, 4H, H] in gate order i, o, f, c (torch's i, f, g, o); B [D, 8H] = [Wb, Rb]
  -> ``bias_ih``, ``bias_hh``.
- GRU: gate order z, r, h (torch's r, z, n); ``linear_before_reset=1`` is torch's GRU, ``0`` the
  original GRU of Cho et al. 2014 (gatescope.recorder.rnn).
- direction ``forward`` -> ``_l{k}``; ``bidirectional`` -> ``_l{k}`` and ``_l{k}_reverse``.

Refused with a one-line error: direction ``reverse`` alone (torch's modules have no such module),
peepholes (input P), ``clip``, ``input_forget``, activations other than the defaults, a non-zero
initial state stored in the file.
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
from gatescope.recorder.rnn import METADATA_KEY as RESET_BEFORE

PLUMBING = frozenset({
    "Transpose", "Reshape", "Squeeze", "Unsqueeze", "Concat", "Slice", "Shape", "Constant", "ConstantOfShape",
    "Cast", "Identity", "Expand", "Dropout", "Flatten", "Size", "Range", "Split", "Gather",
})
OUTPUT_NOTES = {"Softmax": "softmax", "LogSoftmax": "log-softmax"}
LSTM_ORDER = (0, 2, 3, 1)  # ONNX i, o, f, c -> torch i, f, g, o
GRU_ORDER = (1, 0, 2)  # ONNX z, r, h -> torch r, z, n
DEFAULT_ACTIVATIONS = {"LSTM": ["Sigmoid", "Tanh", "Tanh"], "GRU": ["Sigmoid", "Tanh"]}


@dataclass
class _Module:
    """A torch module being assembled from one or more consecutive recurrent nodes."""

    name: str
    scope: str
    op: str
    hidden: int
    directions: int
    reset_after: bool
    tensors: dict[str, np.ndarray] = field(default_factory=dict)
    layers: int = 0


def read(path: Path) -> Converted:
    onnx = need("onnx", "ONNX files")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf's DecodeError and friends: the file is not an ONNX model
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise GatescopeError(f"{path} is not a readable ONNX model ({reason})") from None
    return _Reader(path, model, onnx).convert()


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
            if op in ("LSTM", "GRU"):
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
                raise self.fail(node, "is not one gatescope runs (it reads an embedding Gather, LSTM and GRU "
                                      "nodes, and a MatMul+Add or Gemm decoder)")
        if pending_matmul:
            node, weight = pending_matmul
            name = self._name(node, "", "decoder", ".weight")
            tensors[f"{name}.weight"] = weight
            roles["decoder"] = name
        if not modules:
            raise GatescopeError(f"{self.path} has no LSTM or GRU node")
        for module in modules:
            tensors.update({f"{module.name}.{k}": v for k, v in module.tensors.items()})
            roles["recurrent"].append(module.name)
        metadata: dict[str, Any] = {"roles": roles}
        reset_before = [m.name for m in modules if not m.reset_after]
        if reset_before:
            metadata[RESET_BEFORE] = reset_before
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
        direction = attrs.get("direction", b"forward")
        direction = direction.decode() if isinstance(direction, bytes) else direction
        if direction == "reverse":
            raise self.fail(node, "runs in direction 'reverse' only, which torch's modules (and gatescope) "
                                  "have no module for; export it as bidirectional or forward")
        if "clip" in attrs:
            raise self.fail(node, f"clips its cell inputs (clip={attrs['clip']}); "
                                  "gatescope does not implement clipping")
        if attrs.get("input_forget", 0):
            raise self.fail(node, "couples its input and forget gates (input_forget=1); gatescope does not")
        directions = 2 if direction == "bidirectional" else 1
        activations = [a.decode() if isinstance(a, bytes) else a for a in attrs.get("activations", [])]
        if activations and activations != DEFAULT_ACTIVATIONS[op] * directions:
            raise self.fail(node, f"uses activations {activations}; gatescope computes "
                                  f"{DEFAULT_ACTIVATIONS[op]} (the defaults)")
        if op == "LSTM" and inputs[7]:
            raise self.fail(node, "has peephole weights (input P); gatescope does not implement peepholes")
        for index, label in ((5, "initial_h"), (6, "initial_c")):
            if inputs[index] in self.values and np.any(self.values[inputs[index]]):
                raise self.fail(node, f"starts from a non-zero {label} stored in the file; gatescope starts from zeros")
            if inputs[index] in self.inputs:
                self.notes.append(f"{node.name or op}: {label} is an input of the graph; gatescope starts from zeros")
            elif inputs[index] and inputs[index] not in self.values and not always_zero(self.graph, inputs[index]):
                self.notes.append(f"{node.name or op}: {label} is computed in the graph; read as a checkpoint, the model "
                                  "starts from zeros (gatescope trace MODEL --input FILE records from the graph's own)")
        w, r = (self._weight_input(node, i, dims=3) for i in (1, 2))
        if w is None or r is None:
            raise self.fail(node, "has weights W and R that are not stored in the file")
        hidden = int(attrs.get("hidden_size", r.shape[-1]))
        gates = 4 if op == "LSTM" else 3
        if w.shape[:2] != (directions, gates * hidden) or r.shape != (directions, gates * hidden, hidden):
            rows = gates * hidden
            raise self.fail(node, f"has W {list(w.shape)} and R {list(r.shape)}; expected "
                                  f"[{directions}, {rows}, input] and [{directions}, {rows}, {hidden}]")
        b = self.values.get(inputs[3]) if inputs[3] else None
        if inputs[3] and b is None:
            raise self.fail(node, "has a bias B that is not stored in the file")
        if b is not None and b.shape != (directions, 2 * gates * hidden):
            raise self.fail(node, f"has B {list(b.shape)}; expected [{directions}, {2 * gates * hidden}]")
        reset_after = op == "LSTM" or bool(attrs.get("linear_before_reset", 0))
        order = LSTM_ORDER if op == "LSTM" else GRU_ORDER
        module = self._module_for(node, modules, op, hidden, directions, reset_after, w.shape[-1])
        layer = module.layers
        for d, suffix in enumerate(("", "_reverse")[:directions]):
            end = f"_l{layer}{suffix}"
            module.tensors[f"weight_ih{end}"] = _reorder(w[d], order, hidden)
            module.tensors[f"weight_hh{end}"] = _reorder(r[d], order, hidden)
            if b is not None:
                module.tensors[f"bias_ih{end}"] = _reorder(b[d, : gates * hidden], order, hidden)
                module.tensors[f"bias_hh{end}"] = _reorder(b[d, gates * hidden :], order, hidden)
        module.layers += 1

    def _module_for(self, node, modules, op, hidden, directions, reset_after, width) -> _Module:
        """The previous module when this node is its next layer (same scope, cell and sizes), else a new one."""
        scope = self._scope(node)
        last = modules[-1] if modules else None
        if (last is not None and scope and last.scope == scope and last.op == op and last.hidden == hidden
                and last.directions == directions and last.reset_after == reset_after
                and width == directions * hidden):
            return last
        taken = {m.name for m in modules}
        name = scope or op.lower()
        if name in taken:
            name = next(f"{name}_{i}" for i in range(1, len(modules) + 2) if f"{name}_{i}" not in taken)
        module = _Module(name, scope, op, hidden, directions, reset_after)
        modules.append(module)
        return module


def _reorder(rows: np.ndarray, order: tuple[int, ...], hidden: int) -> np.ndarray:
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
