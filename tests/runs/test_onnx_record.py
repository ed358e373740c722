"""Recording the recurrent nodes of ONNX graphs, against onnxruntime and the ONNX spec's equations.

Each graph shape real models have (tests/onnx_graphs.py): h and c of every node against the node's own
outputs from onnxruntime at 1e-5, and every gate against the spec's equations computed in numpy from the
node's inputs (onnx_graphs.onnx_lstm / onnx_gru), at 1e-5.
"""
from __future__ import annotations

import asyncio

import numpy as np
import pytest
import torch
from tests.cli_helpers import cli, fails
from tests.onnx_graphs import (
    ConvLSTM,
    LearnedState,
    STFTLSTM,
    TagGRU,
    decoder_loop,
    detector,
    export,
    onnx,
    onnx_gru,
    onnx_lstm,
    session,
)

from gatescope.checkpoints.formats.onnx_graph import read_graph
from gatescope.recorder.interventions import Intervention
from gatescope.recorder.recording import record
from gatescope.runs.onnx_record import MAX_DIFFERENCE, record_graph
from gatescope.traces.trace import load_trace

TOL = dict(atol=1e-5, rtol=0)
RNG = np.random.default_rng(0)


def close(ours, theirs) -> None:
    torch.testing.assert_close(torch.as_tensor(np.asarray(ours, np.float32)),
                               torch.as_tensor(np.asarray(theirs, np.float32)), **TOL)


def run_nodes(path, feeds: dict, op: str) -> list[dict[str, np.ndarray]]:
    """onnxruntime's values of every top-level ``op`` node's inputs (X, W, R, B, initial_h, initial_c) and outputs."""
    model = onnx.load(str(path))
    stored = {i.name: onnx.numpy_helper.to_array(i) for i in model.graph.initializer}
    nodes = [n for n in model.graph.node if n.op_type == op]
    wanted = [v for n in nodes for v in list(n.input) + list(n.output) if v and v not in stored and v not in feeds]
    values = dict(zip(wanted, session(path, wanted).run(wanted, feeds))) | stored | feeds
    roles_in = ("X", "W", "R", "B", "sequence_lens", "initial_h", "initial_c")
    return [{role: values[v] for role, v in zip(roles_in, n.input) if v}
            | {role: values[v] for role, v in zip(("Y", "Y_h", "Y_c"), n.output) if v} for n in nodes]


def check_lstm_layer(trace, name: str, values: dict[str, np.ndarray]) -> None:
    """Every quantity of a forward LSTM node's recording against the spec's equations and onnxruntime's outputs."""
    expected = onnx_lstm(values["X"], values["W"], values["R"], values.get("B"), values.get("initial_h"),
                         values.get("initial_c"))
    for kind, reference in expected.items():
        close(trace.padded(f"{name}.{kind}"), reference)
    h, c = trace.padded(f"{name}.h"), trace.padded(f"{name}.c")
    close(h, values["Y"][:, 0].transpose(1, 0, 2))
    if "Y_c" in values:
        close(c[:, -1], values["Y_c"][0])


def test_conv_front_end_two_layer_lstm_every_gate_and_state(tmp_path):
    torch.manual_seed(0)
    path = export(ConvLSTM(), (torch.randn(1, 400),), tmp_path / "conv.onnx", dynamo=False, input_names=["audio"],
                  output_names=["logits"], dynamic_axes={"audio": {0: "B", 1: "N"}})
    audio = RNG.normal(size=(2, 800)).astype(np.float32)
    trace = record_graph(read_graph(path), {"audio": audio}).trace
    layers = run_nodes(path, {"audio": audio}, "LSTM")
    assert [n["module"] + f".l{n['layer']}" for n in trace.meta["onnx"]["nodes"]] == ["rnn.l0", "rnn.l1"]
    for layer, values in enumerate(layers):
        check_lstm_layer(trace, f"rnn.l{layer}.fwd", values)
    assert all(n["max_difference"] < 1e-5 for n in trace.meta["onnx"]["nodes"])
    assert trace.meta["modules"][0] | {} == {"name": "rnn", "cell": "LSTM", "input_size": 8, "hidden_size": 6,
                                           "num_layers": 2, "bidirectional": False, "proj_size": 0, "bias": True}


