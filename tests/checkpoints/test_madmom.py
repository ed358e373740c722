"""madmom's pickled networks, built here with stand-in classes under madmom's module names (madmom itself is
not needed), against madmom's own formulas (madmom/ml/nn/layers.py) written out in numpy; and the restricted
unpickler's refusals."""
from __future__ import annotations

import pickle
import sys
import types

import numpy as np
import pytest
import torch
from tests.format_fixtures import fails

import gatescope
from gatescope.kinds import module_cell_type

TOL = dict(atol=1e-5, rtol=1e-5)
FEATURES, STEPS = 4, 9


def sigmoid(x):
    return 1 / (1 + np.exp(-x))


class _Stand:
    """A stand-in for a madmom class: pickled under madmom's name, with madmom's attributes."""

    def __init__(self, **attrs):
        self.__dict__.update(attrs)


@pytest.fixture
def madmom_names(monkeypatch):
    """Modules named like madmom's, holding stand-in classes and activation functions, for pickling only."""
    made = {}
    for parent in ("madmom", "madmom.ml"):
        monkeypatch.setitem(sys.modules, parent, types.ModuleType(parent))
    for module, names in {"madmom.ml.nn": ["NeuralNetwork"],
                          "madmom.ml.nn.layers": ["BidirectionalLayer", "LSTMLayer", "GRULayer", "Gate", "Cell",
                                                  "GRUCell", "RecurrentLayer", "FeedForwardLayer"],
                          "madmom.ml.nn.activations": ["sigmoid", "tanh", "linear", "relu"]}.items():
        mod = types.ModuleType(module)
        for name in names:
            if module.endswith("activations"):
                fn = lambda x, name=name: ACT[name](x)  # noqa: E731
                fn.__module__, fn.__qualname__, fn.__name__ = module, name, name
                setattr(mod, name, fn)
            else:
                setattr(mod, name, type(name, (_Stand,), {"__module__": module}))
        monkeypatch.setitem(sys.modules, module, mod)
        made[module.rsplit(".", 1)[-1]] = mod
    return made


def network(m, kind: str, rng, bidirectional=False, peepholes=True, activation="tanh"):
    layers, acts = m["layers"], m["activations"]
    w = lambda *shape: rng.normal(0, 0.6, shape).astype(np.float32)  # noqa: E731

    def one(width, hidden):
        if kind == "lstm":
            gate = lambda: layers.Gate(weights=w(width, hidden), bias=w(hidden), recurrent_weights=w(hidden, hidden),  # noqa: E731
                                       peephole_weights=w(hidden) if peepholes else None, activation_fn=acts.sigmoid)
            return layers.LSTMLayer(input_gate=gate(), forget_gate=gate(), output_gate=gate(),
                                    cell=layers.Cell(weights=w(width, hidden), bias=w(hidden),
                                                     recurrent_weights=w(hidden, hidden), activation_fn=acts.tanh),
                                    activation_fn=getattr(acts, activation))
        if kind == "gru":
            gate = lambda: layers.Gate(weights=w(width, hidden), bias=w(hidden), recurrent_weights=w(hidden, hidden),  # noqa: E731
                                       peephole_weights=None, activation_fn=acts.sigmoid)
            return layers.GRULayer(reset_gate=gate(), update_gate=gate(), hid_init=w(hidden),  # learned
                                   cell=layers.GRUCell(weights=w(width, hidden), bias=w(hidden),
                                                       recurrent_weights=w(hidden, hidden),
                                                       activation_fn=getattr(acts, activation)))
        return layers.RecurrentLayer(weights=w(width, hidden), bias=w(hidden), recurrent_weights=w(hidden, hidden),
                                     activation_fn=getattr(acts, activation))

    first = layers.BidirectionalLayer(fwd_layer=one(FEATURES, 3), bwd_layer=one(FEATURES, 3)) if bidirectional \
        else one(FEATURES, 3)
    second = one(6 if bidirectional else 3, 5)
    out = layers.FeedForwardLayer(weights=w(5, 2), bias=w(2), activation_fn=acts.sigmoid)
    return m["nn"].NeuralNetwork(layers=[first, second, out])


ACT = {"sigmoid": sigmoid, "tanh": np.tanh, "linear": lambda x: x, "relu": lambda x: np.maximum(x, 0)}


def madmom_run(layer, data):
    """madmom/ml/nn/layers.py's activate(), in float64."""
    name = type(layer).__name__
    act = lambda r, x: ACT[r.activation_fn.__name__](x)  # noqa: E731

    def gate(g, x, prev, state=None):
        out = x @ g.weights + g.bias
        if getattr(g, "peephole_weights", None) is not None:
            out = out + state * g.peephole_weights
        return act(g, out + prev @ g.recurrent_weights)

    if name == "BidirectionalLayer":
        return np.hstack([madmom_run(layer.fwd_layer, data), madmom_run(layer.bwd_layer, data[::-1])[::-1]])
    if name == "FeedForwardLayer":
        return data @ layer.weights + layer.bias  # before its activation, as gatescope gives it
    hidden = layer.bias.size if name == "RecurrentLayer" else layer.cell.bias.size
    h, c, out = np.zeros(hidden), np.zeros(hidden), []
    if name == "GRULayer":
        h = layer.hid_init.astype(np.float64)
    for x in data:
        if name == "LSTMLayer":
            i, f, g = gate(layer.input_gate, x, h, c), gate(layer.forget_gate, x, h, c), gate(layer.cell, x, h)
            c = g * i + c * f
            h = act(layer, c) * gate(layer.output_gate, x, h, c)
        elif name == "GRULayer":
            r, u = gate(layer.reset_gate, x, h), gate(layer.update_gate, x, h)
            cell = act(layer.cell, x @ layer.cell.weights + layer.cell.bias + r * (h @ layer.cell.recurrent_weights))
            h = u * cell + (1 - u) * h
        else:
            h = act(layer, x @ layer.weights + layer.bias + h @ layer.recurrent_weights)
        out.append(h)
    return np.stack(out)


