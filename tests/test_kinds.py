"""The registry of cell types: ranges by cell type, variants checked, descriptions read back."""
from __future__ import annotations

import math

import pytest

from gatescope.kinds import (
    ACTIVATIONS,
    GRU,
    GRU_RESET_BEFORE,
    HARD_SIGMOID,
    HARD_SIGMOID_KERAS2,
    LSTM,
    NONNEGATIVE,
    REAL,
    RELU,
    RNN,
    RNN_RELU,
    SIGNED,
    UNIT,
    Activation,
    Range,
    cell_type,
    cell_type_of,
    described_range,
    kind_range,
    parse_activation,
)


def test_torch_cells_keep_their_kinds_blocks_and_ranges():
    assert LSTM.kinds == ("i", "f", "g", "o", "c", "h") and LSTM.gates == 4 and LSTM.rows("g", 5) == slice(10, 15)
    assert GRU.gate_kinds == ("r", "z", "n") and RNN.blocks == ("h",) and RNN.memory_gate is None
    assert [LSTM.range_of(k) for k in LSTM.kinds] == [UNIT, UNIT, SIGNED, UNIT, REAL, SIGNED]
    assert LSTM.range_of("h", proj_size=3) == REAL  # h = W_hr m is a linear map of m
    assert LSTM.range_of("m", proj_size=3) == SIGNED
    assert GRU.range_of("h") == SIGNED and RNN.range_of("h") == SIGNED
    assert all(c.is_standard for c in (LSTM, GRU, RNN, RNN_RELU)) and not GRU_RESET_BEFORE.is_standard
    assert cell_type("RNNCell") is RNN and cell_type("GRU") is GRU


def test_a_kinds_range_is_its_cell_types():
    assert RNN_RELU.range_of("h") == NONNEGATIVE  # a relu RNN's h is unbounded
    relu_gates = LSTM.variant(gate_activation=RELU)
    assert relu_gates.range_of("i") == NONNEGATIVE and relu_gates.range_of("h") == REAL
    assert LSTM.variant(gate_activation=HARD_SIGMOID_KERAS2).range_of("f") == UNIT
    assert LSTM.variant(activation=Activation("scaled_tanh", 2.0, 0.5)).range_of("g") == Range(-2.0, 2.0)
    assert LSTM.variant(cell_clip=3.0).range_of("c") == Range(-3.0, 3.0)
    assert LSTM.variant(proj_clip=2.0).range_of("h", proj_size=4) == Range(-2.0, 2.0)
    assert GRU.variant(gate_activation=RELU).range_of("h") == REAL  # z outside 0..1: no convex combination
    assert kind_range("h") == SIGNED and kind_range("h", RNN_RELU) == NONNEGATIVE
    with pytest.raises(ValueError, match="no kind 'i'"):
        GRU.range_of("i")


def test_coupled_gates_drop_the_derived_gates_rows():
    onnx = LSTM.variant(coupling="forget_from_input", peepholes=True)
    assert onnx.blocks == ("i", "g", "o") and onnx.coupled == ("f", "i") and onnx.peephole_kinds == ("i", "o")
    tf = LSTM.variant(coupling="input_from_forget", peepholes=True)
    assert tf.blocks == ("f", "g", "o") and tf.peephole_kinds == ("f", "o") and tf.kinds == LSTM.kinds
    relu = LSTM.variant(coupling="input_from_forget", gate_activation=RELU)
    assert relu.range_of("i") == Range(-math.inf, 1.0)  # 1 - f for f in 0..inf


@pytest.mark.parametrize("changes, message", [
    (dict(peepholes=True), "belong to the LSTM"),
    (dict(reset_after=False), None),
    (dict(clip=-1.0), "positive"),
    (dict(clip=math.inf), "positive"),
])
def test_variants_are_checked(changes, message):
    if message is None:
        assert GRU.variant(**changes) == GRU_RESET_BEFORE
        with pytest.raises(ValueError, match="GRU's"):
            LSTM.variant(**changes)
        return
    with pytest.raises(ValueError, match=message):
        (GRU if "peepholes" in changes else LSTM).variant(**changes)
    with pytest.raises(ValueError, match="coupling"):
        LSTM.variant(coupling="both")


