"""madmom's pickled neural networks (CPJKU/madmom, madmom/ml/nn), read without madmom and without running code.

madmom's models (beat, downbeat, onset and note trackers) are pickles of ``madmom.ml.nn.NeuralNetwork``,
whose ``layers`` hold BidirectionalLayer, LSTMLayer (Gate, Cell: peephole LSTMs), GRULayer (Gate, GRUCell),
RecurrentLayer and FeedForwardLayer objects, their activation functions pickled as references to
``madmom.ml.nn.activations``. A restricted unpickler (`_Unpickler`) admits exactly those classes, as plain
records of their attributes (madmom is never imported), the functions as names, numpy's array
reconstruction (with ``_codecs.encode`` for its bytes), and Python 2's ``copy_reg._reconstructor`` on
``object``; anything else is refused in one line, as torch's ``weights_only`` loader refuses everything but tensors.

Converted to torch's names (madmom/ml/nn/layers.py; a Gate computes act(x W + b + h R (+ p ⊙ c)), W (I, H)):

- LSTMLayer -> a peephole LSTM (gatescope.recorder.variants.VariantLSTM): the blocks i, f, g, o from
  input_gate, forget_gate, cell, output_gate (W.T, R.T, b -> ``bias_ih``, ``bias_hh`` zero); peepholes
  -> ``weight_ch`` (i and f see the previous state, o the new one, as in madmom); ``activation_fn`` of the
  layer is the cell output's. A gate without recurrent weights or peepholes gets zeros.
- GRULayer (Cho et al. 2014, as in Lasagne): madmom computes h = u ⊙ c + (1 - u) ⊙ h_prev with the
  candidate c = act(x W + b + r ⊙ (h R)), a single candidate bias. That is torch's GRU (reset after the
  recurrent product, b_hn = 0) with torch's z = 1 - u, which is the update gate with its weights and bias
  negated (sigmoid(-a) = 1 - sigmoid(a)): a conversion, not a new cell. Its learned initial state
  ``hid_init`` becomes ``h0_l0`` (``_reverse``: each direction starts from its own).
- RecurrentLayer -> an RNN with its activation; BidirectionalLayer -> a bidirectional module
  (``_reverse``); the last FeedForwardLayer -> the decoder (its activation, e.g. sigmoid, is not applied:
  gatescope gives the logits, and says so).

Each recurrent layer becomes its own module ``layers.K`` (K its index in ``layers``).
"""
from __future__ import annotations

import io
import math
import os
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from gatescope.checkpoints.formats.converted import Converted, from_numpy
from gatescope.errors import GatescopeError
from gatescope.files import open_regular
from gatescope.kinds import CELL_TYPES, Activation, CellType
from gatescope.recorder.variants import METADATA_KEY as CELLS

LAYER_CLASSES = {  # madmom class -> its attributes (madmom/ml/nn/layers.py, __init__.py)
    ("madmom.ml.nn", "NeuralNetwork"): ("layers",),
    ("madmom.ml.nn.layers", "BidirectionalLayer"): ("fwd_layer", "bwd_layer"),
    ("madmom.ml.nn.layers", "LSTMLayer"): ("input_gate", "forget_gate", "cell", "output_gate", "activation_fn"),
    ("madmom.ml.nn.layers", "GRULayer"): ("reset_gate", "update_gate", "cell", "hid_init"),
    ("madmom.ml.nn.layers", "Gate"): ("weights", "bias", "recurrent_weights", "peephole_weights", "activation_fn"),
    ("madmom.ml.nn.layers", "Cell"): ("weights", "bias", "recurrent_weights", "activation_fn"),
    ("madmom.ml.nn.layers", "GRUCell"): ("weights", "bias", "recurrent_weights", "activation_fn"),
    ("madmom.ml.nn.layers", "RecurrentLayer"): ("weights", "bias", "recurrent_weights", "activation_fn"),
    ("madmom.ml.nn.layers", "FeedForwardLayer"): ("weights", "bias", "activation_fn"),
}
ACTIVATIONS = {  # madmom.ml.nn.activations -> gatescope.kinds (None: an output activation only)
    "linear": Activation("affine", 1.0, 0.0), "sigmoid": Activation("sigmoid"), "tanh": Activation("tanh"),
    "relu": Activation("relu"), "elu": Activation("elu", 1.0), "softmax": None,
}