@pytest.mark.parametrize("kind, bidirectional, peepholes, activation", [
    ("lstm", True, True, "tanh"), ("lstm", False, False, "linear"), ("gru", True, None, "tanh"),
    ("gru", False, None, "relu"), ("rnn", True, None, "tanh"), ("rnn", False, None, "relu"),
])
def test_madmom_networks_match_madmoms_formulas(madmom_names, tmp_path, kind, bidirectional, peepholes, activation):
    rng = np.random.default_rng(0)
    net = network(madmom_names, kind, rng, bidirectional, peepholes, activation)
    path = tmp_path / "model.pkl"
    path.write_bytes(pickle.dumps(net, protocol=2))
    x = rng.normal(0, 1.5, (STEPS, FEATURES))
    expected = x
    for layer in net.layers:
        expected = madmom_run(layer, expected)
    model = gatescope.load(path)
    with torch.no_grad(), gatescope.record(model) as rec:
        got = model(torch.as_tensor(x, dtype=torch.float32)[None])[0]
    torch.testing.assert_close(got.double(), torch.as_tensor(expected), **TOL)
    first = madmom_run(net.layers[0], x)
    recorded = rec.trace["layers.0.l0.fwd.h"]
    torch.testing.assert_close(recorded.double(), torch.as_tensor(first[:, :3]), **TOL)
    if kind == "lstm":
        assert module_cell_type(model.get_submodule("layers.0")).peepholes == peepholes
    if kind == "gru":  # torch's z is madmom's 1 - u
        forward = getattr(net.layers[0], "fwd_layer", net.layers[0])
        gate = forward.update_gate
        h_prev = np.concatenate([forward.hid_init[None], first[:-1, :3]])
        u = sigmoid(x @ gate.weights + gate.bias + h_prev @ gate.recurrent_weights)
        torch.testing.assert_close(rec.trace["layers.0.l0.fwd.z"].double(), torch.as_tensor(1 - u), **TOL)


def test_protocol_0_pickles_of_python_2_are_read(madmom_names, tmp_path):
    net = network(madmom_names, "lstm", np.random.default_rng(1))
    path = tmp_path / "py2.pkl"
    path.write_bytes(pickle.dumps(net, protocol=0))
    x = np.random.default_rng(2).normal(size=(STEPS, FEATURES))
    expected = madmom_run(net.layers[1], madmom_run(net.layers[0], x))
    with torch.no_grad():
        got = gatescope.load(path)(torch.as_tensor(x, dtype=torch.float32)[None], decode=False)[0]
    torch.testing.assert_close(got.double(), torch.as_tensor(expected), **TOL)


class Payload:
    def __reduce__(self):
        return (print, ("never run",))


def test_anything_but_madmoms_classes_is_refused(madmom_names, tmp_path, capsys):
    net = network(madmom_names, "lstm", np.random.default_rng(0))
    net.layers[0].cell.bias = Payload()
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps(net, protocol=2))
    err = fails(capsys, "inspect", path, "--json")
    assert "print, which is not one of madmom's network classes" in err and err.count("\n") == 1
    assert "never run" not in capsys.readouterr().out
    other = network(madmom_names, "lstm", np.random.default_rng(0))
    other.layers[0].cell.bias = np.zeros(3, dtype=object)
    path.write_bytes(pickle.dumps(other, protocol=2))
    assert "Cell.bias is object [3]; expected float" in fails(capsys, "inspect", path, "--json")


class DeclaredArray:
    """Pickles as numpy's own array reconstruction, declaring a shape and no data."""

    def __init__(self, shape):
        self.shape = shape

    def __reduce__(self):
        return np.ndarray.__reduce__(np.zeros(0))[0], (np.ndarray, self.shape, b"b")


def test_a_declared_array_larger_than_the_file_is_refused_before_it_is_allocated(madmom_names, tmp_path, capsys):
    net = network(madmom_names, "lstm", np.random.default_rng(0))
    net.layers[0].cell.bias = DeclaredArray((1 << 40,))  # a terabyte, declared by a file of a few KB
    path = tmp_path / "bomb.pkl"
    path.write_bytes(pickle.dumps(net, protocol=2))
    err = fails(capsys, "inspect", path, "--json")
    assert "declares a numpy array of 1,099,511,627,776 bytes, more than the file's" in err and err.count("\n") == 1
