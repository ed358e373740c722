"""Keras layers' activations and SimpleRNN: Keras 3 files against Keras 3 itself (KERAS_BACKEND=torch), and
Keras 2 files (written with h5py in Keras 2's .h5 layout) against Keras 2's formulas, whose hard_sigmoid is
clip(0.2 x + 0.5, 0, 1) (keras 2.2.4 backend/tensorflow_backend.py; Keras 3's is clip(x / 6 + 0.5, 0, 1))."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
from tests.format_fixtures import fails

import gatescope
from gatescope.kinds import HARD_SIGMOID, HARD_SIGMOID_KERAS2, cell_type_of

h5py = pytest.importorskip("h5py", reason="h5py is not installed (pip install 'gatescope[formats]')")
TOL = dict(atol=1e-5, rtol=1e-5)
STEPS, FEATURES = 6, 3


def recorded(path, x: np.ndarray):
    """Every recurrent module's output h per layer (T, units, both directions side by side), and the modules."""
    model = gatescope.load(path)
    with torch.no_grad(), gatescope.record(model) as rec:
        model(torch.as_tensor(x[None]))
    out = {}
    for info in rec.trace.meta["modules"]:
        dirs = ("fwd", "bwd") if info["bidirectional"] else ("fwd",)
        out[info["name"]] = torch.cat([rec.trace[f"{info['name']}.l0.{d}.h"] for d in dirs], dim=-1)
    return out, {info["name"]: cell_type_of(info) for info in rec.trace.meta["modules"]}


@pytest.fixture(scope="module")
def keras3(tmp_path_factory):
    os.environ["KERAS_BACKEND"] = "torch"
    keras = pytest.importorskip("keras", reason="keras is not installed (pip install 'gatescope[formats]')")
    if keras.backend.backend() != "torch":
        pytest.skip(f"keras was imported with the {keras.backend.backend()} backend before this test")
    keras.utils.set_random_seed(3)
    layers = keras.layers
    model = keras.Sequential([
        keras.Input((None, FEATURES)),
        layers.LSTM(4, recurrent_activation="hard_sigmoid", activation="softsign", return_sequences=True,
                    name="lstm", bias_initializer="random_normal"),
        layers.GRU(5, recurrent_activation="hard_sigmoid", activation="relu", reset_after=False,
                   return_sequences=True, name="gru", bias_initializer="random_normal"),
        layers.Bidirectional(layers.SimpleRNN(3, activation="relu", return_sequences=True), name="birnn"),
        layers.GRU(3, recurrent_activation="linear", activation="elu", return_sequences=True, name="gru2"),
        layers.SimpleRNN(2, activation="leaky_relu", return_sequences=True, name="rnn"),
    ])
    folder = tmp_path_factory.mktemp("keras3")
    model.save(folder / "model.keras")
    model.save(folder / "model.h5")
    x = np.random.default_rng(0).normal(0, 2, (STEPS, FEATURES)).astype(np.float32)
    outputs, value = {}, x[None]
    for layer in model.layers:
        value = layer(value)
        outputs[layer.name] = value.detach().cpu().numpy()[0]
    return folder, x, outputs


@pytest.mark.parametrize("name", ["model.keras", "model.h5"])
def test_keras3_activations_match_keras(keras3, name):
    folder, x, outputs = keras3
    got, cells = recorded(folder / name, x)
    for layer, expected in outputs.items():
        torch.testing.assert_close(got[layer], torch.as_tensor(expected), **TOL, msg=layer)
    assert cells["lstm"].gate_activation == HARD_SIGMOID and str(cells["lstm"].activation) == "softsign"
    assert cells["gru"].reset_after is False and cells["birnn"].name == "RNN"
    assert str(cells["rnn"].activation) == "leaky_relu(0.2)" and str(cells["gru2"].gate_activation) == "affine(1.0,0.0)"


# -- Keras 2's layout, written with h5py --------------------------------------------------------------
def hard_sigmoid(x):
    return np.clip(0.2 * x + 0.5, 0.0, 1.0)


ACTS = {"tanh": np.tanh, "sigmoid": lambda x: 1 / (1 + np.exp(-x)), "hard_sigmoid": hard_sigmoid,
        "relu": lambda x: np.maximum(x, 0)}


