"""The engine on torch's plain RNN (nn.RNN, nn.RNNCell): the same outputs as torch, h recorded at every
step and equal to torch's own, edits carried through the recurrence."""
from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

import gatescope
from gatescope.kinds import NONNEGATIVE, SIGNED, cell_type_of


@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("route", ["step", "replay", "auto"])
def test_rnn_is_recorded_with_torchs_names_and_values(nonlinearity, bidirectional, route):
    torch.manual_seed(0)
    rnn = nn.RNN(3, 5, num_layers=2, nonlinearity=nonlinearity, bidirectional=bidirectional, batch_first=True)
    x = torch.randn(2, 6, 3)
    expected, h_n = rnn(x)
    with gatescope.record(rnn, route=route) as rec:
        out, h = rnn(x)
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-6)
    torch.testing.assert_close(h, h_n, rtol=0, atol=1e-6)
    trace = rec.trace
    dirs = ("fwd", "bwd") if bidirectional else ("fwd",)
    assert trace.names == [f"rnn.l{layer}.{d}.h" for layer in (0, 1) for d in dirs]
    width = 5
    for d, direction in enumerate(dirs):  # the last layer's h is the module's output, per direction
        recorded = trace[f"rnn.l1.{direction}.h"].reshape(2, 6, width)
        torch.testing.assert_close(recorded, expected[..., d * width:(d + 1) * width], rtol=0, atol=1e-6)
    info = trace.meta["modules"][0]
    assert info["cell"] == "RNN" and cell_type_of(info).range_of("h") == (NONNEGATIVE if nonlinearity == "relu"
                                                                           else SIGNED)


def test_rnn_packed_sequences_and_an_intervention():
    torch.manual_seed(1)
    rnn = nn.RNN(4, 6, nonlinearity="relu")
    x = torch.randn(5, 3, 4)
    lengths = torch.tensor([5, 2, 4])
    packed = pack_padded_sequence(x, lengths, enforce_sorted=False)
    expected, _ = pad_packed_sequence(rnn(packed)[0])
    with gatescope.record(rnn) as rec:
        out, _ = pad_packed_sequence(rnn(packed)[0])
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-6)
    assert rec.trace["rnn.l0.fwd.h"].shape == (11, 6)
    ablate = gatescope.Intervention("rnn.l0.fwd.h", units=[0, 1], op="set", value=0.0)
    with gatescope.record(rnn, interventions=[ablate]) as rec:
        edited, _ = rnn(x)
    h = rec.trace["rnn.l0.fwd.h"]
    assert bool((h[:, :2] == 0).all()) and not torch.allclose(edited, rnn(x)[0])
    manual, state = [], torch.zeros(3, 6)
    for t in range(5):  # the reference: the ablated h feeds the next step
        state = torch.relu(x[t] @ rnn.weight_ih_l0.T + rnn.bias_ih_l0 + state @ rnn.weight_hh_l0.T + rnn.bias_hh_l0)
        state = torch.cat([torch.zeros(3, 2), state[:, 2:]], 1)
        manual.append(state)
    torch.testing.assert_close(edited, torch.stack(manual), rtol=0, atol=1e-6)


def test_rnn_cell_stepped_in_a_loop():
    torch.manual_seed(2)
    cell = nn.RNNCell(3, 4, nonlinearity="relu")
    x = torch.randn(6, 2, 3)
    with gatescope.record(cell) as rec:
        h, outs = None, []
        for t in range(6):
            h = cell(x[t], h)
            outs.append(h)
    torch.testing.assert_close(rec.trace["rnncell.l0.fwd.h"], torch.stack(outs, 1).reshape(12, 4))
    with pytest.raises(ValueError, match="RNN: Expected input to be 2D or 3D, got 4D tensor instead"):
        with gatescope.record(nn.RNN(3, 4)) as rec:
            rec.root(torch.zeros(1, 1, 1, 3))
