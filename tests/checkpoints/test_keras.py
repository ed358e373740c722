"""Keras 3 .keras and .weights.h5 files, against the Keras model's own outputs (KERAS_BACKEND=torch)."""
from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from tests.format_fixtures import (
    assert_loads_or_one_line,
    cli_trace,
    convert_round_trip,
    each_truncation,
    fails,
    inspect_json,
    modules,
)

IDS = [1, 2, 3, 4, 5, 6, 7]
SHORT = [9, 8, 7, 6]  # traced in one batch with IDS: the shorter sequence runs packed
TOL = dict(atol=1e-5, rtol=0)
RECURRENT = ["lstm", "gru_before", "bidirectional", "gru_after", "bigru"]
# a .weights.h5 file has no config, so no layer names: Keras saves layers by class, numbered in order
STORED = {"lstm": "lstm", "gru_before": "gru", "bidirectional": "bidirectional", "gru_after": "gru_1",
          "bigru": "bidirectional_1"}


@pytest.fixture(scope="module")
def keras_model(tmp_path_factory):
    """One Keras model with every layer the reader converts, saved both ways, and its per-layer outputs."""
    os.environ["KERAS_BACKEND"] = "torch"
    keras = pytest.importorskip("keras", reason="keras is not installed (pip install 'gatescope[formats]')")
    pytest.importorskip("h5py", reason="h5py is not installed (pip install 'gatescope[formats]')")
    if keras.backend.backend() != "torch":
        pytest.skip(f"keras was imported with the {keras.backend.backend()} backend before this test")
    keras.utils.set_random_seed(0)
    layers = keras.layers
    model = keras.Sequential([
        keras.Input((None,), dtype="int32"),
        layers.Embedding(12, 6, name="embedding"),
        layers.LSTM(8, return_sequences=True, name="lstm"),
        layers.GRU(5, return_sequences=True, reset_after=False, name="gru_before"),
        layers.Bidirectional(layers.LSTM(4, return_sequences=True), name="bidirectional"),
        layers.GRU(3, return_sequences=True, reset_after=True, name="gru_after"),
        layers.Bidirectional(layers.GRU(3, return_sequences=True, reset_after=False), name="bigru"),
        layers.Dropout(0.5, name="dropout"),
        layers.Dense(12, name="dense"),
    ])
    folder = tmp_path_factory.mktemp("keras")
    model.save(folder / "model.keras")
    model.save_weights(folder / "model.weights.h5")
    model.save(folder / "model.h5")  # the legacy HDF5 format of Keras 2 and tf.keras
    outputs, x, short = {}, np.array([IDS]), np.array([SHORT])
    for layer in model.layers:
        x, short = layer(x), layer(short)
        outputs[layer.name] = x.detach().cpu().numpy()[0]
        outputs[f"{layer.name}.short"] = short.detach().cpu().numpy()[0]
    cell, state = model.get_layer("lstm").cell, None  # the LSTM's cell state c, step by step
    emb = torch.as_tensor(outputs["embedding"])
    state = [torch.zeros(1, 8), torch.zeros(1, 8)]
    cells = []
    for t in range(len(IDS)):
        _, state = cell(emb[t : t + 1], state)
        cells.append(state[1].detach().numpy()[0])
    outputs["lstm.c"] = np.stack(cells)
    return folder, outputs


def check(trace, outputs, names=None) -> None:
    """Every layer's h for both sequences (IDS rows first), and the LSTM's c, against Keras."""
    for layer in RECURRENT:
        name = (names or {}).get(layer, layer)
        h = trace[f"{name}.l0.fwd.h"]
        if layer in ("bidirectional", "bigru"):
            h = torch.cat([h, trace[f"{name}.l0.bwd.h"]], dim=-1)
        expected = np.concatenate([outputs[layer], outputs[f"{layer}.short"]])
        torch.testing.assert_close(h, torch.as_tensor(expected), **TOL, msg=name)
    torch.testing.assert_close(trace["lstm.l0.fwd.c"][: len(IDS)], torch.as_tensor(outputs["lstm.c"]), **TOL)


def trace_both(tmp_path, path):
    return cli_trace(tmp_path, path, "--ids", " ".join(map(str, IDS)), "--ids", " ".join(map(str, SHORT)))


