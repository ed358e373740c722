"""The trainable variant modules: every quantity against an independent reference written from the sources
(TF's LSTMCell and CoupledInputForgetGateLSTMCell for forget_bias, cell_clip, proj_clip and i = 1 - f; Keras'
hard sigmoids), gradients by gradcheck, and checkpoints read back by gatescope.load (peepholes from the names
alone, the rest from the metadata ``cells``)."""
from __future__ import annotations

import math

import pytest
import torch
from tests.checkpoint_fixtures import save

import gatescope
from gatescope.errors import GatescopeError
from gatescope.kinds import HARD_SIGMOID, HARD_SIGMOID_KERAS2, module_cell_type
from gatescope.recorder.variants import VariantGRU, VariantLSTM, VariantRNN, cells_metadata

TOL = dict(atol=1e-5, rtol=1e-5)


def hard_sigmoid_keras2(x):
    return (0.2 * x + 0.5).clamp(0, 1)  # keras 2.2.4 backend/tensorflow_backend.py hard_sigmoid


def lstm_reference(module: VariantLSTM, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Layer 0, forward direction, one sequence x (T, I), one step at a time, as TF's cells write it
    (rnn_cell_impl.LSTMCell: i, j, f, o; sigmoid(f + forget_bias + w_f_diag * c_prev); c clipped by cell_clip
    before o's peephole; m projected, then clipped by proj_clip) with the module's activations."""
    cell = module.cell_type
    act = {"sigmoid": torch.sigmoid, "tanh": torch.tanh,
           "hard_sigmoid": hard_sigmoid_keras2 if cell.gate_activation == HARD_SIGMOID_KERAS2 else
           (lambda v: torch.nn.functional.relu6(v + 3) / 6)}
    sigma, tanh = act[cell.gate_activation.name], act[cell.activation.name]
    hidden = module.hidden_size
    blocks = dict(zip(cell.blocks, module.weight_ih_l0.split(hidden)))
    recurrent = dict(zip(cell.blocks, module.weight_hh_l0.split(hidden)))
    bias = dict(zip(cell.blocks, (module.bias_ih_l0 + module.bias_hh_l0).split(hidden)))
    peep = dict(zip(cell.peephole_kinds, module.weight_ch_l0.split(hidden))) if cell.peepholes else {}
    h = torch.zeros(module.proj_size or hidden)
    c = torch.zeros(hidden)
    out = {k: [] for k in cell.kinds_for(module.proj_size)}
    for xt in x:
        pre = {k: blocks[k] @ xt + recurrent[k] @ h + bias[k] for k in cell.blocks}
        if cell.coupling == "input_from_forget":  # CoupledInputForgetGateLSTMCell
            f = sigma(pre["f"] + cell.forget_bias + peep.get("f", 0) * c)
            i = 1 - f
        else:
            i = sigma(pre["i"] + peep.get("i", 0) * c)
            f = 1 - i if cell.coupling else sigma(pre["f"] + cell.forget_bias + peep.get("f", 0) * c)
        g = tanh(pre["g"])
        c = f * c + i * g
        if cell.cell_clip is not None:
            c = c.clamp(-cell.cell_clip, cell.cell_clip)
        o = sigma(pre["o"] + peep.get("o", 0) * c)
        m = o * tanh(c)
        h = m if not module.proj_size else module.weight_hr_l0 @ m
        if cell.proj_clip is not None:
            h = h.clamp(-cell.proj_clip, cell.proj_clip)
        for kind, value in zip("ifgocmh", (i, f, g, o, c, m, h)):
            if kind in out:
                out[kind].append(value)
    return {k: torch.stack(v) for k, v in out.items()}


CASES = {
    "peepholes": dict(peepholes=True),
    "tf_lstm_cell": dict(peepholes=True, forget_bias=1.0, cell_clip=0.5, proj_clip=0.3, proj_size=3),
    "tf_coupled": dict(coupling="input_from_forget", peepholes=True, forget_bias=1.0, cell_clip=2.0),
    "onnx_coupled": dict(coupling="forget_from_input", peepholes=True),
    "keras2_hard_sigmoid": dict(gate_activation=HARD_SIGMOID_KERAS2),
    "keras3_hard_sigmoid": dict(gate_activation="hard_sigmoid(0.16666666666666666,0.5)"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_variant_lstm_records_the_reference(case):
    torch.manual_seed(0)
    lstm = VariantLSTM(3, 4, **CASES[case])
    with torch.no_grad():  # biases that saturate gates and clip, so every branch is exercised
        lstm.bias_ih_l0.mul_(4)
    x = torch.randn(9, 3) * 2
    expected = lstm_reference(lstm, x)
    with torch.no_grad(), gatescope.record(lstm) as rec:
        out, _ = lstm(x)
    for kind, values in expected.items():
        torch.testing.assert_close(rec.trace[f"lstm.l0.fwd.{kind}"], values, **TOL, msg=kind)
    torch.testing.assert_close(out, expected["h"], **TOL)
    if "cell_clip" in CASES[case]:
        assert float(rec.trace["lstm.l0.fwd.c"].abs().max()) <= CASES[case]["cell_clip"]
    assert module_cell_type(lstm).range_of("f").high <= 1


def test_the_two_hard_sigmoids_differ_as_keras_says():
    assert HARD_SIGMOID.alpha == pytest.approx(1 / 6) and HARD_SIGMOID_KERAS2.alpha == 0.2
    torch.manual_seed(0)
    a = VariantLSTM(3, 4, gate_activation=HARD_SIGMOID_KERAS2)
    b = VariantLSTM(3, 4, gate_activation=HARD_SIGMOID)
    b.load_state_dict(a.state_dict())
    x = torch.randn(6, 3) * 3
    assert (a(x)[0] - b(x)[0]).abs().max() > 1e-3


@pytest.mark.parametrize("make", [
    pytest.param(lambda: VariantLSTM(2, 3, num_layers=2, bidirectional=True, peepholes=True,
                                     coupling="forget_from_input", gate_activation="hard_sigmoid(0.2,0.5)", clip=1.0,
                                     batch_first=True), marks=pytest.mark.slow),
    lambda: VariantLSTM(2, 3, proj_size=2, peepholes=True, coupling="input_from_forget", forget_bias=0.5,
                        cell_clip=0.8, proj_clip=0.4, output_activation="softsign", batch_first=True),
    lambda: VariantGRU(2, 3, reset_after=False, gate_activation="hard_sigmoid(0.2,0.5)", activation="softsign",
                       batch_first=True),
    lambda: VariantRNN(2, 3, activation="elu(1.0)", clip=2.0, bidirectional=True, batch_first=True, learned_h0=True),
])
def test_variants_have_gradients(make):
    torch.manual_seed(0)
    module = make().double()
    x = torch.randn(1, 3, 2, dtype=torch.float64, requires_grad=True)
    params = tuple(module.parameters())
    assert torch.autograd.gradcheck(lambda x, *p: module(x)[0], (x, *params))


def test_variant_checkpoints_read_back(tmp_path, capsys):
    torch.manual_seed(0)
    peephole = VariantLSTM(3, 4, peepholes=True, batch_first=True)
    path = save(tmp_path / "peep.safetensors", {"": peephole})  # no metadata: the names say it
    loaded = gatescope.load(path)
    assert module_cell_type(loaded.get_submodule("lstm")) == peephole.cell_type
    x = torch.randn(2, 5, 3)
    torch.testing.assert_close(loaded(x), peephole(x)[0], **TOL)

    coupled = VariantLSTM(3, 4, num_layers=2, coupling="input_from_forget", gate_activation=HARD_SIGMOID_KERAS2,
                          cell_clip=1.0, batch_first=True)
    relu = torch.nn.RNN(4, 5, nonlinearity="relu", batch_first=True)
    stack = torch.nn.Sequential()
    stack.enc, stack.rnn = coupled, relu
    meta = cells_metadata(stack)
    assert meta == {"cells": {"enc": {"cell": "LSTM", "gate_activation": "hard_sigmoid(0.2,0.5)",
                                      "coupling": "input_from_forget", "cell_clip": 1.0},
                              "rnn": {"cell": "RNN", "activation": "relu"}}}
    path = save(tmp_path / "stack.safetensors", {"": stack}, meta)
    loaded = gatescope.load(path)
    for name in ("enc", "rnn"):
        assert module_cell_type(loaded.get_submodule(name)) == module_cell_type(stack.get_submodule(name))
    torch.testing.assert_close(loaded(x), relu(coupled(x)[0])[0], **TOL)
    with pytest.raises(GatescopeError, match="declares 'rnn' a LSTM"):
        gatescope.load(save(tmp_path / "bad.safetensors", {"": stack}, {"cells": {"rnn": {"cell": "LSTM"}}}))
    with pytest.raises(GatescopeError, match="'cells' entry 'enc': not an activation"):
        gatescope.load(save(tmp_path / "bad2.safetensors", {"": stack},
                            {"cells": {"enc": {"cell": "LSTM", "coupling": "input_from_forget",
                                               "gate_activation": "hardish"}}}))


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")
def test_a_learned_initial_state_is_used_recorded_and_read_back(tmp_path):
    torch.manual_seed(0)
    gru = VariantGRU(3, 4, num_layers=2, bidirectional=True, learned_h0=True, batch_first=True)
    with torch.no_grad():
        for name, p in gru.named_parameters():
            if name.startswith("h0"):
                p.normal_()
    x = torch.randn(2, 5, 3)
    plain = torch.nn.GRU(3, 4, num_layers=2, bidirectional=True, batch_first=True)
    plain.load_state_dict({k: v for k, v in gru.state_dict().items() if not k.startswith("h0")})
    h0 = torch.stack([getattr(gru, f"h0_l{k}{s}") for k in range(2) for s in ("", "_reverse")])  # (L*D, H)
    expected, _ = plain(x, h0.unsqueeze(1).expand(-1, 2, -1).contiguous())
    torch.testing.assert_close(gru(x)[0], expected, **TOL)
    with torch.no_grad(), gatescope.record(gru) as rec:
        gru(x)
    torch.testing.assert_close(rec.trace["gru.l1.fwd.h"].reshape(2, 5, 4), expected[..., :4], **TOL)
    loaded = gatescope.load(save(tmp_path / "h0.safetensors", {"": gru}))  # from the names alone
    torch.testing.assert_close(loaded(x), expected, **TOL)
    assert loaded.modules_info[0]["learned_h0"] is True


def test_reverse_only_is_the_backward_half_of_a_bidirectional_module(tmp_path):
    torch.manual_seed(0)
    both = torch.nn.LSTM(3, 4, bidirectional=True, batch_first=True)
    back = VariantLSTM(3, 4, reverse_only=True, batch_first=True)
    back.load_state_dict({k: v for k, v in both.state_dict().items() if k.endswith("_reverse")})
    x = torch.randn(2, 6, 3)
    with torch.no_grad(), gatescope.record(back) as rec:
        out, (h, c) = back(x)
    expected, (h_n, c_n) = both(x)
    torch.testing.assert_close(out, expected[..., 4:], **TOL)
    torch.testing.assert_close(h, h_n[1:], **TOL)
    assert rec.trace.names[0] == "lstm.l0.bwd.i" and rec.trace.meta["modules"][0]["reverse_only"] is True
    rec.trace.save(tmp_path / "t.safetensors")
    assert gatescope.load_trace(tmp_path / "t.safetensors").names == rec.trace.names
    loaded = gatescope.load(save(tmp_path / "rev.safetensors", {"": back}))  # from the names alone
    torch.testing.assert_close(loaded(x), expected[..., 4:], **TOL)
    with pytest.raises(ValueError, match="bidirectional must be False"):
        VariantGRU(3, 4, bidirectional=True, reverse_only=True)


def test_variant_arguments_are_checked():
    with pytest.raises(ValueError, match="proj_clip clips the projection"):
        VariantLSTM(3, 4, proj_clip=1.0)
    with pytest.raises(ValueError, match="not an activation"):
        VariantGRU(3, 4, gate_activation="hard_sigmoid")
    with pytest.raises(TypeError, match="activation=..., not nonlinearity"):
        VariantRNN(3, 4, nonlinearity="relu")
    with pytest.raises(RuntimeError, match="TorchScript cannot compile"):
        torch.jit.script(VariantRNN(3, 4))
    assert math.isinf(VariantRNN(3, 4, activation="relu").cell_type.range_of("h").high)
