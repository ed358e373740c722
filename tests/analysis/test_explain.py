"""explain(): each term of a step against an independent computation from the weights and tests/reference.py's
loop (float64), for the LSTM (layers, directions, projection), both GRUs and a stepped LSTMCell."""
from __future__ import annotations

import json
import pytest
import torch
from torch import nn

from gatescope.analysis.explain import explain
from gatescope.errors import GatescopeError
from gatescope.recorder.rnn import ResetBeforeGRU
from tests.checkpoint_fixtures import LanguageModel, language_model, word_metadata
from tests.cli_helpers import cli, fails
from tests.reference import reference_run

IDS = torch.tensor([[2, 3, 7, 2, 8, 6, 5]])


@pytest.fixture
def float64():
    before = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(before)


def _model(cell: str, reset_before: bool = False, **kwargs) -> LanguageModel:
    torch.manual_seed(0)
    lm = LanguageModel(cell=cell, **kwargs)
    if reset_before:
        gru = ResetBeforeGRU(lm.rnn.input_size, lm.rnn.hidden_size, batch_first=True)
        gru.load_state_dict(lm.rnn.state_dict())
        lm.rnn = gru
    return lm.double().eval()


def _reference_terms(lm, name: str, j: int, t: int):
    """{gate: (W x_t, U h_{t-1}, bias)} of unit j at step t from the weights, the reference's quantities, c_{t-1}."""
    _, layer, direction, _ = name.split(".")
    layer = int(layer[1:])
    with torch.no_grad():
        x = lm.encoder(IDS)[0]  # (T, E)
        ref, _ = reference_run(lm.rnn, x)
    if layer > 0:
        dirs = ("fwd", "bwd") if lm.rnn.bidirectional else ("fwd",)
        x = torch.cat([ref[f"rnn.l{layer - 1}.{d}.h"] for d in dirs], dim=-1)  # (T, D*H)
    sfx = f"_l{layer}" + ("_reverse" if direction == "bwd" else "")
    w_ih, w_hh = getattr(lm.rnn, "weight_ih" + sfx), getattr(lm.rnn, "weight_hh" + sfx)
    b_ih, b_hh = getattr(lm.rnn, "bias_ih" + sfx), getattr(lm.rnn, "bias_hh" + sfx)
    previous = t - 1 if direction == "fwd" else t + 1
    first = not 0 <= previous < x.shape[0]
    own = f"rnn.l{layer}.{direction}"
    h_prev = torch.zeros(w_hh.shape[1]) if first else ref[f"{own}.h"][previous]
    c_prev = 0.0 if first or f"{own}.c" not in ref else float(ref[f"{own}.c"][previous, j])
    hidden = lm.rnn.hidden_size
    terms = {}
    w_ih, w_hh, b_ih, b_hh = (w.detach() for w in (w_ih, w_hh, b_ih, b_hh))
    for block, kind in enumerate("ifgo" if isinstance(lm.rnn, nn.LSTM) else "rzn"):
        row = block * hidden + j
        terms[kind] = (float(w_ih[row] @ x[t]), float(w_hh[row] @ h_prev), float(b_ih[row] + b_hh[row]))
        if kind == "n":
            r = ref[f"{own}.r"][t]  # (H,)
            if getattr(lm.rnn, "reset_after", True):  # torch's r·(W_hn h + b_hn)
                terms[kind] = (terms[kind][0], float(r[j] * (w_hh[row] @ h_prev)), float(b_ih[row] + r[j] * b_hh[row]))
            else:  # Cho et al. 2014: W_hn (r ⊙ h) + b_hn
                terms[kind] = (terms[kind][0], float(w_hh[row] @ (r * h_prev)), terms[kind][2])
    return terms, ref, c_prev


CONFIGS = [
    ("LSTM", {}, "rnn.l0.fwd.c", 3),
    ("LSTM", {"num_layers": 2, "bidirectional": True}, "rnn.l1.bwd.f", 5),
    ("LSTM", {"num_layers": 2}, "rnn.l1.fwd.h", 0),
    ("LSTM", {"proj_size": 3}, "rnn.l0.fwd.m", 6),
    ("GRU", {}, "rnn.l0.fwd.z", 2),
    ("GRU", {"num_layers": 2, "bidirectional": True}, "rnn.l0.bwd.h", 7),
    ("GRU", {"reset_before": True}, "rnn.l0.fwd.n", 4),
]


