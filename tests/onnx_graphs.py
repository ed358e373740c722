"""ONNX graphs with recurrent nodes in the places real models put them, and an independent reference.

Built with onnx.helper or torch.onnx.export: a convolutional front-end, an STFT done as a Conv1d with
padding, an If whose branches hold LSTMs (a voice detector's shape: the sample rate picks the branch, h
and c are graph inputs and outputs), weights behind Unsqueeze, initial states computed in the graph, a
bidirectional GRU behind a Gather embedding with a tag head, a Loop that decodes step by step, an LSTM
and a GRU side by side or in the two branches of an If.

`onnx_lstm` / `onnx_gru` compute every gate of a node from its inputs by the ONNX operator spec
(onnx/defs/rnn/defs.cc: LSTM gates i, o, f, c in W / R / B; GRU z, r, h), in numpy, one step at a time:
the reference the recorded gates are checked against, independent of gatescope's torch cells.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

onnx = pytest.importorskip("onnx", reason="onnx is not installed (pip install 'gatescope[formats]')")
ort = pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (pip install 'gatescope[formats]')")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

FLOAT, INT64, BOOL = TensorProto.FLOAT, TensorProto.INT64, TensorProto.BOOL
OPSET = [helper.make_opsetid("", 17)]


def tensor(name: str, shape, rng: np.random.Generator, scale: float = 0.5):
    return numpy_helper.from_array(rng.normal(0, scale, shape).astype(np.float32), name)


def value(name: str, elem: int = FLOAT, shape=None):
    return helper.make_tensor_value_info(name, elem, shape)


def save(graph, path: Path, opset=OPSET) -> Path:
    model = helper.make_model(graph, opset_imports=opset)
    onnx.save(model, str(path))
    return path


def export(model: nn.Module, args: tuple, path: Path, **kwargs) -> Path:
    with torch.no_grad():
        torch.onnx.export(model.eval(), args, str(path), **kwargs)
    return path


def session(path: Path, extra: list[str] = ()):
    """An onnxruntime session of the model at ``path`` whose outputs also include the values ``extra``."""
    model = onnx.load(str(path))
    model.graph.output.extend(onnx.ValueInfoProto(name=n) for n in extra)
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


# -- graphs -------------------------------------------------------------------------------------------------
def detector(path: Path, hidden: int = 4) -> Path:
    """A voice detector's shape: audio [B, N], sr (int64) and the state h, c [1, B, H] in; prob [B], hn, cn out.

    ``sr == 16000`` takes the then branch (a Conv1d front-end with stride 8 -> LSTM), else the else branch
    (stride 4 -> another LSTM); each branch's LSTM reads W through an Unsqueeze of a 2-D initializer and
    its initial state from the outer graph's h (halved by a Mul: a state computed in the graph) and c."""
    rng = np.random.default_rng(0)
    ax0 = numpy_helper.from_array(np.array([0], np.int64), "ax0")
    ax1 = numpy_helper.from_array(np.array([1], np.int64), "ax1")

    def branch(tag: str, kernel: int, stride: int):
        channels = 6
        inits = [tensor(f"{tag}.conv.weight", (channels, 1, kernel), rng), tensor(f"{tag}.conv.bias", (channels,), rng),
                 tensor(f"{tag}.W2", (4 * hidden, channels), rng), tensor(f"{tag}.R", (1, 4 * hidden, hidden), rng),
                 tensor(f"{tag}.B", (1, 8 * hidden), rng), tensor(f"{tag}.head", (hidden, 1), rng)]
        nodes = [
            helper.make_node("Unsqueeze", ["audio", "ax1"], [f"{tag}.x"], name=f"/{tag}/Unsqueeze"),
            helper.make_node("Conv", [f"{tag}.x", f"{tag}.conv.weight", f"{tag}.conv.bias"], [f"{tag}.f"],
                             strides=[stride], pads=[kernel // 2, kernel // 2], name=f"/{tag}/conv/Conv"),
            helper.make_node("Relu", [f"{tag}.f"], [f"{tag}.r"], name=f"/{tag}/Relu"),
            helper.make_node("Transpose", [f"{tag}.r"], [f"{tag}.X"], perm=[2, 0, 1], name=f"/{tag}/Transpose"),
            helper.make_node("Unsqueeze", [f"{tag}.W2", "ax0"], [f"{tag}.W"], name=f"/{tag}/rnn/Unsqueeze"),
            helper.make_node("LSTM", [f"{tag}.X", f"{tag}.W", f"{tag}.R", f"{tag}.B", "", "h_half", "c"],
                             ["", f"{tag}.hn", f"{tag}.cn"], hidden_size=hidden, name=f"/{tag}/rnn/LSTM"),
            helper.make_node("Squeeze", [f"{tag}.hn", "ax0"], [f"{tag}.h2"], name=f"/{tag}/Squeeze"),
            helper.make_node("MatMul", [f"{tag}.h2", f"{tag}.head"], [f"{tag}.logit"], name=f"/{tag}/head/MatMul"),
            helper.make_node("Sigmoid", [f"{tag}.logit"], [f"{tag}.prob"], name=f"/{tag}/Sigmoid"),
        ]
        outputs = [value(f"{tag}.{n}") for n in ("prob", "hn", "cn")]
        return helper.make_graph(nodes, tag, [], outputs, inits)

    nodes = [
        helper.make_node("Equal", ["sr", "sr16k"], ["is16k"], name="/Equal"),
        helper.make_node("Mul", ["h", "half"], ["h_half"], name="/state/Mul"),
        helper.make_node("If", ["is16k"], ["prob", "hn", "cn"], then_branch=branch("fast", 16, 8),
                         else_branch=branch("slow", 8, 4), name="/select/If"),
    ]
    inits = [numpy_helper.from_array(np.array(16000, np.int64), "sr16k"),
             numpy_helper.from_array(np.array(0.5, np.float32), "half"), ax0, ax1]
    graph = helper.make_graph(
        nodes, "detector",
        [value("audio", FLOAT, ["B", "N"]), value("sr", INT64, []), value("h", FLOAT, [1, "B", hidden]),
         value("c", FLOAT, [1, "B", hidden])],
        [value("prob"), value("hn"), value("cn")], inits)
    return save(graph, path)


class ConvLSTM(nn.Module):
    """audio [B, N] -> Conv1d front-end -> 2-layer LSTM -> frame classifier."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv1d(1, 8, 16, stride=8, padding=8)
        self.rnn = nn.LSTM(8, 6, num_layers=2, batch_first=True)
        self.head = nn.Linear(6, 2)

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        features = self.conv(audio.unsqueeze(1)).relu().transpose(1, 2)  # (B, T, 8)
        return self.head(self.rnn(features)[0])


class STFTLSTM(nn.Module):
    """audio -> reflect padding -> STFT as a Conv1d with fixed windowed cos / -sin kernels -> magnitude -> LSTM."""

    def __init__(self, n_fft: int = 32, hop: int = 16) -> None:
        super().__init__()
        k = torch.arange(n_fft // 2 + 1).float()[:, None]
        t = torch.arange(n_fft).float()[None]
        angle = 2 * torch.pi * k * t / n_fft
        basis = torch.cat([torch.cos(angle), -torch.sin(angle)]) * torch.hann_window(n_fft)  # (2F, n_fft)
        self.register_buffer("basis", basis[:, None])
        self.hop, self.pad = hop, n_fft // 2
        self.rnn = nn.LSTM(n_fft // 2 + 1, 8, batch_first=True)
        self.out = nn.Linear(8, 1)

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        x = nn.functional.pad(audio.unsqueeze(1), (self.pad, self.pad), mode="reflect")
        real, imag = nn.functional.conv1d(x, self.basis, stride=self.hop).chunk(2, 1)
        magnitude = (real**2 + imag**2 + 1e-9).sqrt().transpose(1, 2)  # (B, T, F)
        return torch.sigmoid(self.out(self.rnn(magnitude)[0]))


class TagGRU(nn.Module):
    """token ids -> Gather embedding -> bidirectional GRU -> a tag per token."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(20, 5)
        self.gru = nn.GRU(5, 4, batch_first=True, bidirectional=True)
        self.tags = nn.Linear(8, 3)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.tags(self.gru(self.emb(ids))[0])


class LearnedState(nn.Module):
    """An LSTM whose h0 is computed from the input (tanh of a Linear of its mean) and whose c0 is learned."""

    def __init__(self) -> None:
        super().__init__()
        self.init = nn.Linear(3, 5)
        self.c0 = nn.Parameter(torch.randn(1, 1, 5))
        self.rnn = nn.LSTM(3, 5, batch_first=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h0 = torch.tanh(self.init(x.mean(1))).unsqueeze(0)  # (1, B, 5)
        c0 = self.c0.expand(1, x.shape[0], 5).contiguous()
        return self.rnn(x, (h0, c0))[0]


def decoder_loop(path: Path, steps: int = 5) -> Path:
    """An autoregressive decoder: a Loop of ``steps`` iterations, each one LSTM step on the previous output
    projected, h and c carried by the Loop; the h of each step is a scan output ``ys`` [steps, B, H]."""
    rng = np.random.default_rng(2)
    hidden, width = 3, 2
    body = helper.make_graph(
        [helper.make_node("Unsqueeze", ["x_in", "ax0"], ["x3"], name="/dec/Unsqueeze"),
         helper.make_node("LSTM", ["x3", "W", "R", "B", "", "h_in", "c_in"], ["", "h_out", "c_out"],
                          hidden_size=hidden, name="/dec/LSTM"),
         helper.make_node("Squeeze", ["h_out", "ax0"], ["h2"], name="/dec/Squeeze"),
         helper.make_node("MatMul", ["h2", "P"], ["x_out"], name="/dec/proj"),
         helper.make_node("Identity", ["cond_in"], ["cond_out"], name="/dec/cond"),
         helper.make_node("Identity", ["h2"], ["y"], name="/dec/y")],
        "body", [value("i", INT64, []), value("cond_in", BOOL, []), value("x_in"), value("h_in"), value("c_in")],
        [value("cond_out", BOOL, []), value("x_out"), value("h_out"), value("c_out"), value("y")])
    inits = [tensor("W", (1, 4 * hidden, width), rng), tensor("R", (1, 4 * hidden, hidden), rng),
             tensor("B", (1, 8 * hidden), rng), tensor("P", (hidden, width), rng),
             numpy_helper.from_array(np.array(steps, np.int64), "M"),
             numpy_helper.from_array(np.array([0], np.int64), "ax0")]
    node = helper.make_node("Loop", ["M", "", "x0", "h0", "c0"], ["x_last", "h_last", "c_last", "ys"], body=body,
                            name="/decode/Loop")
    graph = helper.make_graph([node], "decoder", [value("x0", FLOAT, ["B", width]), value("h0", FLOAT, [1, "B", hidden]),
                                                  value("c0", FLOAT, [1, "B", hidden])],
                              [value("ys"), value("c_last")], inits)
    return save(graph, path)


def lstm_and_gru(path: Path, branched: bool = False) -> Path:
    """X [T, B, 3] into an LSTM /lstm/LSTM and a GRU /gru/GRU (hidden 2): both at the top level, or, ``branched``,
    one in each branch of an If on the bool input ``use_lstm`` (then: the LSTM)."""
    rng = np.random.default_rng(1)
    nodes, inits = {}, {}
    for op, gates in (("LSTM", 4), ("GRU", 3)):
        inits[op] = [tensor(f"{op}.W", (1, gates * 2, 3), rng), tensor(f"{op}.R", (1, gates * 2, 2), rng)]
        nodes[op] = helper.make_node(op, ["X", f"{op}.W", f"{op}.R"], [f"{op}.Y"], hidden_size=2,
                                     name=f"/{op.lower()}/{op}")
    x = value("X", FLOAT, ["T", "B", 3])
    if not branched:
        graph = helper.make_graph(list(nodes.values()), "pair", [x], [value(f"{op}.Y") for op in nodes],
                                  inits["LSTM"] + inits["GRU"])
        return save(graph, path)
    then, other = (helper.make_graph([nodes[op]], op, [], [value(f"{op}.Y")], inits[op]) for op in nodes)
    pick = helper.make_node("If", ["use_lstm"], ["Y"], then_branch=then, else_branch=other, name="/pick/If")
    return save(helper.make_graph([pick], "branched", [x, value("use_lstm", BOOL, [])], [value("Y")]), path)


def single_node(path: Path, op: str = "LSTM", inputs=("X", "W", "R", "B"), outputs=("Y", "Y_h", "Y_c"),
                domain: str = "", opset=OPSET, **attrs) -> Path:
    """One recurrent node over X [T, B, 3] (hidden 2; W, R, B initializers), for what is refused."""
    rng = np.random.default_rng(0)
    gates = {"LSTM": 4, "GRU": 3, "RNN": 1, "DynamicQuantizeLSTM": 4}[op]
    dirs = 2 if attrs.get("direction") == "bidirectional" else 1
    inits = [tensor("W", (dirs, gates * 2, 3), rng), tensor("R", (dirs, gates * 2, 2), rng),
             tensor("B", (dirs, 2 * gates * 2), rng)]
    node = helper.make_node(op, list(inputs), list(outputs), hidden_size=2, name=f"/rnn/{op}", domain=domain, **attrs)
    graph = helper.make_graph([node], "one", [value("X", FLOAT, ["T", "B", 3])], [value(o) for o in outputs if o],
                              inits)
    model = helper.make_model(graph, opset_imports=opset)
    onnx.save(model, str(path))
    return path


# -- the reference ------------------------------------------------------------------------------------------
def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-x))


def onnx_lstm(x, w, r, b=None, h0=None, c0=None) -> dict[str, np.ndarray]:
    """Every quantity of a forward ONNX LSTM node (defaults: f = sigmoid, g = h = tanh), named as gatescope
    names them (i f g o c h), each [B, T, H]. x [T, B, I], w [1, 4H, I], r [1, 4H, H], b [1, 8H]."""
    hidden = r.shape[-1]
    batch = x.shape[1]
    b = np.zeros((1, 8 * hidden), np.float32) if b is None else b
    h = np.zeros((batch, hidden)) if h0 is None else h0[0].astype(np.float64)
    c = np.zeros((batch, hidden)) if c0 is None else c0[0].astype(np.float64)
    out: dict[str, list] = {k: [] for k in "ifgoch"}
    for x_t in x.astype(np.float64):
        gates = x_t @ w[0].T + h @ r[0].T + b[0, : 4 * hidden] + b[0, 4 * hidden :]  # (B, 4H): i, o, f, c
        i, o, f, g = (gates[:, k * hidden : (k + 1) * hidden] for k in range(4))
        i, o, f, g = _sigmoid(i), _sigmoid(o), _sigmoid(f), np.tanh(g)
        c = f * c + i * g
        h = o * np.tanh(c)
        for kind, v in zip("ifgoch", (i, f, g, o, c, h)):
            out[kind].append(v)
    return {k: np.stack(v, axis=1) for k, v in out.items()}


def onnx_gru(x, w, r, b=None, h0=None, linear_before_reset: int = 0, reverse: bool = False) -> dict[str, np.ndarray]:
    """Every quantity of one direction of an ONNX GRU node (z, r, h gate blocks; gatescope's r z n h), each
    [B, T, H], in input order (the reverse direction runs from the last step)."""
    hidden = r.shape[-1]
    batch = x.shape[1]
    b = np.zeros(6 * hidden, np.float32) if b is None else b
    wb, rb = b[: 3 * hidden], b[3 * hidden :]
    h = np.zeros((batch, hidden)) if h0 is None else h0.astype(np.float64)
    steps = range(x.shape[0] - 1, -1, -1) if reverse else range(x.shape[0])
    out: dict[str, dict[int, np.ndarray]] = {k: {} for k in "rznh"}
    block = lambda m, k: m[k * hidden : (k + 1) * hidden]  # noqa: E731
    for t in steps:
        x_t = x[t].astype(np.float64)
        z = _sigmoid(x_t @ block(w, 0).T + h @ block(r, 0).T + block(wb, 0) + block(rb, 0))
        rr = _sigmoid(x_t @ block(w, 1).T + h @ block(r, 1).T + block(wb, 1) + block(rb, 1))
        if linear_before_reset:
            n = np.tanh(x_t @ block(w, 2).T + rr * (h @ block(r, 2).T + block(rb, 2)) + block(wb, 2))
        else:
            n = np.tanh(x_t @ block(w, 2).T + (rr * h) @ block(r, 2).T + block(rb, 2) + block(wb, 2))
        h = (1 - z) * n + z * h
        for kind, v in zip("rznh", (rr, z, n, h)):
            out[kind][t] = v
    return {k: np.stack([v[t] for t in range(x.shape[0])], axis=1) for k, v in out.items()}
