"""Every attribute of ONNX's LSTM / GRU / RNN nodes that makes a variant cell (peepholes P, input_forget, clip,
the activation list with activation_alpha / activation_beta) and their combinations, on random weights and
inputs, against onnxruntime (the ONNX reference evaluator ignores activations, clip and input_forget)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import gatescope
from gatescope.kinds import Activation, cell_type_of

onnx = pytest.importorskip("onnx", reason="onnx is not installed (pip install 'gatescope[formats]')")
ort = pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (pip install 'gatescope[formats]')")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

TOL = dict(atol=1e-5, rtol=1e-5)  # rtol: unbounded activations (relu, softplus) reach values near 1e3 in float32
GATES = {"LSTM": 4, "GRU": 3, "RNN": 1}
HIDDEN, INPUT, STEPS, BATCH = 5, 3, 7, 2


def node_graph(path, op, direction="forward", peepholes=False, seed=0, **attrs):
    """One hand-built ``op`` node over X (T, B, 3), hidden 5, random weights; outputs Y (and Y_c for an LSTM)."""
    rng = np.random.default_rng(seed)
    dirs = 2 if direction == "bidirectional" else 1
    rows = GATES[op] * HIDDEN
    weights = {"W": rng.normal(0, 0.7, (dirs, rows, INPUT)), "R": rng.normal(0, 0.7, (dirs, rows, HIDDEN)),
               "B": rng.normal(0, 0.5, (dirs, 2 * rows))}
    inputs = ["X", "W", "R", "B"]
    if peepholes:
        weights["P"] = rng.normal(0, 0.7, (dirs, 3 * HIDDEN))
        inputs += ["", "", "", "P"]
    outputs = ["Y", "", "Y_c"] if op == "LSTM" else ["Y"]
    node = helper.make_node(op, inputs, outputs, name=f"/rnn/{op}", hidden_size=HIDDEN, direction=direction, **attrs)
    graph = helper.make_graph(
        [node], op.lower(), [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["T", "B", INPUT])],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in outputs if n],
        [numpy_helper.from_array(v.astype(np.float32), n) for n, v in weights.items()])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)]), str(path))
    return path


def check_against_onnxruntime(path, op, dirs):
    """Load ``path``, record it on random X, and compare every h (and the LSTM's last c) with onnxruntime's.
    dirs: 1 (forward), 2 (bidirectional) or "reverse" (recorded as the backward direction alone)."""
    directions = ("bwd",) if dirs == "reverse" else ("fwd", "bwd")[:dirs]
    x = np.random.default_rng(7).normal(0, 1.5, (STEPS, BATCH, INPUT)).astype(np.float32)
    expected = ort.InferenceSession(str(path)).run(None, {"X": x})  # Y (T, D, B, H), Y_c (D, B, H)
    model = gatescope.load(path)
    with torch.no_grad(), gatescope.record(model) as rec:
        out = model(torch.as_tensor(x).transpose(0, 1))  # (B, T, D*H)
    y = torch.as_tensor(expected[0])
    for d, direction in enumerate(directions):
        torch.testing.assert_close(out[..., d * HIDDEN:(d + 1) * HIDDEN], y[:, d].transpose(0, 1), **TOL)
        h = rec.trace[f"rnn.l0.{direction}.h"].reshape(BATCH, STEPS, HIDDEN)
        torch.testing.assert_close(h, y[:, d].transpose(0, 1), **TOL)
        if op == "LSTM":
            c = rec.trace[f"rnn.l0.{direction}.c"].reshape(BATCH, STEPS, HIDDEN)
            torch.testing.assert_close(c[:, -1 if direction == "fwd" else 0], torch.as_tensor(expected[1][d]), **TOL)
    return cell_type_of(rec.trace.meta["modules"][0]), rec.trace


LSTM_CASES = {
    "peepholes": dict(peepholes=True),
    "input_forget": dict(input_forget=1),
    "peepholes_input_forget": dict(peepholes=True, input_forget=1),
    "clip": dict(clip=0.6),
    "hard_sigmoid_defaults": dict(activations=["HardSigmoid", "Tanh", "Tanh"]),
    "alpha_beta_in_order": dict(activations=["HardSigmoid", "ScaledTanh", "Affine"], activation_alpha=[0.3, 1.5, 0.8],
                                activation_beta=[0.4, 0.7, -0.1]),
    "leaky_softsign": dict(activations=["Sigmoid", "LeakyRelu", "Softsign"]),
    "thresholded_elu": dict(activations=["Sigmoid", "ThresholdedRelu", "Elu"]),
    "thresholded_alpha": dict(activations=["Sigmoid", "ThresholdedRelu", "Elu"], activation_alpha=[0.2, 0.5]),
    "softplus_relu": dict(activations=["Softplus", "Relu", "Tanh"]),
    "relu_gates": dict(activations=["Relu", "Tanh", "Tanh"], clip=2.0),
    "everything": dict(peepholes=True, input_forget=1, clip=1.5, activations=["HardSigmoid", "Softsign", "Elu"],
                       activation_alpha=[0.25, 0.8], activation_beta=[0.45]),
}


@pytest.mark.parametrize("direction", ["forward", "bidirectional"])
@pytest.mark.parametrize("case", sorted(LSTM_CASES))
def test_lstm_attributes_match_onnxruntime(tmp_path, case, direction):
    attrs = dict(LSTM_CASES[case])
    if direction == "bidirectional" and "activations" in attrs:  # one list per direction, alphas consumed in order
        attrs["activations"] = attrs["activations"] * 2
        for key in ("activation_alpha", "activation_beta"):
            if key in attrs:
                attrs[key] = attrs[key] * 2
    path = node_graph(tmp_path / "lstm.onnx", "LSTM", direction, **attrs)
    cell, _ = check_against_onnxruntime(path, "LSTM", 2 if direction == "bidirectional" else 1)
    assert cell.peepholes == bool(attrs.get("peepholes")) and cell.clip == pytest.approx(attrs.get("clip"))
    assert cell.coupling == ("forget_from_input" if attrs.get("input_forget") else None)


def test_activation_parameters_follow_onnxruntime():
    path_cells = {
        "alpha_beta_in_order": ("hard_sigmoid(0.3,0.4)", "scaled_tanh(1.5,0.7)", "affine(0.8,-0.1)"),
        "leaky_softsign": ("sigmoid", "leaky_relu(0.01)", "softsign"),  # onnxruntime's default alpha
        "thresholded_elu": ("sigmoid", "thresholded_relu(0.0)", "elu(1.0)"),  # 0, not the spec's 1.0
        "everything": ("hard_sigmoid(0.25,0.45)", "softsign", "elu(0.8)"),
    }
    from gatescope.checkpoints.formats.onnx import node_cell

    for case, expected in path_cells.items():
        attrs = {k: v for k, v in LSTM_CASES[case].items() if k != "peepholes"}
        cell = node_cell("LSTM", attrs, peepholes=False)
        assert tuple(map(str, (cell.gate_activation, cell.activation, cell.output_activation))) == expected
    assert node_cell("RNN", {}, False).activation == Activation("tanh")


GRU_CASES = {
    "hard_sigmoid_softsign": dict(activations=["HardSigmoid", "Softsign"]),
    "clip": dict(clip=0.5),
    "leaky_alpha_clip": dict(activations=["Sigmoid", "LeakyRelu"], activation_alpha=[0.2], clip=1.0),
}


@pytest.mark.parametrize("linear_before_reset", [0, 1])
@pytest.mark.parametrize("case", sorted(GRU_CASES))
def test_gru_attributes_match_onnxruntime(tmp_path, case, linear_before_reset):
    attrs = {k: v * 2 if isinstance(v, list) else v for k, v in GRU_CASES[case].items()}  # both directions
    path = node_graph(tmp_path / "gru.onnx", "GRU", "bidirectional", linear_before_reset=linear_before_reset, **attrs)
    cell, _ = check_against_onnxruntime(path, "GRU", 2)
    assert cell.reset_after == bool(linear_before_reset)


RNN_CASES = {
    "tanh": dict(),
    "relu": dict(activations=["Relu"]),
    "clip": dict(clip=0.4),
    "leaky": dict(activations=["LeakyRelu"], activation_alpha=[0.1]),
    "hard_sigmoid": dict(activations=["HardSigmoid"]),
}


@pytest.mark.parametrize("direction", ["forward", "bidirectional"])
@pytest.mark.parametrize("case", sorted(RNN_CASES))
def test_rnn_node_matches_onnxruntime(tmp_path, case, direction):
    attrs = dict(RNN_CASES[case])
    if direction == "bidirectional":
        attrs = {k: v * 2 if isinstance(v, list) else v for k, v in attrs.items()}
    path = node_graph(tmp_path / "rnn.onnx", "RNN", direction, **attrs)
    cell, trace = check_against_onnxruntime(path, "RNN", 2 if direction == "bidirectional" else 1)
    assert trace.names[0] == "rnn.l0.fwd.h" and cell.name == "RNN"


def test_a_variant_survives_inspect_and_convert(tmp_path, capsys):
    from tests.format_fixtures import convert_round_trip, modules

    path = node_graph(tmp_path / "lstm.onnx", "LSTM", "bidirectional", **LSTM_CASES["everything"] | dict(
        activations=LSTM_CASES["everything"]["activations"] * 2, activation_alpha=[0.25, 0.8] * 2,
        activation_beta=[0.45] * 2))
    _, direct, converted = convert_round_trip(tmp_path, capsys, path)
    assert modules(direct) == modules(converted)
    variant = ("peepholes", "coupling", "gate_activation", "activation", "output_activation", "clip")
    described = [{k: m.get(k) for k in variant} for m in (direct["modules"][0], converted["modules"][0])]
    assert described[0] == described[1] == {
        "peepholes": True, "coupling": "forget_from_input", "gate_activation": "hard_sigmoid(0.25,0.44999998807907104)",
        "activation": "softsign", "output_activation": "elu(0.800000011920929)", "clip": 1.5}
    assert direct["modules"][0]["layers"][0]["timescale"]["gate"] == "f"


@pytest.mark.parametrize("op, attrs", [
    ("LSTM", dict(peepholes=True, input_forget=1, clip=1.0)), ("GRU", dict(linear_before_reset=0)), ("RNN", {}),
])
def test_direction_reverse_alone_matches_onnxruntime(tmp_path, op, attrs):
    path = node_graph(tmp_path / "rev.onnx", op, "reverse", **attrs)
    _, trace = check_against_onnxruntime(path, op, "reverse")
    assert {n.split(".")[2] for n in trace.names} == {"bwd"} and trace.meta["modules"][0]["reverse_only"] is True