@pytest.mark.parametrize("cell,kwargs,name,j", CONFIGS)
@pytest.mark.parametrize("t", [0, 3, 6])
def test_every_term_equals_the_weights_and_the_reference_loop(float64, cell, kwargs, name, j, t):
    lm = _model(cell, **dict(kwargs))
    e = explain(lm, IDS, f"{name}:{j}", at=t, top=100)
    terms, ref, c_prev = _reference_terms(lm, name, j, t)
    own = ".".join(name.split(".")[:3])
    for kind, gate in e.gates.items():
        gate_ref = float(ref[f"{own}.{kind}"][t, j])
        assert (gate.input, gate.recurrent, gate.bias) == pytest.approx(terms[kind], abs=1e-6)
        act = torch.tanh if kind in "gn" else torch.sigmoid
        assert float(act(torch.tensor(gate.preactivation))) == pytest.approx(gate_ref, abs=1e-6)
        assert gate.value == pytest.approx(gate_ref, abs=1e-6)
        assert sum(u.contribution for u in gate.upstream) == pytest.approx(gate.recurrent, abs=1e-9)
        assert sum(u.contribution for u in gate.inputs) == pytest.approx(gate.input, abs=1e-9)
    s = e.state
    if "c" in s:
        assert s["c_prev"] == pytest.approx(c_prev, abs=1e-6)
        assert s["f*c_prev"] + s["i*g"] == pytest.approx(float(ref[f"{own}.c"][t, j]), abs=1e-6)
        out = "m" if "m" in s else "h"
        assert s[out] == pytest.approx(float(ref[f"{own}.{out}"][t, j]), abs=1e-6)
    else:
        assert s["(1-z)*n"] + s["z*h_prev"] == pytest.approx(float(ref[f"{own}.h"][t, j]), abs=1e-6)
    assert e.check < 1e-6


def test_upstream_units_are_named_at_the_step_they_come_from(float64):
    lm = _model("LSTM", num_layers=2, bidirectional=True)
    e = explain(lm, IDS, "rnn.l1.bwd.i:1", at=2, top=3)
    gate = e.gates["i"]
    assert len(gate.upstream) == 3 and all(u.at == 3 and u.unit.startswith("rnn.l1.bwd.h:") for u in gate.upstream)
    assert [abs(u.contribution) for u in gate.upstream] == sorted((abs(u.contribution) for u in gate.upstream),
                                                                  reverse=True)
    assert {u.unit.rsplit(".", 2)[-2] for u in e.gates["f"].inputs} <= {"fwd", "bwd"}  # the layer below, by direction
    assert all(u.unit.startswith("rnn.l0.") and u.at == 2 for u in gate.inputs)


def test_the_initial_state_a_module_is_given_is_the_first_steps_previous_state(float64):
    torch.manual_seed(1)
    lstm = nn.LSTM(4, 5).double()
    x = torch.randn(6, 4)
    h0, c0 = torch.randn(1, 5), torch.randn(1, 5)

    class WithState(nn.Module):
        def __init__(self):
            super().__init__()
            self.lstm = lstm

        def forward(self, x):
            return self.lstm(x, (h0, c0))

    e = explain(WithState(), x, "lstm.l0.fwd.c:2", at=0, top=5)
    assert e.state["c_prev"] == pytest.approx(float(c0[0, 2]))
    assert e.gates["f"].recurrent == pytest.approx(float(lstm.weight_hh_l0[5 + 2].detach() @ h0[0]))
    assert e.check < 1e-6


def test_a_stepped_cell_is_explained_from_its_calls(float64):
    torch.manual_seed(2)
    cell = nn.GRUCell(3, 4).double()
    x = torch.randn(5, 1, 3)

    class Loop(nn.Module):
        def __init__(self):
            super().__init__()
            self.cell = cell

        def forward(self, x):
            h = None
            for t in range(x.shape[0]):
                h = self.cell(x[t], h)
            return h

    e = explain(Loop(), x, "cell.l0.fwd.h:1", at=3)
    assert e.check < 1e-6 and e.state["h"] == pytest.approx(e.state["(1-z)*n"] + e.state["z*h_prev"], abs=1e-6)