def test_an_edit_is_fed_through_the_rest_of_the_graph(tmp_path):
    """Holding units of layer 0's h at zero changes layer 1 and the logits exactly as in the torch model."""
    torch.manual_seed(0)
    model = ConvLSTM().eval()
    path = export(model, (torch.randn(1, 400),), tmp_path / "conv.onnx", dynamo=False, input_names=["audio"],
                  output_names=["logits"], dynamic_axes={"audio": {0: "B", 1: "N"}})
    audio = RNG.normal(size=(2, 800)).astype(np.float32)
    edit = [Intervention("rnn.l0.fwd.h", units=[0, 3], value=0.0, steps=slice(5, None))]
    edited = record_graph(read_graph(path), {"audio": audio}, interventions=edit)
    plain = record_graph(read_graph(path), {"audio": audio})
    with torch.no_grad(), record(model, interventions=edit) as rec:
        logits = model(torch.from_numpy(audio))
    close(edited.outputs[0]["logits"], logits)
    assert np.abs(plain.outputs[0]["logits"] - logits.numpy()).max() > 1e-3  # the edit did something
    for name in rec.trace.names:
        close(edited.trace[name], rec.trace[name])


@pytest.mark.parametrize("rate", [16000, 8000])
def test_if_branch_taken_is_recorded_from_its_computed_weights_and_state(tmp_path, rate):
    """The detector's If picks a branch by sample rate; the LSTM inside reads W through an Unsqueeze and
    h0 = 0.5 h from the outer graph."""
    path = detector(tmp_path / "detector.onnx")
    audio = RNG.normal(size=(2, 320)).astype(np.float32)
    h, c = (RNG.normal(size=(1, 2, 4)).astype(np.float32) for _ in range(2))
    feeds = {"audio": audio, "sr": np.array(rate, np.int64), "h": h, "c": c}
    trace = record_graph(read_graph(path), feeds).trace
    tag = "fast" if rate == 16000 else "slow"
    assert trace.meta["modules"][0]["name"] == f"{tag}.rnn" and trace.meta["onnx"]["not_run"]
    model = onnx.load(str(path))
    branch = next(a.g for n in model.graph.node if n.op_type == "If" for a in n.attribute
                  if a.name == ("then_branch" if tag == "fast" else "else_branch"))
    weights = {i.name: onnx.numpy_helper.to_array(i) for i in branch.initializer}
    conv = next(n for n in branch.node if n.op_type == "Conv")
    stride, pad = (next(a.ints[0] for a in conv.attribute if a.name == name) for name in ("strides", "pads"))
    features = torch.nn.functional.conv1d(torch.from_numpy(audio)[:, None], torch.from_numpy(weights[f"{tag}.conv.weight"]),
                                          torch.from_numpy(weights[f"{tag}.conv.bias"]), stride=stride, padding=pad)
    x = features.relu().permute(2, 0, 1).numpy()  # (T, B, C)
    expected = onnx_lstm(x, weights[f"{tag}.W2"][None], weights[f"{tag}.R"], weights[f"{tag}.B"], 0.5 * h, c)
    for kind, reference in expected.items():
        close(trace.padded(f"{tag}.rnn.l0.fwd.{kind}"), reference)
    _, hn, cn = session(path).run(None, feeds)
    close(trace.padded(f"{tag}.rnn.l0.fwd.h")[:, -1], hn[0])
    close(trace.padded(f"{tag}.rnn.l0.fwd.c")[:, -1], cn[0])