@pytest.mark.parametrize("name", ["model.keras", "model.weights.h5", "model.h5"])
def test_keras_file_traced_directly_matches_keras(keras_model, tmp_path, capsys, name):
    folder, outputs = keras_model
    names = STORED if name == "model.weights.h5" else None
    check(trace_both(tmp_path, folder / name), outputs, names)
    report = inspect_json(capsys, folder / name)
    reset_after = {"bidirectional": True, "gru_after": True, "gru_before": False, "lstm": True, "bigru": False}
    assert {m["name"]: m.get("reset_after", True) for m in report["modules"]} == {
        (names or {}).get(k, k): v for k, v in reset_after.items()}
    assert report["decoder"]["name"] == "dense" and report["embedding"]["name"] == "embedding"
    if name != "model.weights.h5":  # the config gives the order; the weights alone are ordered by their shapes
        assert report["recurrent"] == RECURRENT


def test_keras_logits_and_convert_round_trip(keras_model, tmp_path, capsys):
    import gatescope

    folder, outputs = keras_model
    out, direct, converted = convert_round_trip(tmp_path, capsys, folder / "model.keras")
    assert modules(direct) == modules(converted)
    assert [m["name"] for m in converted["modules"] if m.get("reset_after") is False] == ["bigru", "gru_before"]
    check(trace_both(tmp_path, out), outputs)
    with torch.no_grad():
        logits = gatescope.load(out)(torch.tensor([IDS]))[0]
    torch.testing.assert_close(logits, torch.as_tensor(outputs["dense"]), **TOL)


def test_keras_layers_it_cannot_run_are_refused(keras_model, tmp_path, capsys):
    import keras

    model = keras.Sequential([keras.Input((None, 3)), keras.layers.Conv1D(4, 2, name="conv"),
                              keras.layers.LSTM(2, name="lstm")])
    model.save(tmp_path / "conv.keras")
    err = fails(capsys, "inspect", tmp_path / "conv.keras", "--json")
    assert "layer conv is a Keras Conv1D, which gatescope does not convert" in err and err.count("\n") == 1
    model = keras.Sequential([keras.Input((None, 3)), keras.layers.LSTM(2, activation="selu", name="lstm")])
    model.save(tmp_path / "selu.keras")
    assert "activation='selu'; gatescope computes" in fails(capsys, "inspect", tmp_path / "selu.keras", "--json")
    import h5py

    with h5py.File(tmp_path / "keras2.h5", "w") as f:  # Keras 2's layout: model_weights/NAME/NAME/kernel:0
        f.create_dataset("model_weights/lstm/lstm/kernel:0", data=np.zeros((3, 8), np.float32))
    assert "a Keras 2 weights-only file" in fails(capsys, "inspect", tmp_path / "keras2.h5", "--json")


@pytest.mark.parametrize("name", ["model.keras", "model.weights.h5", "model.h5"])
def test_a_damaged_keras_file_is_a_one_line_error(keras_model, tmp_path, name):
    for damaged in each_truncation(keras_model[0] / name, tmp_path):
        assert_loads_or_one_line(damaged)


@pytest.mark.parametrize("suffix", [".keras", ".h5", ".weights.h5"])
def test_a_time_distributed_dense_is_the_decoder(keras_model, tmp_path, capsys, suffix):
    import keras

    import gatescope

    model = keras.Sequential([keras.Input((None, 3)), keras.layers.LSTM(4, return_sequences=True),
                              keras.layers.TimeDistributed(keras.layers.Dense(2), name="decoder")])
    path = tmp_path / f"td{suffix}"
    model.save_weights(path) if suffix == ".weights.h5" else model.save(path)
    x = np.random.default_rng(0).normal(size=(1, 5, 3)).astype(np.float32)
    loaded = gatescope.load(path)
    assert loaded.decoder_name == ("time_distributed" if suffix == ".weights.h5" else "decoder")  # no config: no name
    with torch.no_grad():
        got = loaded(torch.as_tensor(x))
    torch.testing.assert_close(got, torch.as_tensor(model(x).detach().cpu().numpy()), **TOL)
