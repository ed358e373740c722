"""Gate dynamics: saturation and timescales against numpy, weight timescales, profile figures."""
import os

import numpy as np
import pytest
import torch

from gatescope.recorder.variants import VariantLSTM
from torch import nn

from gatescope.analysis.dynamics import (
    gate_profile,
    plot_gate_profile,
    saturation,
    saturation_summary,
    timescales,
    weight_timescales,
)
from gatescope.errors import GatescopeError
from gatescope.recorder.recording import record
from gatescope.traces.trace import Trace


@pytest.fixture(scope="module")
def lstm_trace():
    torch.manual_seed(0)
    model = nn.LSTM(3, 5, batch_first=True)
    with torch.no_grad(), record(model) as rec:
        model(torch.randn(4, 9, 3) * 3)
    return model, rec.trace


def test_saturation_matches_numpy(lstm_trace):
    _, trace = lstm_trace
    table = saturation(trace)
    assert {r["kind"] for r in table} == {"i", "f", "o"}
    for row in table:
        x = trace[row["name"]][:, row["index"]].numpy()
        assert row["left"] == pytest.approx((x < 0.1).mean())
        assert row["right"] == pytest.approx((x > 0.9).mean())
        assert row["mean"] == pytest.approx(x.mean(), abs=1e-6)
    g = saturation(trace, kinds="g", low=0.2, high=0.8)
    x = trace["lstm.l0.fwd.g"][:, 2].numpy()
    assert g[2]["left"] == pytest.approx(((x + 1) / 2 < 0.2).mean())
    with pytest.raises(GatescopeError, match="c lies in -inf..inf: give kinds among i,f,g,o,h$"):
        saturation(trace, kinds="i,c")  # the unbounded cell state has no saturation
    by_kind = saturation_summary(table, "kind")
    assert by_kind["kind"] == ["i", "f", "o"] and by_kind["units"] == [5, 5, 5]
    for row in by_kind:
        x = trace[f"lstm.l0.fwd.{row['kind']}"].numpy()  # (N, 5)
        assert row["left"] == pytest.approx((x < 0.1).mean()) and row["right"] == pytest.approx((x > 0.9).mean())


def test_timescales_from_trace_and_weights(lstm_trace):
    model, trace = lstm_trace
    table = timescales(trace)
    f = trace["lstm.l0.fwd.f"].double().mean(0).numpy()
    assert [r["mean"] for r in table] == pytest.approx(f.tolist())
    assert [r["timescale"] for r in table] == pytest.approx((1 / (1 - f)).tolist())
    weights = weight_timescales(model)
    b = torch.sigmoid((model.bias_ih_l0 + model.bias_hh_l0)[5:10]).detach().numpy()
    assert [r["unit"] for r in weights] == [f"lstm.l0.fwd.f:{i}" for i in range(5)]
    assert [r["mean"] for r in weights] == pytest.approx(b.tolist())
    gru = nn.GRU(3, 4, num_layers=2, bidirectional=True)
    gw = weight_timescales(gru)
    assert len(gw) == 16 and gw[-1]["unit"] == "gru.l1.bwd.z:3"
    z = torch.sigmoid((gru.bias_ih_l1_reverse + gru.bias_hh_l1_reverse)[4:8]).detach().numpy()
    assert [r["mean"] for r in gw][-4:] == pytest.approx(z.tolist())
    with pytest.raises(GatescopeError, match="no recurrent module with a memory gate"):
        weight_timescales(nn.Linear(2, 2))
    with pytest.raises(GatescopeError, match="no recurrent module with a memory gate"):
        weight_timescales(nn.RNN(2, 3))  # the plain RNN keeps no gated memory