def test_a_stateful_graph_runs_chunk_by_chunk_from_the_command_line(tmp_path, capsys):
    """`trace --chunk --carry`: the detector's hn and cn go back in as h and c; the chunks' steps join into one
    sequence, each chunk's last h and c equal to what onnxruntime gives chunk by chunk."""
    path = detector(tmp_path / "detector.onnx")
    audio = RNG.normal(size=(1, 3 * 256 + 100)).astype(np.float32)
    np.save(tmp_path / "audio.npy", audio)
    np.save(tmp_path / "zeros.npy", np.zeros((1, 1, 4), np.float32))
    out = cli(capsys, "trace", path, "--input", tmp_path / "audio.npy", "--input", "sr=16000",
              "--input", f"h={tmp_path / 'zeros.npy'}", "--input", f"c={tmp_path / 'zeros.npy'}",
              "--chunk", 256, "--carry", "hn=h", "--carry", "cn=c", "-o", tmp_path / "t.safetensors")
    assert "wrote" in out.out and "the last 100 values of audio" in out.err
    trace = load_trace(tmp_path / "t.safetensors")
    steps = trace.num_tokens // 3
    assert trace.num_sequences == 1 and trace.meta["onnx"]["runs"] == 3
    ort = session(path)
    h = c = np.zeros((1, 1, 4), np.float32)
    for k in range(3):
        _, h, c = ort.run(None, {"audio": audio[:, k * 256:(k + 1) * 256], "sr": np.array(16000), "h": h, "c": c})
        close(trace["fast.rnn.l0.fwd.h"][(k + 1) * steps - 1], h[0, 0])
        close(trace["fast.rnn.l0.fwd.c"][(k + 1) * steps - 1], c[0, 0])


def test_stft_as_conv1d_front_end(tmp_path):
    torch.manual_seed(1)
    path = export(STFTLSTM(), (torch.randn(1, 400),), tmp_path / "stft.onnx", dynamo=False, input_names=["audio"],
                  dynamic_axes={"audio": {0: "B", 1: "N"}})
    audio = RNG.normal(size=(2, 640)).astype(np.float32)
    trace = record_graph(read_graph(path), {"audio": audio}).trace
    (values,) = run_nodes(path, {"audio": audio}, "LSTM")
    check_lstm_layer(trace, "rnn.l0.fwd", values)


def test_bidirectional_gru_behind_an_embedding_with_a_tag_head(tmp_path):
    torch.manual_seed(2)
    path = export(TagGRU(), (torch.tensor([[1, 2, 3]]),), tmp_path / "tag.onnx", dynamo=False, input_names=["ids"],
                  dynamic_axes={"ids": {0: "B", 1: "T"}})
    ids = RNG.integers(0, 20, (3, 9))
    trace = record_graph(read_graph(path), {"ids": ids}).trace
    assert torch.equal(trace.token_ids, torch.as_tensor(ids.reshape(-1)))
    (values,) = run_nodes(path, {"ids": ids}, "GRU")
    for d, direction in enumerate(("fwd", "bwd")):
        expected = onnx_gru(values["X"], values["W"][d], values["R"][d], values["B"][d], values["initial_h"][d],
                            linear_before_reset=1, reverse=d == 1)
        for kind, reference in expected.items():
            close(trace.padded(f"gru.l0.{direction}.{kind}"), reference)
        close(trace.padded(f"gru.l0.{direction}.h"), values["Y"][:, d].transpose(1, 0, 2))


def test_initial_states_computed_and_learned_in_the_graph(tmp_path):
    torch.manual_seed(3)
    path = export(LearnedState(), (torch.randn(2, 4, 3),), tmp_path / "state.onnx", dynamo=False, input_names=["x"],
                  dynamic_axes={"x": {0: "B", 1: "T"}})
    x = RNG.normal(size=(2, 6, 3)).astype(np.float32)
    graph = read_graph(path)
    assert graph.nodes[0].states["initial_h"].startswith("computed by")
    trace = record_graph(graph, {"x": x}).trace
    (values,) = run_nodes(path, {"x": x}, "LSTM")
    assert np.abs(values["initial_h"]).min() > 0 and np.abs(values["initial_c"]).min() > 0
    check_lstm_layer(trace, "rnn.l0.fwd", values)


