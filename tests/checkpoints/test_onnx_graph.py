"""Reading an ONNX graph for its recurrent nodes: where they sit, what feeds them, what is refused, external data."""
from __future__ import annotations

import json

import numpy as np
import pytest
from tests.cli_helpers import cli, fails
from tests.onnx_graphs import decoder_loop, detector, helper, onnx, single_node, value

from gatescope.checkpoints.formats.onnx_graph import read_graph
from gatescope.errors import GatescopeError


def external(tmp_path, name: str = "w.data"):
    """A one-LSTM model whose W, R, B are in ``name`` beside it; the model proto, re-readable with `rewrite`."""
    path = single_node(tmp_path / "inner.onnx")
    model = onnx.load(str(path))
    out = tmp_path / "model.onnx"
    onnx.save(model, str(out), save_as_external_data=True, all_tensors_to_one_file=True, location=name,
              size_threshold=0)
    return out


def rewrite(path, tensor: str, **entries: str) -> None:
    """Change the external-data entries (location, offset, length) of one tensor of the model at ``path``."""
    model = onnx.load(str(path), load_external_data=False)
    init = next(i for i in model.graph.initializer if i.name == tensor)
    for entry in init.external_data:
        if entry.key in entries:
            entry.value = entries[entry.key]
    path.write_bytes(model.SerializeToString())


def test_external_data_beside_the_model_is_read(tmp_path):
    path = external(tmp_path)
    expected = {i.name: onnx.numpy_helper.to_array(i) for i in onnx.load(str(tmp_path / "inner.onnx")).graph.initializer}
    graph = read_graph(path)
    for init in graph.model.graph.initializer:
        np.testing.assert_array_equal(onnx.numpy_helper.to_array(init), expected[init.name])


@pytest.mark.parametrize("entries, message", [
    ({"location": "../w.data"}, "not a file beside the model"),
    ({"location": "/etc/passwd"}, "not a file beside the model"),
    ({"offset": str(10**9)}, "outside the file"),
    ({"length": "4"}, "with 4 bytes; its type and shape"),
    ({"offset": "x"}, "which are not numbers"),
    ({"location": "missing.data"}, "no such file"),
])
def test_external_data_out_of_bounds_is_refused_in_one_line(tmp_path, capsys, entries, message):
    path = external(tmp_path)
    rewrite(path, "W", **entries)
    with pytest.raises(GatescopeError, match=message):
        read_graph(path)
    fails(capsys, "inspect", path, "--json", match=message)


def test_external_data_behind_a_link_is_refused(tmp_path):
    (tmp_path / "elsewhere").mkdir()
    path = external(tmp_path / "elsewhere")
    link_dir = tmp_path / "here"
    link_dir.mkdir()
    (link_dir / "model.onnx").write_bytes(path.read_bytes())
    (link_dir / "w.data").symlink_to(tmp_path / "elsewhere" / "w.data")
    with pytest.raises(GatescopeError, match="a symbolic link"):
        read_graph(link_dir / "model.onnx")


def test_where_each_node_sits_and_what_feeds_it(tmp_path):
    graph = read_graph(detector(tmp_path / "detector.onnx"))
    fast, slow = graph.nodes
    assert (fast.name, fast.layer, fast.where) == ("fast.rnn", 0, "then of /select/If")
    assert slow.where == "else of /select/If" and slow.refusal is None
    assert fast.inputs == {"X": "fast.X", "W": "fast.W", "R": "fast.R", "B": "fast.B", "initial_h": "h_half",
                           "initial_c": "c"}
    assert fast.attributes == {"hidden_size": 4}
    loop = read_graph(decoder_loop(tmp_path / "decoder.onnx")).nodes[0]
    assert loop.where == "body of /decode/Loop" and loop.states == {"initial_h": "loop body input h_in",
                                                                   "initial_c": "loop body input c_in"}