@pytest.mark.parametrize("unit,at,match", [
    ("rnn.l0.fwd.q:1", 0, "rnn.l0.fwd.q"),
    ("rnn.l0.fwd.c:99", 0, "has 8 units"),
    ("rnn.l0.fwd.c:1", 7, "outside the sequence's 7 steps"),
])
def test_what_explain_cannot_do_is_one_line(unit, at, match):
    with pytest.raises(GatescopeError, match=match):
        explain(_model("LSTM"), IDS, unit, at=at)


def test_a_projected_h_mixes_units_and_is_refused():
    with pytest.raises(GatescopeError, match="name a unit of c, m or a gate"):
        explain(_model("LSTM", proj_size=3), IDS, "rnn.l0.fwd.h:1", at=1)


def test_the_figure_and_the_table_carry_the_values():
    e = explain(_model("LSTM"), IDS, "rnn.l0.fwd.c:3", at=2)
    svg = e.figure().svg
    assert svg.startswith("<svg") and f"{e.state['c']:+.3f}" in svg and f"{e.gates['f'].value:+.3f}" in svg
    html = e._repr_html_()
    assert "gatescope-terms" in html and f"{e.gates['o'].preactivation:+.3f}" in html
    text = e.render()
    assert f"f {e.gates['f'].value:.3f}" in text and "check:" in text


def test_the_command_prints_the_cell_and_json_with_every_term(tmp_path, capsys):
    _, path = language_model(tmp_path, word_metadata())
    out = cli(capsys, "explain", path, "--text", "the boys near the car", "--unit", "rnn.l0.fwd.c:3", "--at", "4",
              "--svg", tmp_path / "figs" / "cell.svg").out
    assert "rnn.l0.fwd unit 3 (LSTM) at step 4 'car'" in out and "──[+]──" in out
    assert (tmp_path / "figs" / "cell.svg").read_text().startswith("<?xml")
    data = json.loads(cli(capsys, "explain", path, "--text", "the boys near the car", "--unit", "rnn.l0.fwd.c:3",
                          "--at", "4", "--json").out)
    assert data["token"] == "car" and data["tokens"] == ["the", "boys", "near", "the", "car"]
    assert set(data["gates"]) == set("ifgo") and data["check"] < 1e-5
    assert set(data["gates"]["f"]) >= {"input", "recurrent", "bias", "preactivation", "activation", "value", "upstream"}
    assert {"c_prev", "f*c_prev", "i*g", "c", "tanh(c)", "h"} == set(data["state"])


def test_the_command_runs_one_sequence(tmp_path, capsys):
    _, path = language_model(tmp_path, word_metadata())
    fails(capsys, "explain", path, "--text", "the boy", "--text", "the car", "--unit", "rnn.l0.fwd.c:1", "--at", "0",
          match="explain runs one sequence")


# -- every cell type of the registry: an independent step written out per unit (float64) ----------------------
def _act(name: str, x: float, alpha: float = 0.0, beta: float = 0.0) -> float:
    import math

    return {"sigmoid": lambda: 1 / (1 + math.exp(-x)), "tanh": lambda: math.tanh(x), "relu": lambda: max(x, 0.0),
            "hard_sigmoid": lambda: min(max(alpha * x + beta, 0.0), 1.0)}[name]()