def test_a_loop_decoder_is_recorded_step_after_step(tmp_path):
    path = decoder_loop(tmp_path / "decoder.onnx", steps=5)
    feeds = {"x0": RNG.normal(size=(2, 2)).astype(np.float32), "h0": RNG.normal(size=(1, 2, 3)).astype(np.float32),
             "c0": RNG.normal(size=(1, 2, 3)).astype(np.float32)}
    graph = read_graph(path)
    assert graph.nodes[0].where == "body of /decode/Loop"
    trace = record_graph(graph, feeds).trace
    ys, c_last = session(path).run(None, feeds)  # (steps, B, H), (1, B, H)
    assert trace.meta["onnx"]["nodes"][0]["calls"] == 5
    close(trace.padded("dec.l0.fwd.h"), ys.transpose(1, 0, 2))
    close(trace.padded("dec.l0.fwd.c")[:, -1], c_last[0])
    h_prev = np.concatenate([feeds["h0"].transpose(1, 0, 2), ys.transpose(1, 0, 2)[:, :-1]], axis=1)  # (B, T, H)
    model = onnx.load(str(path))
    weights = {i.name: onnx.numpy_helper.to_array(i) for i in model.graph.initializer}
    x_steps = np.concatenate([feeds["x0"][:, None], ys.transpose(1, 0, 2)[:, :-1] @ weights["P"]], axis=1)
    c_prev = feeds["c0"][0]
    for t in range(5):  # each step is one call of the node: its gates from that step's x, h and c
        step = onnx_lstm(x_steps[:, t][None], weights["W"], weights["R"], weights["B"], h_prev[:, t][None], c_prev[None])
        for kind, reference in step.items():
            close(trace.padded(f"dec.l0.fwd.{kind}")[:, t], reference[:, 0])
        c_prev = step["c"][:, 0]


def test_a_node_that_disagrees_with_onnxruntime_is_refused(tmp_path, monkeypatch):
    import gatescope.runs.onnx_record as onnx_record

    path = decoder_loop(tmp_path / "decoder.onnx", steps=2)
    feeds = {"x0": np.ones((1, 2), np.float32), "h0": np.zeros((1, 1, 3), np.float32),
             "c0": np.zeros((1, 1, 3), np.float32)}
    real = onnx_record._difference
    monkeypatch.setattr(onnx_record, "_difference", lambda *a: real(*a) + 2 * MAX_DIFFERENCE)
    with pytest.raises(onnx_record.GatescopeError, match="differ from onnxruntime's by"):
        record_graph(read_graph(path), feeds)