class Record:
    """A madmom object read as its class name and attributes, nothing more."""

    madmom_class = "?"

    def __setstate__(self, state: Any) -> None:
        if not isinstance(state, dict):
            raise GatescopeError(f"madmom {self.madmom_class} holds {type(state).__name__} state, not attributes")
        self.__dict__.update(state)


class ActivationName(str):
    """A reference to a function of madmom.ml.nn.activations, by name."""


def _reconstructor(cls: type, base: type, state: Any) -> Any:
    """Python 2's copy_reg._reconstructor for a plain object: the record, empty (its state follows)."""
    if base is not object or state is not None or not issubclass(cls, Record):
        raise GatescopeError("a copy_reg._reconstructor call other than madmom's plain objects")
    return cls.__new__(cls)


def _record_class(name: str) -> type:
    return type(name, (Record,), {"madmom_class": name})


class _Unpickler(pickle.Unpickler):
    """Admits madmom's network classes (as `Record` subclasses), its activation functions (as names),
    numpy's array reconstruction and Python 2's plain-object reconstructor; refuses every other global."""

    def __init__(self, file: io.BufferedIOBase, path: Path) -> None:
        super().__init__(file, encoding="latin1")  # Python 2's pickles hold numpy's bytes as str
        self.path = path
        self.limit = os.fstat(file.fileno()).st_size  # what any array of the pickle can hold at most
        self.records = {key: _record_class(key[1]) for key in LAYER_CLASSES}

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self.records:
            return self.records[(module, name)]
        if module == "madmom.ml.nn.activations" and name in ACTIVATIONS:
            return ActivationName(name)
        if module in ("numpy.core.multiarray", "numpy._core.multiarray") and name == "_reconstruct":
            return self._ndarray_reconstruct
        if (module, name) in (("numpy", "ndarray"), ("numpy", "dtype")):
            return getattr(np, name)
        if (module, name) in (("copy_reg", "_reconstructor"), ("copyreg", "_reconstructor")):
            return _reconstructor
        if (module, name) in (("__builtin__", "object"), ("builtins", "object")):
            return object
        if (module, name) == ("_codecs", "encode"):  # how Python 3's protocol 2 writes bytes
            return _latin1
        raise GatescopeError(f"{self.path}: the pickle asks for {module}.{name}, which is not one of madmom's "
                             "network classes; gatescope unpickles nothing else")

    def _ndarray_reconstruct(self, subtype: type, shape: Any, dtype: Any) -> np.ndarray:
        """numpy's ``_reconstruct`` for a plain ndarray (its data arrive with __setstate__, which checks that
        they fill the array): an empty array as numpy pickles it, or one no larger than the file, so that a
        declared shape cannot allocate memory the file does not hold."""
        if subtype is not np.ndarray:
            raise GatescopeError(f"{self.path}: a numpy array subclass in the pickle")
        try:
            size = math.prod(int(n) for n in shape) * np.dtype(dtype).itemsize
        except (TypeError, ValueError):
            raise GatescopeError(f"{self.path}: a numpy array of shape {shape!r} and dtype {dtype!r}") from None
        if size > self.limit:
            raise GatescopeError(f"{self.path}: the pickle declares a numpy array of {size:,} bytes, more than the "
                                 f"file's {self.limit:,}")
        return np.ndarray.__new__(np.ndarray, shape, dtype)


def _latin1(text: Any, encoding: str = "latin1") -> bytes:
    """``_codecs.encode(text, "latin1")``: bytes as Python 3 pickles them at protocol 2."""
    if not isinstance(text, str) or encoding != "latin1":
        raise GatescopeError("a _codecs.encode call other than the bytes of a numpy array")
    return text.encode("latin1")




def read(path: Path) -> Converted:
    try:
        with open_regular(path, "madmom model") as f:
            network = _Unpickler(f, path).load()
    except GatescopeError:
        raise
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError) as exc:
        raise GatescopeError(f"{path} is not a readable madmom model ({type(exc).__name__}: {exc})") from None
    if not isinstance(network, Record) or network.madmom_class != "NeuralNetwork":
        raise GatescopeError(f"{path}: a pickle of {type(network).__name__}, not a madmom NeuralNetwork")
    return _Converter(path).convert(_attr(network, "layers", path))