def test_what_cannot_be_recorded_is_listed_with_its_reason(tmp_path, capsys):
    """A graph with one node gatescope records and others it does not: inspect lists each with its reason;
    a graph none of whose nodes can be recorded is a one-line error."""
    rng = np.random.default_rng(0)
    weights = {n: onnx.numpy_helper.from_array(rng.normal(size=s).astype(np.float32), n)
               for n, s in (("W", (1, 8, 3)), ("R", (1, 8, 2)), ("W1", (1, 2, 3)), ("R1", (1, 2, 2)))}
    nodes = [helper.make_node("LSTM", ["X", "W", "R"], ["Y"], hidden_size=2, name="/ok/LSTM"),
             helper.make_node("RNN", ["X", "W1", "R1"], ["Y1"], hidden_size=2, name="/plain/RNN"),
             helper.make_node("LSTM", ["Xb", "W", "R"], ["Y2"], hidden_size=2, layout=1, name="/batch/LSTM")]
    graph = helper.make_graph(nodes, "mixed", [value("X", shape=["T", 1, 3]), value("Xb", shape=[1, "T", 3])],
                              [value("Y"), value("Y1"), value("Y2")], list(weights.values()))
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(tmp_path / "mixed.onnx"))
    report = json.loads(cli(capsys, "inspect", tmp_path / "mixed.onnx", "--json").out)
    refusals = {n["node"]: n["refusal"] for n in report["onnx"]["nodes"]}
    assert refusals["/ok/LSTM"] is None
    assert refusals["/plain/RNN"] is None  # the plain RNN is a cell type of the registry
    assert "layout=1" in refusals["/batch/LSTM"]
    quantized = single_node(tmp_path / "q.onnx", "DynamicQuantizeLSTM", outputs=("Y",), domain="com.microsoft",
                            opset=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)])
    fails(capsys, "inspect", quantized, "--json", match="computes with 8-bit weights")
    scanned = single_node(tmp_path / "bad_layout.onnx", layout=1)
    line = fails(capsys, "trace", scanned, "--input", "X=1", "-o", tmp_path / "t.safetensors", match="layout=1")
    assert "LSTM node /rnn/LSTM (rnn, layer 0) cannot be recorded" in line


def test_a_file_that_is_not_onnx_is_one_line(tmp_path, capsys):
    (tmp_path / "bad.onnx").write_bytes(b"\x00garbage")
    fails(capsys, "inspect", tmp_path / "bad.onnx", match="is not a readable ONNX model")
    (tmp_path / "folder.onnx").mkdir()
    with pytest.raises(GatescopeError, match="folder"):
        read_graph(tmp_path / "folder.onnx")


def test_an_initial_state_computed_in_the_graph_is_said_unless_it_is_always_zero(tmp_path, capsys):
    """Read as a checkpoint (embedding -> LSTM), a graph whose initial h is computed starts from zeros: said."""
    rng = np.random.default_rng(0)
    arrays = {"emb": (5, 3), "W": (1, 8, 3), "R": (1, 8, 2), "h_param": (1, 1, 2)}
    inits = [onnx.numpy_helper.from_array(rng.normal(size=s).astype(np.float32), n) for n, s in arrays.items()]
    inits.append(onnx.numpy_helper.from_array(np.array([1, 1, 2], np.int64), "shape"))

    def model(state_nodes, name):
        nodes = [helper.make_node("Gather", ["emb", "ids"], ["x"], name="/emb/Gather"),
                 helper.make_node("Transpose", ["x"], ["xt"], perm=[1, 0, 2], name="/rnn/Transpose"),
                 *state_nodes,
                 helper.make_node("LSTM", ["xt", "W", "R", "", "", "h0"], ["Y"], hidden_size=2, name="/rnn/LSTM")]
        graph = helper.make_graph(nodes, "lm", [value("ids", onnx.TensorProto.INT64, [1, "T"])], [value("Y")], inits)
        onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(tmp_path / name))
        return tmp_path / name

    learned = model([helper.make_node("Expand", ["h_param", "shape"], ["h0"], name="/rnn/Expand")], "learned.onnx")
    zeros = model([helper.make_node("ConstantOfShape", ["shape"], ["z"], name="/rnn/ConstantOfShape"),
                   helper.make_node("Expand", ["z", "shape"], ["h0"], name="/rnn/Expand")], "zeros.onnx")
    notes = json.loads(cli(capsys, "inspect", learned, "--json", "--no-tui").out)["converted"]["notes"]
    assert any("initial_h is computed in the graph" in note for note in notes)
    report = json.loads(cli(capsys, "inspect", zeros, "--json", "--no-tui").out)
    assert not any("computed" in note for note in report["converted"]["notes"])
    assert report["onnx"]["nodes"][0]["initial_state"]["initial_h"] == "zeros, computed by Expand /rnn/Expand"


def test_nodes_of_one_scope_in_two_branches_are_two_modules_not_two_layers(tmp_path):
    rng = np.random.default_rng(0)
    inits = [onnx.numpy_helper.from_array(rng.normal(size=s).astype(np.float32), n)
             for n, s in (("W", (1, 8, 3)), ("R", (1, 8, 2)))]

    def branch(tag, node_name):
        node = helper.make_node("LSTM", ["X", "W", "R"], [f"{tag}_Y"], hidden_size=2, name=node_name)
        return helper.make_graph([node], tag, [], [value(f"{tag}_Y")])

    node = helper.make_node("If", ["flag"], ["Y"], then_branch=branch("a", "/rnn/LSTM"),
                            else_branch=branch("b", "/rnn/LSTM_1"), name="/If")
    graph = helper.make_graph([node], "g", [value("X", shape=["T", 1, 3]), value("flag", onnx.TensorProto.BOOL, [])],
                              [value("Y")], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(tmp_path / "g.onnx"))
    nodes = read_graph(tmp_path / "g.onnx").nodes
    assert [(n.name, n.layer) for n in nodes] == [("rnn", 0), ("rnn_1", 0)]