def test_inspect_lists_the_nodes_and_trace_and_browse_work_from_the_command_line(tmp_path, capsys):
    """The documented example (docs/guide/onnx.md): a conv front-end and If-wrapped LSTMs."""
    import json

    from gatescope.tui.app import GatescopeApp
    from gatescope.tui.heatmap import Heatmap
    from gatescope.tui.unit_detail import UnitDetail

    path = detector(tmp_path / "detector.onnx")
    np.save(tmp_path / "audio.npy", RNG.normal(size=(1, 512)).astype(np.float32))
    np.save(tmp_path / "state.npy", np.zeros((1, 1, 4), np.float32))
    report = json.loads(cli(capsys, "inspect", path, "--json").out)
    assert [(n["node"], n["where"], n["recordable"]) for n in report["onnx"]["nodes"]] == [
        ("/fast/rnn/LSTM", "then of /select/If", True), ("/slow/rnn/LSTM", "else of /select/If", True)]
    assert report["onnx"]["nodes"][0]["feeds"] == ["Relu /fast/Relu", "Conv /fast/conv/Conv", "graph input audio"]
    assert report["onnx"]["nodes"][0]["initial_state"] == {"initial_h": "computed by Mul /state/Mul",
                                                           "initial_c": "graph input c"}
    assert "Equal node /Equal is not one gatescope runs" in report["chain"]  # not read as a checkpoint
    state = f"={tmp_path / 'state.npy'}"
    given = ["--input", tmp_path / "audio.npy", "--input", "sr=8000", "--input", "h" + state, "--input", "c" + state]
    report = json.loads(cli(capsys, "inspect", path, *given, "--json", "--no-tui").out)
    slow = report["onnx"]["nodes"][1]
    assert slow["max_difference"] < 1e-5 and report["onnx"]["nodes"][0]["max_difference"] is None
    assert set(report["saturation"]) == {f"slow.rnn.l0.fwd.{k}" for k in "ifo"}
    text = cli(capsys, "inspect", path, *given, "--no-tui").out
    assert "/slow/rnn/LSTM" in text and "else of /select/If" in text
    cli(capsys, "trace", path, *given, "-o", tmp_path / "t.safetensors")
    trace = load_trace(tmp_path / "t.safetensors")
    saturation = json.loads(cli(capsys, "analyze", "saturation", tmp_path / "t.safetensors", "--json").out)
    assert {row["name"] for row in saturation["saturation"]} >= {"slow.rnn.l0.fwd.f"}

    async def scenario() -> None:
        app = GatescopeApp(tmp_path / "t.safetensors", start="slow.rnn.l0.fwd.i:0")
        async with app.run_test(size=(120, 40)) as pilot:
            await app.workers.wait_for_complete()
            await pilot.pause()
            heatmap = app.query_one(Heatmap)
            assert app.name_shown == "slow.rnn.l0.fwd.i"
            expected = {k: float(trace[f"slow.rnn.l0.fwd.{k}"][heatmap.row, heatmap.unit]) for k in "ifgoch"}
            assert app.query_one(UnitDetail).values_at_cursor() == expected

    asyncio.run(scenario())


def test_command_line_inputs_are_checked_in_one_line(tmp_path, capsys):
    path = detector(tmp_path / "detector.onnx")
    np.save(tmp_path / "audio.npy", np.zeros((1, 64), np.float32))
    out = tmp_path / "t.safetensors"
    fails(capsys, "trace", path, "--input", tmp_path / "audio.npy", "-o", out, match="the graph also takes sr")
    fails(capsys, "trace", path, "--input", "audio=nope.txt", "--input", "sr=1", "-o", out,
          match="give a .npy or .safetensors file")
    fails(capsys, "trace", path, "--input", tmp_path / "audio.npy", "--input", "sr=1", "--input", "h=1",
          "--input", "c=1", "--carry", "hn=h", "-o", out, match="--carry feeds one chunk's outputs")
    fails(capsys, "trace", path, "--input", tmp_path / "audio.npy", "--input", "sr=16000", "--input", "h=1.5",
          "--input", "c=1", "-o", out, match="onnxruntime cannot run the model on this input")
    assert not out.exists()


@pytest.mark.parametrize(
    ("op", "kinds", "match"),
    [
        ("LSTM", "q", "--kinds q: unknown kind(s); rnn (LSTM: i f g o c h)"),
        ("LSTM", "h,r", "--kinds r: not computed by the selected module; rnn (LSTM: i f g o c h)"),
        ("GRU", "c", "--kinds c: not computed by the selected module; rnn (GRU: r z n h)"),
        ("RNN", "i,f", "--kinds i, f: not computed by the selected module; rnn (RNN: h)"),
    ],
)
def test_a_kind_no_node_records_is_refused_and_nothing_written(tmp_path, capsys, op, kinds, match):
    from tests.onnx_graphs import single_node

    path = single_node(tmp_path / "one.onnx", op, outputs=("Y", "Y_h", "Y_c") if op == "LSTM" else ("Y", "Y_h"))
    np.save(tmp_path / "x.npy", RNG.normal(size=(4, 2, 3)).astype(np.float32))
    out = tmp_path / "t.safetensors"
    fails(capsys, "trace", path, "--input", tmp_path / "x.npy", "--kinds", kinds, "-o", out, match=match)
    assert not out.exists()