def _written_out(module, x: torch.Tensor, j: int, t: int) -> dict[str, float]:
    """Unit j at step t of a one-layer forward variant, every quantity by the textbook equations, one step at a time
    (the LSTM with peepholes, coupling, clip, cell_clip and forget_bias; the GRU; the RNN)."""
    cell, hidden = module.cell_type, module.hidden_size
    w_ih, w_hh = module.weight_ih_l0.detach(), module.weight_hh_l0.detach()
    b = (module.bias_ih_l0 + module.bias_hh_l0).detach()
    clip = (lambda v: v) if cell.clip is None else (lambda v: min(max(v, -cell.clip), cell.clip))
    gate = lambda v: _act(cell.gate_activation.name, clip(v), cell.gate_activation.alpha, cell.gate_activation.beta)  # noqa: E731
    cand = lambda v: _act(cell.activation.name, clip(v), cell.activation.alpha, cell.activation.beta)  # noqa: E731
    h, c = torch.zeros(hidden), torch.zeros(hidden)
    for step in range(t + 1):
        pre = {k: w_ih[cell.rows(k, hidden)] @ x[step] + w_hh[cell.rows(k, hidden)] @ h + b[cell.rows(k, hidden)]
               for k in cell.blocks}  # kind -> (H,)
        out = {}
        if cell.name == "RNN":
            h = torch.tensor([cand(float(v)) for v in pre["h"]])
            out["h"] = h
            continue
        if cell.name == "GRU":
            r = torch.tensor([gate(float(v)) for v in pre["r"]])
            z = torch.tensor([gate(float(v)) for v in pre["z"]])
            rows = cell.rows("n", hidden)
            n_pre = w_ih[rows] @ x[step] + module.bias_ih_l0.detach()[rows] + (
                r * (w_hh[rows] @ h + module.bias_hh_l0.detach()[rows]) if cell.reset_after
                else w_hh[rows] @ (r * h) + module.bias_hh_l0.detach()[rows])
            n = torch.tensor([cand(float(v)) for v in n_pre])
            h = (1 - z) * n + z * h
            out = {"r": r, "z": z, "n": n, "h": h}
            continue
        peep = dict(zip(cell.peephole_kinds, module.weight_ch_l0.detach().chunk(len(cell.peephole_kinds)))) \
            if cell.peepholes else {}
        if "f" in pre:
            pre["f"] = pre["f"] + cell.forget_bias
        g = {k: torch.tensor([gate(float(v)) for v in pre[k] + peep.get(k, 0) * c]) for k in ("i", "f") if k in pre}
        if cell.coupled:
            derived, source = cell.coupled
            g[derived] = 1 - g[source]
        g["g"] = torch.tensor([cand(float(v)) for v in pre["g"]])
        c = g["f"] * c + g["i"] * g["g"]
        if cell.cell_clip is not None:
            c = c.clamp(-cell.cell_clip, cell.cell_clip)
        o = torch.tensor([gate(float(v)) for v in pre["o"] + peep.get("o", 0) * c])
        h = o * torch.tensor([_act(cell.output_activation.name, float(v)) for v in c])
        out = {**g, "o": o, "c": c, "h": h}
    return {k: float(v[j]) for k, v in out.items()}


VARIANTS = [
    ("VariantLSTM", dict(peepholes=True, gate_activation="hard_sigmoid(0.2,0.5)", clip=1.5, forget_bias=1.0,
                         cell_clip=0.8)),
    ("VariantLSTM", dict(coupling="forget_from_input")),
    ("VariantLSTM", dict(coupling="input_from_forget", peepholes=True)),
    ("VariantGRU", dict(gate_activation="hard_sigmoid(0.2,0.5)", reset_after=False, clip=2.0)),
    ("VariantRNN", dict(activation="relu")),
    ("VariantRNN", dict(activation="tanh", clip=0.5)),
]


@pytest.mark.parametrize("cls,kwargs", VARIANTS)
def test_every_variant_of_the_registry_is_explained_as_written_out(float64, cls, kwargs):
    import gatescope

    torch.manual_seed(3)
    module = getattr(gatescope, cls)(3, 5, **kwargs).double().eval()
    with torch.no_grad():
        for p in module.parameters():
            p.uniform_(-1.5, 1.5)  # large enough that clipping and the hard sigmoid's corners are reached
    x = torch.randn(6, 3) * 2
    name = {"VariantLSTM": "lstm", "VariantGRU": "gru", "VariantRNN": "rnn"}[cls]
    for t in (0, 3, 5):
        ref = _written_out(module, x, 2, t)
        e = explain(module, x, f"{name}.l0.fwd.h:2", at=t, top=10)
        assert e.check < 1e-6
        for kind, gate in e.gates.items():
            assert gate.value == pytest.approx(ref[kind], abs=1e-6), kind
        if "c" in e.state:
            assert e.state["c"] == pytest.approx(ref["c"], abs=1e-6)
        assert e.state["h"] == pytest.approx(ref["h"], abs=1e-6)
    if kwargs.get("peepholes"):
        assert any(gate.peephole for gate in e.gates.values())
    if kwargs.get("coupling"):
        derived = {"forget_from_input": "f", "input_from_forget": "i"}[kwargs["coupling"]]
        assert e.gates[derived].preactivation is None and e.gates[derived].activation.startswith("1 - ")
    assert e.render() and e.figure().svg.startswith("<svg")
    json.dumps(e.to_dict(), allow_nan=False)
