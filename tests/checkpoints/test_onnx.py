"""ONNX LSTM / GRU graphs, against onnxruntime's outputs: torch.onnx.export and hand-built graphs."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from tests.checkpoint_fixtures import LanguageModel
from tests.format_fixtures import (
    assert_loads_or_one_line,
    cli_trace,
    convert_round_trip,
    each_truncation,
    fails,
    inspect_json,
    modules,
)
from safetensors.torch import save_file

import gatescope
from gatescope.errors import GatescopeError

onnx = pytest.importorskip("onnx", reason="onnx is not installed (pip install 'gatescope[formats]')")
ort = pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (pip install 'gatescope[formats]')")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

IDS = [1, 2, 3, 4, 5, 6]
TOL = dict(atol=1e-5, rtol=0)


def with_outputs(path, names):
    """The model at ``path`` with intermediate values also made graph outputs, as an ORT session."""
    model = onnx.load(str(path))
    model.graph.output.extend([helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in names])
    return ort.InferenceSession(model.SerializeToString())


def exported(tmp_path, cell, **kwargs):
    torch.manual_seed(0)
    model = LanguageModel(cell=cell, **kwargs).eval()
    path = tmp_path / f"{cell.lower()}.onnx"
    with torch.no_grad():
        torch.onnx.export(model, (torch.tensor([IDS]),), path, dynamo=False, input_names=["ids"],
                          output_names=["logits"], dynamic_axes={"ids": {1: "time"}})
    return path


@pytest.mark.filterwarnings("ignore")
@pytest.mark.parametrize("cell", ["LSTM", "GRU"])
def test_exported_bidirectional_stack_matches_onnxruntime(tmp_path, capsys, cell):
    path = exported(tmp_path, cell, num_layers=2, bidirectional=True)
    nodes = [n for n in onnx.load(str(path)).graph.node if n.op_type == cell]
    outs = [n.output[0] for n in nodes] + ([n.output[2] for n in nodes] if cell == "LSTM" else [])
    logits, *values = with_outputs(path, outs).run(None, {"ids": np.array([IDS])})
    trace = cli_trace(tmp_path, path, "--ids", " ".join(map(str, IDS)))
    for layer in range(2):
        y = values[layer]  # (T, D, B, H)
        for d, direction in enumerate(("fwd", "bwd")):
            torch.testing.assert_close(trace[f"rnn.l{layer}.{direction}.h"], torch.as_tensor(y[:, d, 0]), **TOL)
            if cell == "LSTM":  # Y_c: the cell state after the last step of each direction
                step = -1 if direction == "fwd" else 0
                torch.testing.assert_close(trace[f"rnn.l{layer}.{direction}.c"][step],
                                           torch.as_tensor(values[2 + layer][d, 0]), **TOL)
    with torch.no_grad():
        got = gatescope.load(path)(torch.tensor([IDS]))
    torch.testing.assert_close(got, torch.as_tensor(logits), **TOL)
    _, direct, converted = convert_round_trip(tmp_path, capsys, path)
    assert modules(direct) == modules(converted) == [
        {"name": "rnn", "cell": cell, "input_size": 6, "hidden_size": 8, "num_layers": 2, "bidirectional": True,
         "proj_size": 0, "bias": True}]


def gru_graph(path, linear_before_reset, direction="bidirectional", **attrs):
    """A hand-built ONNX GRU over float input X (T, 1, 3), hidden 4, its Y an output."""
    rng = np.random.default_rng(0)
    dirs = 2 if direction == "bidirectional" else 1
    weights = {n: rng.normal(0, 0.6, s).astype(np.float32)
               for n, s in (("W", (dirs, 12, 3)), ("R", (dirs, 12, 4)), ("B", (dirs, 24)))}
    node = helper.make_node("GRU", ["X", "W", "R", "B"], ["Y"], name="/gru/GRU", hidden_size=4,
                            direction=direction, linear_before_reset=linear_before_reset, **attrs)
    graph = helper.make_graph(
        [node], "gru", [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["T", 1, 3])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(v, n) for n, v in weights.items()])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)]), str(path))
    return path


@pytest.mark.parametrize("linear_before_reset", [0, 1])
def test_hand_built_gru_both_reset_variants_match_onnxruntime(tmp_path, capsys, linear_before_reset):
    path = gru_graph(tmp_path / "gru.onnx", linear_before_reset)
    x = np.random.default_rng(1).normal(size=(7, 1, 3)).astype(np.float32)
    (y,) = ort.InferenceSession(str(path)).run(None, {"X": x})  # (T, 2, 1, 4)
    report = inspect_json(capsys, path)
    assert modules(report) == [{"name": "gru", "cell": "GRU", "input_size": 3, "hidden_size": 4, "num_layers": 1,
                                "bidirectional": True, "proj_size": 0, "bias": True}
                               | ({} if linear_before_reset else {"reset_after": False})]
    inputs = tmp_path / "x.safetensors"
    save_file({"x": torch.as_tensor(x)}, inputs)  # the graph's own input X [T, 1, 3]
    trace = cli_trace(tmp_path, path, "--input", str(inputs))
    for d, direction in enumerate(("fwd", "bwd")):
        torch.testing.assert_close(trace[f"gru.l0.{direction}.h"], torch.as_tensor(y[:, d, 0]), **TOL)
    _, direct, converted = convert_round_trip(tmp_path, capsys, path)
    assert modules(direct) == modules(converted)


def test_what_gatescope_does_not_compute_is_refused(tmp_path, capsys):
    err = fails(capsys, "inspect", gru_graph(tmp_path / "rev.onnx", 1, direction="sideways"), "--json")
    assert "has direction 'sideways', not forward, reverse or bidirectional" in err and err.count("\n") == 1
    err = fails(capsys, "inspect", gru_graph(tmp_path / "act.onnx", 1, direction="bidirectional",
                                             activations=["Sigmoid", "Tanh", "HardSigmoid", "Tanh"]), "--json")
    assert "two directions with different activations" in err and err.count("\n") == 1
    err = fails(capsys, "inspect", gru_graph(tmp_path / "odd.onnx", 1, activations=["Sigmoid", "Gelu"]), "--json")
    assert "activation 'gelu', which is not one of ONNX's" in err
    lstm = helper.make_node("LSTM", ["X", "W", "R", "", "", "", "", "P"], ["Y"], hidden_size=2)
    graph = helper.make_graph(
        [lstm], "peep", [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["T", 1, 3])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(np.ones(s, np.float32), n) for n, s in
         (("W", (1, 8, 3)), ("R", (1, 8, 2)), ("P", (1, 5)))])
    onnx.save(helper.make_model(graph), str(tmp_path / "peep.onnx"))
    report = inspect_json(capsys, tmp_path / "peep.onnx")  # the node is listed; as one chain it is refused
    assert "has P [1, 5]; expected [1, 6]" in report["chain"]
    (tmp_path / "bad.onnx").write_bytes(b"\x00garbage")
    assert "is not a readable ONNX model" in fails(capsys, "inspect", tmp_path / "bad.onnx", "--json")


def test_a_damaged_onnx_file_is_a_one_line_error(tmp_path):
    for damaged in each_truncation(gru_graph(tmp_path / "gru.onnx", 0), tmp_path):
        assert_loads_or_one_line(damaged)


def stacked_lstm_with_initial_state(path, batch=1, differ=False):
    """A hand-built two-layer bidirectional ONNX LSTM (/rnn/LSTM, /rnn/LSTM_1) over X (T, batch, 3), hidden 4:
    the first layer starts from a stored initial_h and initial_c, the second from a stored initial_h alone."""
    rng = np.random.default_rng(2)
    values = {}
    for layer, width in ((0, 3), (1, 8)):
        values |= {f"W{layer}": rng.normal(0, 0.5, (2, 16, width)), f"R{layer}": rng.normal(0, 0.5, (2, 16, 4)),
                   f"B{layer}": rng.normal(0, 0.5, (2, 32)), f"H{layer}": rng.normal(0, 0.8, (2, 1, 4)).repeat(batch, 1)}
    values["C0"] = rng.normal(0, 0.8, (2, 1, 4)).repeat(batch, 1)
    if differ:
        values["H0"][:, -1] += 1
    nodes = [helper.make_node("LSTM", ["X", "W0", "R0", "B0", "", "H0", "C0"], ["Y0"], name="/rnn/LSTM",
                              hidden_size=4, direction="bidirectional"),
             helper.make_node("Transpose", ["Y0"], ["T0"], perm=[0, 2, 1, 3]),
             helper.make_node("Reshape", ["T0", "shape"], ["X1"]),
             helper.make_node("LSTM", ["X1", "W1", "R1", "B1", "", "H1"], ["Y1"], name="/rnn/LSTM_1",
                              hidden_size=4, direction="bidirectional"),
             helper.make_node("Transpose", ["Y1"], ["T1"], perm=[0, 2, 1, 3]),
             helper.make_node("Reshape", ["T1", "shape"], ["out"])]
    graph = helper.make_graph(
        nodes, "lstm", [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["T", batch, 3])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(v.astype(np.float32), n) for n, v in values.items()]
        + [numpy_helper.from_array(np.array([0, 0, -1], np.int64), "shape")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)]), str(path))
    return path


def test_a_stored_initial_state_is_the_modules_learned_one_as_onnxruntime_runs_it(tmp_path, capsys):
    path = stacked_lstm_with_initial_state(tmp_path / "h0.onnx")
    x = np.random.default_rng(3).normal(size=(5, 1, 3)).astype(np.float32)
    (expected,) = ort.InferenceSession(str(path)).run(None, {"X": x})  # (T, 1, 2 * 4)
    model = gatescope.load(path)
    assert model.initial_states == {"rnn": {"h": "rnn.h0", "c": "rnn.c0"}}
    assert not model.rnn.c0[2:].any()  # the second layer's node stores no initial_c: zeros
    with torch.no_grad():
        got = model(torch.as_tensor(x).transpose(0, 1).repeat(2, 1, 1))  # every sequence from the one state
    for sequence in got:
        torch.testing.assert_close(sequence, torch.as_tensor(expected[:, 0]), **TOL)
    out, _, _ = convert_round_trip(tmp_path, capsys, path)
    with torch.no_grad():
        torch.testing.assert_close(gatescope.load(out)(torch.as_tensor(x).transpose(0, 1)), got[:1], **TOL)


def test_a_stored_initial_state_that_differs_across_the_batch_is_refused(tmp_path, capsys):
    path = stacked_lstm_with_initial_state(tmp_path / "h0.onnx", batch=2, differ=True)
    report = inspect_json(capsys, path)  # the nodes are listed; as one chain it is refused
    assert report["chain"].endswith(
        "LSTM node /rnn/LSTM stores an initial_h that differs across its batch of 2: a state for each sequence, "
        "where gatescope runs every sequence from one learned initial state")
    with pytest.raises(GatescopeError, match="differs across its batch of 2"):
        gatescope.load(path)