def test_kinds_are_checked_against_the_selected_nodes_together(tmp_path, capsys):
    from tests.onnx_graphs import lstm_and_gru

    path = lstm_and_gru(tmp_path / "pair.onnx")
    np.save(tmp_path / "x.npy", RNG.normal(size=(4, 2, 3)).astype(np.float32))
    given = [path, "--input", tmp_path / "x.npy"]
    out = tmp_path / "t.safetensors"
    fails(capsys, "trace", *given, "--kinds", "m", "-o", out,
          match="--kinds m: not computed by any selected module; lstm (LSTM: i f g o c h), gru (GRU: r z n h)")
    fails(capsys, "trace", *given, "--modules", "gru", "--kinds", "r,c", "-o", out,
          match="--kinds c: not computed by the selected module; gru (GRU: r z n h)")
    assert not out.exists()
    cli(capsys, "trace", *given, "--kinds", "c,r", "-o", out)  # each kind from the node that computes it
    assert sorted(load_trace(out).names) == ["gru.l0.fwd.r", "lstm.l0.fwd.c"]


def test_a_kind_only_a_branch_not_taken_computes_is_refused(tmp_path):
    from tests.onnx_graphs import lstm_and_gru

    from gatescope.errors import GatescopeError

    graph = read_graph(lstm_and_gru(tmp_path / "branched.onnx", branched=True))
    x = RNG.normal(size=(4, 2, 3)).astype(np.float32)
    with pytest.raises(GatescopeError) as refused:
        record_graph(graph, {"X": x, "use_lstm": np.array(True)}, kinds=["h", "r"])
    assert str(refused.value) == "--kinds r: not computed by the module this input runs; lstm (LSTM: i f g o c h)"
    taken = record_graph(graph, {"X": x, "use_lstm": np.array(False)}, kinds=["h", "r"]).trace
    assert sorted(taken.names) == ["gru.l0.fwd.h", "gru.l0.fwd.r"]


@pytest.mark.slow
def test_torch_dynamo_export_with_external_data(tmp_path, capsys):
    """torch.onnx.export(dynamo=True) writes the weights to model.onnx.data beside the model."""
    pytest.importorskip("onnxscript", reason="torch.onnx.export(dynamo=True) needs onnxscript")
    torch.manual_seed(4)
    path = export(TagGRU(), (torch.tensor([[1, 2, 3, 4]]),), tmp_path / "tag.onnx", dynamo=True, external_data=True)
    assert (tmp_path / "tag.onnx.data").is_file()
    ids = RNG.integers(0, 20, (1, 4))
    np.save(tmp_path / "ids.npy", ids)
    cli(capsys, "trace", path, "--input", tmp_path / "ids.npy", "-o", tmp_path / "t.safetensors")
    trace = load_trace(tmp_path / "t.safetensors")
    (values,) = run_nodes(path, {next(iter(read_graph(path).inputs)): ids}, "GRU")
    for d, direction in enumerate(("fwd", "bwd")):
        close(trace.padded(f"gru.l0.{direction}.h"), values["Y"][:, d].transpose(1, 0, 2))


def test_editing_a_graph_from_the_command_line_says_what_can_be_done(tmp_path, capsys):
    path = detector(tmp_path / "detector.onnx")
    line = fails(capsys, "analyze", "ablate", path, "--units", "fast.rnn.l0.fwd.h:0", match="not edited from the "
                 "command line")
    assert "gatescope trace MODEL --input FILE" in line and "record_graph(..., interventions=...)" in line