def test_descriptions_read_back():
    cells = [
        LSTM, RNN_RELU, GRU_RESET_BEFORE,
        LSTM.variant(peepholes=True, coupling="forget_from_input", gate_activation=HARD_SIGMOID, clip=3.0,
                     output_activation=Activation("affine", 1.5, -0.25)),
        LSTM.variant(cell_clip=1.0, proj_clip=2.0, forget_bias=1.0),
        GRU.variant(gate_activation=Activation("leaky_relu", 0.01)),
    ]
    for cell in cells:
        assert cell_type_of({"cell": cell.name, **cell.info()}) == cell
    assert LSTM.info() == {} and RNN_RELU.info() == {"activation": "relu"}
    assert LSTM.variant(peepholes=True, gate_activation=HARD_SIGMOID_KERAS2).describe() == \
        "LSTM (gate_activation=hard_sigmoid(0.2,0.5), peepholes)"
    with pytest.raises(ValueError, match="not a recurrent cell type"):
        cell_type_of({"cell": "Transformer"})


def test_activations_parse_strictly():
    for name, reads in ACTIVATIONS.items():
        activation = Activation(name, *[0.5, 0.25][: len(reads)])
        assert parse_activation(str(activation)) == activation
    for text in ("hard_sigmoid", "relu(1.0)", "softmax", "elu(nan)", "tanh()", 3):
        with pytest.raises(ValueError, match="not an activation"):
            parse_activation(text)
    with pytest.raises(ValueError, match="takes no parameters"):
        Activation("sigmoid", 1.0)


def test_a_trace_describes_its_modules_ranges():
    modules = [{"name": "rnn", "cell": "RNN", "activation": "relu"}, {"name": "lstm", "cell": "LSTM", "proj_size": 3},
               {"name": "odd", "cell": "LSTM", "gate_activation": "nonsense"}]
    assert described_range(modules, "rnn", "h") == NONNEGATIVE
    assert described_range(modules, "lstm", "h") == REAL and described_range(modules, "lstm", "m") == SIGNED
    assert described_range(modules, "gru", "h") == SIGNED and described_range(None, "rnn", "h") == SIGNED
    assert described_range(modules, "odd", "f") == UNIT  # unreadable (the trace's door refuses it): the kind's own


def test_head_of_reads_the_heads_of_a_module_description():
    from gatescope.kinds import head_of

    mlstm = {"cell": "mLSTM", "hidden_size": 64, "num_heads": 2, "widths": {"i": 2, "f": 2, "s": 2, "v": 2048}}
    assert head_of(mlstm, "h", 40) == (1, 8)
    assert head_of(mlstm, "f", 1) == (1, 0)
    assert head_of(mlstm, "v", 1024 + 33) == (1, 33)  # head 1, row 1, column 1 of its 32 x 32 memory
    assert head_of({"cell": "LSTM", "hidden_size": 8}, "h", 3) is None


def test_the_kinds_line_of_help_and_errors_names_every_cell_and_kind():
    import gatescope
    from gatescope.errors import GatescopeError
    from gatescope.kinds import CELL_TYPES, kinds_by_cell
    from torch import nn

    line = kinds_by_cell()
    for name, cell in CELL_TYPES.items():
        assert f"{name} {' '.join(cell.kinds)}" in line
    assert "LSTM i f g o c h (m with proj_size);" in line
    with pytest.raises(GatescopeError, match=r"unknown kind\(s\) q: LSTM i f g o c h"):
        gatescope.record(nn.LSTM(2, 3), kinds=["q"])