def _attr(record: Record, name: str, path: Path) -> Any:
    if name not in record.__dict__:
        raise GatescopeError(f"{path}: madmom {record.madmom_class} has no {name}")
    return record.__dict__[name]


class _Converter:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.tensors: dict[str, np.ndarray] = {}
        self.cells: dict[str, CellType] = {}
        self.notes: list[str] = []

    def convert(self, layers: Any) -> Converted:
        if not isinstance(layers, list) or not layers:
            raise GatescopeError(f"{self.path}: the network's layers are not a list of layers")
        roles: dict[str, Any] = {"embedding": None, "recurrent": [], "decoder": None}
        for index, layer in enumerate(layers):
            kind = layer.madmom_class if isinstance(layer, Record) else type(layer).__name__
            name = f"layers.{index}"
            if roles["decoder"]:
                raise GatescopeError(f"{self.path}: layer {index} ({kind}) follows the output layer; gatescope "
                                     "runs recurrent layers -> one output layer")
            if kind == "FeedForwardLayer":
                if not roles["recurrent"]:
                    raise GatescopeError(f"{self.path}: layer {index} is a FeedForwardLayer before any recurrent "
                                         "layer, which gatescope does not run")
                self._output(name, layer)
                roles["decoder"] = name
                continue
            sides = [layer]
            if kind == "BidirectionalLayer":
                sides = [self._get(layer, "fwd_layer"), self._get(layer, "bwd_layer")]
            for suffix, side in zip(("_l0", "_l0_reverse"), sides):
                self._recurrent(name, suffix, side, index)
            roles["recurrent"].append(name)
        if not roles["recurrent"]:
            raise GatescopeError(f"{self.path}: the network has no recurrent layer")
        cells = {n: {"cell": c.name, **c.info()} for n, c in self.cells.items() if c != CELL_TYPES[c.name]}
        metadata = {"roles": roles, **({CELLS: cells} if cells else {})}
        return Converted(from_numpy(self.tensors), metadata, "madmom (.pkl)", self.notes)

    # -- pieces ----------------------------------------------------------------------------------------
    def _get(self, record: Any, name: str) -> Any:
        if not isinstance(record, Record):
            raise GatescopeError(f"{self.path}: expected a madmom layer, found {type(record).__name__}")
        return _attr(record, name, self.path)

    def _array(self, record: Record, name: str, shape: tuple[int | None, ...], optional: bool = False):
        value = self._get(record, name)
        if value is None and optional:
            return None
        if np.isscalar(value) and len(shape) == 1:  # madmom allows a scalar bias
            value = np.full(shape[0], value)
        if not isinstance(value, np.ndarray) or value.dtype.kind != "f" or value.ndim != len(shape) or any(
                want is not None and got != want for got, want in zip(value.shape, shape)):
            got = f"{value.dtype} {list(value.shape)}" if isinstance(value, np.ndarray) else type(value).__name__
            raise GatescopeError(f"{self.path}: madmom {record.madmom_class}.{name} is {got}; expected float "
                                 f"{[s if s is not None else 'n' for s in shape]}")
        return value.astype(np.float32)

    def _activation(self, record: Record, where: str) -> Activation:
        name = self._get(record, "activation_fn")
        found = ACTIVATIONS.get(name) if isinstance(name, ActivationName) else None
        if found is None:
            raise GatescopeError(f"{self.path}: {where} uses activation {name!s}, which a recurrent cell here "
                                 f"cannot use (it reads {', '.join(k for k, v in ACTIVATIONS.items() if v)})")
        return found

    def _block(self, record: Record, width: int | None, hidden: int | None) -> dict[str, np.ndarray]:
        """One gate's (or cell's) W.T (H, I), R.T (H, H), b (H,), peephole (H,) or zeros where absent."""
        weights = self._array(record, "weights", (width, hidden))
        hidden = weights.shape[1]
        recurrent = self._array(record, "recurrent_weights", (hidden, hidden), optional=True)
        peep = (self._array(record, "peephole_weights", (hidden,), optional=True)
                if "peephole_weights" in record.__dict__ else None)
        return {"w": weights.T, "r": np.zeros((hidden, hidden), np.float32) if recurrent is None else recurrent.T,
                "b": self._array(record, "bias", (hidden,)), "p": peep}

    def _recurrent(self, name: str, suffix: str, layer: Any, index: int) -> None:
        kind = layer.madmom_class if isinstance(layer, Record) else type(layer).__name__
        extra: dict[str, np.ndarray] = {}
        if kind == "LSTMLayer":
            parts = [self._get(layer, k) for k in ("input_gate", "forget_gate", "cell", "output_gate")]
            blocks = [self._block(p, None, None) for p in parts]
            gates = {self._activation(parts[k], f"layer {index}'s gate") for k in (0, 1, 3)}  # i, f, o
            if len(gates) != 1:
                raise GatescopeError(f"{self.path}: layer {index}'s gates use different activations; a cell has one")
            peepholes = any(b["p"] is not None for b in blocks)
            cell = CELL_TYPES["LSTM"].variant(
                gate_activation=gates.pop(), activation=self._activation(parts[2], f"layer {index}'s cell"),
                output_activation=self._activation(layer, f"layer {index}"), peepholes=peepholes)
            order = blocks  # madmom's input gate, forget gate, cell, output gate: torch's i, f, g, o
            if peepholes:
                zeros = np.zeros_like(blocks[0]["b"])
                extra["weight_ch"] = np.concatenate([b["p"] if b["p"] is not None else zeros
                                                     for b in (blocks[0], blocks[1], blocks[3])])
        elif kind == "GRULayer":
            reset, update, candidate = (self._get(layer, k) for k in ("reset_gate", "update_gate", "cell"))
            r, u, c = (self._block(p, None, None) for p in (reset, update, candidate))
            gate = self._activation(reset, f"layer {index}'s reset gate")
            if self._activation(update, f"layer {index}'s update gate") != gate or gate.name != "sigmoid":
                raise GatescopeError(f"{self.path}: layer {index}'s gates are not both sigmoids; torch's z = 1 - u "
                                     "holds for the sigmoid only")
            if self._get(layer, "hid_init") is not None:
                extra = {"h0": self._array(layer, "hid_init", (r["b"].shape[0],))}
            z = {"w": -u["w"], "r": -u["r"], "b": -u["b"]}  # torch's z = 1 - u = sigmoid(-(...))
            order = [r, z, c]
            cell = CELL_TYPES["GRU"].variant(activation=self._activation(candidate, f"layer {index}'s cell"))
        elif kind == "RecurrentLayer":
            block = self._block(layer, None, None)
            order = [block]
            cell = CELL_TYPES["RNN"].variant(activation=self._activation(layer, f"layer {index}"))
        else:
            raise GatescopeError(f"{self.path}: layer {index} is a madmom {kind}, which gatescope does not convert "
                                 "(it reads LSTMLayer, GRULayer, RecurrentLayer, BidirectionalLayer and an output "
                                 "FeedForwardLayer)")
        if self.cells.setdefault(name, cell) != cell:
            raise GatescopeError(f"{self.path}: the two directions of layer {index} compute different cells")
        weight_ih = np.concatenate([b["w"] for b in order])  # (G*H, I)
        self.tensors[f"{name}.weight_ih{suffix}"] = weight_ih
        self.tensors[f"{name}.weight_hh{suffix}"] = np.concatenate([b["r"] for b in order])
        self.tensors[f"{name}.bias_ih{suffix}"] = np.concatenate([b["b"] for b in order])
        self.tensors[f"{name}.bias_hh{suffix}"] = np.zeros(weight_ih.shape[0], np.float32)
        self.tensors.update({f"{name}.{k}{suffix}": v for k, v in extra.items()})

    def _output(self, name: str, layer: Record) -> None:
        weights = self._array(layer, "weights", (None, None))
        self.tensors[f"{name}.weight"] = weights.T  # (O, I)
        self.tensors[f"{name}.bias"] = self._array(layer, "bias", (weights.shape[1],))
        function = self._get(layer, "activation_fn")
        if isinstance(function, ActivationName) and function != "linear":
            self.notes.append(f"the output layer's {function} is not applied: gatescope gives the values before it")