def test_sequence_lens_pad_a_bidirectional_gru_as_onnxruntime_does(tmp_path):
    """Sequences shorter than the batch's X: recorded to their own length, the backward direction from their end."""
    from tests.onnx_graphs import single_node, value

    path = single_node(tmp_path / "gru.onnx", "GRU", inputs=("X", "W", "R", "B", "lens"), outputs=("Y", "Y_h"),
                       direction="bidirectional", linear_before_reset=1)
    model = onnx.load(str(path))
    model.graph.input.append(value("lens", onnx.TensorProto.INT32, ["B"]))
    onnx.save(model, str(path))
    x = RNG.normal(size=(6, 3, 3)).astype(np.float32)
    lens = np.array([6, 2, 4], np.int32)
    trace = record_graph(read_graph(path), {"X": x, "lens": lens}).trace
    y, y_h = session(path).run(None, {"X": x, "lens": lens})
    assert trace.lengths.tolist() == [6, 2, 4]
    for d, direction in enumerate(("fwd", "bwd")):
        h = trace.padded(f"rnn.l0.{direction}.h")  # (B, T, H), NaN past each end
        for b, n in enumerate(lens):
            close(h[b, :n], y[:n, d, b])
        close(h[torch.arange(3), torch.as_tensor(lens - 1) if d == 0 else torch.zeros(3, dtype=torch.long)], y_h[d])


def test_nodes_that_saw_different_sequences_are_recorded_one_at_a_time(tmp_path, capsys):
    from tests.onnx_graphs import helper, tensor, value

    rng = np.random.default_rng(5)
    inits = [tensor("W", (1, 8, 3), rng), tensor("R", (1, 8, 2), rng)]
    nodes = [helper.make_node("LSTM", ["X", "W", "R"], ["Y"], hidden_size=2, name="/enc/LSTM"),
             helper.make_node("LSTM", ["X2", "W", "R"], ["Y2"], hidden_size=2, name="/dec/LSTM")]
    graph = helper.make_graph(nodes, "two", [value("X", shape=["T", 1, 3]), value("X2", shape=["T2", 1, 3])],
                              [value("Y"), value("Y2")], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(tmp_path / "two.onnx"))
    np.save(tmp_path / "x.npy", RNG.normal(size=(5, 1, 3)).astype(np.float32))
    np.save(tmp_path / "x2.npy", RNG.normal(size=(3, 1, 3)).astype(np.float32))
    given = ["--input", tmp_path / "x.npy", "--input", f"X2={tmp_path / 'x2.npy'}"]
    fails(capsys, "trace", tmp_path / "two.onnx", *given, "-o", tmp_path / "t.safetensors",
          match="saw different sequences")
    cli(capsys, "trace", tmp_path / "two.onnx", *given, "--modules", "dec", "--kinds", "h,c", "-o",
        tmp_path / "t.safetensors")
    trace = load_trace(tmp_path / "t.safetensors")
    assert trace.names == ["dec.l0.fwd.c", "dec.l0.fwd.h"] and trace.num_tokens == 3


@pytest.mark.parametrize("linear_before_reset", [0, 1])
def test_every_gate_of_both_gru_variants_against_the_spec(tmp_path, linear_before_reset):
    from tests.onnx_graphs import single_node

    path = single_node(tmp_path / "gru.onnx", "GRU", outputs=("Y", "Y_h"), direction="bidirectional",
                       linear_before_reset=linear_before_reset)
    x = RNG.normal(size=(5, 2, 3)).astype(np.float32)
    trace = record_graph(read_graph(path), {"X": x}).trace
    weights = {i.name: onnx.numpy_helper.to_array(i) for i in onnx.load(str(path)).graph.initializer}
    y, _ = session(path).run(None, {"X": x})
    for d, direction in enumerate(("fwd", "bwd")):
        expected = onnx_gru(x, weights["W"][d], weights["R"][d], weights["B"][d],
                            linear_before_reset=linear_before_reset, reverse=d == 1)
        for kind, reference in expected.items():
            close(trace.padded(f"rnn.l0.{direction}.{kind}"), reference)
        close(trace.padded(f"rnn.l0.{direction}.h"), y[:, d].transpose(1, 0, 2))


def test_token_ids_for_a_graph_that_is_no_chain_point_to_its_own_inputs(tmp_path, capsys):
    path = detector(tmp_path / "detector.onnx")
    line = fails(capsys, "trace", path, "--ids", "1 2 3", "-o", tmp_path / "t.safetensors", match="--input FILE")
    assert "recorded over their own inputs" in line