def keras2_run(kind: str, cfg: dict, weights: list[np.ndarray], x: np.ndarray) -> np.ndarray:
    """Keras 2.2.4's recurrent.py cells, step by step, zero initial state."""
    kernel, recurrent, bias = weights
    act = ACTS[cfg.get("activation", "tanh")]
    gate = ACTS[cfg.get("recurrent_activation", "hard_sigmoid")]
    units = recurrent.shape[0]
    h, c, out = np.zeros(units), np.zeros(units), []
    for xt in x:
        if kind == "SimpleRNN":
            h = act(xt @ kernel + bias + h @ recurrent)
        elif kind == "LSTM":  # kernel columns i, f, c, o
            pre = xt @ kernel + bias + h @ recurrent
            i, f, g, o = (pre[k * units:(k + 1) * units] for k in range(4))
            c = gate(f) * c + gate(i) * act(g)
            h = gate(o) * act(c)
        else:  # GRU, reset_after=False: columns z, r, h
            xz, xr, xh = (xt @ kernel[:, k * units:(k + 1) * units] + bias[k * units:(k + 1) * units] for k in range(3))
            z = gate(xz + h @ recurrent[:, :units])
            r = gate(xr + h @ recurrent[:, units:2 * units])
            hh = act(xh + (r * h) @ recurrent[:, 2 * units:])
            h = z * h + (1 - z) * hh
        out.append(h)
    return np.stack(out)


def keras2_file(path, layers: list[tuple[str, str, int, dict]], version: str, seed: int = 0, reference: bool = True):
    """A Keras 2.2 Sequential model.save() file: model_config with the layer list, model_weights/NAME with
    weight_names; returns the per-layer outputs of the Keras 2 formulas for the returned input."""
    rng = np.random.default_rng(seed)
    x = rng.normal(0, 2, (STEPS, FEATURES))
    config, outputs, width = [], {}, FEATURES
    with h5py.File(path, "w") as f:
        f.attrs["keras_version"] = version.encode()
        f.attrs["backend"] = b"tensorflow"
        group = f.create_group("model_weights")
        value = x
        for kind, name, units, cfg in layers:
            gates = {"LSTM": 4, "GRU": 3, "SimpleRNN": 1}[kind]
            weights = [rng.normal(0, 0.8, (width, gates * units)), rng.normal(0, 0.8, (units, gates * units)),
                       rng.normal(0, 0.5, (gates * units,))]
            config.append({"class_name": kind, "config": {"name": name, "units": units, "return_sequences": True,
                                                          **cfg}})
            names = [f"{name}/{v}:0" for v in ("kernel", "recurrent_kernel", "bias")]
            layer = group.create_group(name)
            layer.attrs["weight_names"] = [n.encode() for n in names]
            for n, w in zip(names, weights):
                layer.create_dataset(n, data=w.astype(np.float32))
            if reference:
                value = keras2_run(kind, cfg, [w.astype(np.float32).astype(np.float64) for w in weights], value)
                outputs[name] = value
            width = units
        f.attrs["model_config"] = json.dumps({"class_name": "Sequential", "config": config}).encode()
    return x.astype(np.float32), outputs


KERAS2_LAYERS = [
    ("LSTM", "lstm", 4, {"activation": "tanh", "recurrent_activation": "hard_sigmoid"}),
    ("GRU", "gru", 3, {"activation": "relu", "recurrent_activation": "hard_sigmoid", "reset_after": False}),
    ("SimpleRNN", "rnn", 2, {"activation": "tanh"}),
]


def test_keras2_file_uses_keras2s_hard_sigmoid(tmp_path):
    x, outputs = keras2_file(tmp_path / "k2.h5", KERAS2_LAYERS, "2.2.4")
    got, cells = recorded(tmp_path / "k2.h5", x)
    for name, expected in outputs.items():
        torch.testing.assert_close(got[name].double(), torch.as_tensor(expected), **TOL, msg=name)
    assert cells["lstm"].gate_activation == HARD_SIGMOID_KERAS2 and cells["gru"].gate_activation == HARD_SIGMOID_KERAS2


@pytest.mark.parametrize("version, gate", [("2.1.6", "hard_sigmoid"), ("2.3.1", "sigmoid")])
def test_a_missing_recurrent_activation_is_that_versions_default(tmp_path, version, gate):
    layers = [("LSTM", "lstm", 3, {"activation": "tanh"})]
    x, _ = keras2_file(tmp_path / "k.h5", layers, version)
    _, expected = keras2_file(tmp_path / "ref.h5", [("LSTM", "lstm", 3, {"recurrent_activation": gate})], version)
    got, cells = recorded(tmp_path / "k.h5", x)
    torch.testing.assert_close(got["lstm"].double(), torch.as_tensor(expected["lstm"]), **TOL)
    assert cells["lstm"].gate_activation.name == gate


def test_what_keras_cannot_tell_is_refused(tmp_path, capsys):
    keras2_file(tmp_path / "k.h5", KERAS2_LAYERS, "2.2.4")
    with h5py.File(tmp_path / "k.h5", "a") as f:
        del f.attrs["keras_version"]
    err = fails(capsys, "inspect", tmp_path / "k.h5", "--json")
    assert "hard_sigmoid' and the file says no Keras version" in err and err.count("\n") == 1
    keras2_file(tmp_path / "k2.h5", [("LSTM", "lstm", 3, {"activation": "tanh", "recurrent_activation": "gelu"})],
                "2.2.4", reference=False)
    assert "recurrent_activation='gelu'; gatescope computes" in fails(capsys, "inspect", tmp_path / "k2.h5", "--json")