def test_weight_timescales_follow_the_cell_type_as_inspect_does():
    """A hard-sigmoid LSTM's forget gate at rest is clip(0.2 b + 0.5, 0, 1), not sigmoid(b); a forget gate
    coupled to the input gate is 1 minus it: read from the cell type, the same numbers as inspect's report."""
    from gatescope.kinds import HARD_SIGMOID_KERAS2

    torch.manual_seed(0)
    hard = VariantLSTM(3, 4, gate_activation=HARD_SIGMOID_KERAS2)
    b = (hard.bias_ih_l0 + hard.bias_hh_l0)[4:8].detach().double()
    expected = (0.2 * b + 0.5).clamp(0, 1)
    assert [r["mean"] for r in weight_timescales(hard)] == pytest.approx(expected.tolist())
    assert [r["timescale"] for r in weight_timescales(hard)] == pytest.approx((1 / (1 - expected)).tolist())
    coupled = VariantLSTM(3, 4, coupling="forget_from_input")
    i = torch.sigmoid((coupled.bias_ih_l0 + coupled.bias_hh_l0)[0:4].detach().double())
    assert [r["mean"] for r in weight_timescales(coupled)] == pytest.approx((1 - i).tolist())


def test_gate_profile_and_figures(lstm_trace, tmp_path):
    _, trace = lstm_trace
    prof = gate_profile(trace, "lstm.l0.fwd.h:2", [0, 3])
    assert list(prof) == ["g", "i", "f", "c", "o", "h"]
    both = Trace({name: trace[name] for name in trace.names} | {"dec.l0.fwd.z": trace["lstm.l0.fwd.f"],
                                                                 "dec.l0.fwd.h": trace["lstm.l0.fwd.h"]}, trace.offsets)
    assert list(gate_profile(both, "dec.l0.fwd.h:2", [0])) == ["z", "h"]  # a GRU's kinds, beside an LSTM
    assert torch.equal(prof["f"][1], trace["lstm.l0.fwd.f"][trace.sequence(3), 2].double())
    png = plot_gate_profile(trace, "lstm.l0.fwd.h:2", [0, 1], tmp_path / "p.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    svg = plot_gate_profile(trace, "lstm.l0.fwd.c:2", [0], tmp_path / "p.svg", kinds=["f", "c"], labels=["s0"])
    assert b"<svg" in svg.read_bytes()[:500]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.png", "p.svg"]  # no temporary files left
    umask = os.umask(0)
    os.umask(umask)
    assert png.stat().st_mode & 0o777 == 0o666 & ~umask  # as open() would create it, not mkstemp's 0600
    with pytest.raises(GatescopeError, match="1 legend labels for 2 sequences"):
        plot_gate_profile(trace, "lstm.l0.fwd.h:2", [0, 1], tmp_path / "q.png", labels=["s0"])
    with pytest.raises(GatescopeError, match="use .png"):
        plot_gate_profile(trace, "lstm.l0.fwd.h:2", [0], tmp_path / "p.txt")
    with pytest.raises(GatescopeError, match="unknown unit"):
        plot_gate_profile(trace, "lstm.l0.fwd.h:9", [0], tmp_path / "q.png")
    with pytest.raises(GatescopeError, match="no sequence 7"):
        gate_profile(trace, "lstm.l0.fwd.h:2", [7])
    assert not (tmp_path / "q.png").exists()


def test_saturation_of_a_synthetic_gate():
    x = torch.tensor([[0.05], [0.5], [0.95], [0.99]])
    table = saturation(Trace({"rnn.l0.fwd.z": x}, [0, 4]))
    assert (table[0]["left"], table[0]["right"]) == (0.25, 0.5)
    states = Trace({"rnn.l0.fwd.c": 5 * x, "rnn.l0.fwd.h": 2 * x - 1}, [0, 4])  # recorded with kinds c,h
    assert saturation(states)["unit"] == ["rnn.l0.fwd.h:0"]  # never the unbounded c
    assert (saturation(states)[0]["left"], saturation(states)[0]["right"]) == (0.25, 0.5)
    with pytest.raises(GatescopeError, match=r"these quantities hold only c \(-inf..inf\)"):
        saturation(Trace({"rnn.l0.fwd.c": 5 * x}, [0, 4]))
    relu = nn.RNN(1, 1, nonlinearity="relu", batch_first=True)
    with torch.no_grad(), record(relu) as rec:
        relu(x.view(1, 4, 1))
    with pytest.raises(GatescopeError, match=r"h lies in 0..inf: give kinds among none"):
        saturation(rec.trace, kinds="h")  # a kind's range in its cell type: a relu RNN's h is unbounded
    assert np.isinf(timescales(Trace({"rnn.l0.fwd.z": torch.ones(2, 1)}, [0, 2]))[0]["timescale"])
