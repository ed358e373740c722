"""minGRU-pytorch's minGRU and minLSTM recorded by gatescope: outputs equal to the package's parallel scan,
every quantity equal to the independent reference (tests/modern_reference.py), edits carried through."""
from __future__ import annotations

import pytest
import torch

import gatescope
from gatescope.errors import GatescopeWarning
from tests.modern_reference import g, mingru_reference, minlstm_reference

pytest.importorskip("minGRU_pytorch", reason="minGRU-pytorch is not installed (pip install gatescope[modern])")
from minGRU_pytorch import minGRU  # noqa: E402
from minGRU_pytorch.minLM import minLM  # noqa: E402
from minGRU_pytorch.minLSTM import minLSTM  # noqa: E402

TOL = 1e-5
CELLS = [(minGRU, mingru_reference, "xnh"), (minLSTM, minlstm_reference, "fiptnh")]


@pytest.fixture
def x():
    return torch.randn(3, 9, 8, generator=torch.Generator().manual_seed(0))


def seq(trace, name: str, b: int) -> torch.Tensor:
    return trace[name][trace.sequence(b)]


@pytest.mark.parametrize("expansion", [1.0, 2.0])
@pytest.mark.parametrize("cls, reference, kinds", CELLS)
def test_output_and_every_quantity(cls, reference, kinds, expansion, x):
    torch.manual_seed(1)
    module = cls(8, expansion_factor=expansion)
    plain = module(x)  # the package's log-space parallel scan
    with gatescope.record(module) as rec:
        out = module(x)
    torch.testing.assert_close(out, plain, atol=TOL, rtol=0)
    path = cls.__name__.lower()
    assert rec.trace.names == [f"{path}.l0.fwd.{k}" for k in kinds]
    hidden = module.to_out(rec.trace[f"{path}.l0.fwd.h"].view(3, 9, -1))  # h is the state before to_out
    torch.testing.assert_close(hidden, plain, atol=TOL, rtol=0)
    for b in range(3):
        ref = reference(module, x[b])
        for kind in kinds:
            torch.testing.assert_close(seq(rec.trace, f"{path}.l0.fwd.{kind}", b), ref[kind], atol=TOL, rtol=0)


@pytest.mark.parametrize("cls, reference, kinds", CELLS)
def test_from_a_previous_hidden_state(cls, reference, kinds, x):
    torch.manual_seed(2)
    module = cls(8)
    prev = torch.rand(3, 1, 8, generator=torch.Generator().manual_seed(3)) + 0.1  # minGRU's scan takes its log
    for steps in (1, 9):  # the package's sequential path, then its parallel path
        plain, last = module(x[:, :steps], prev, return_next_prev_hidden=True)
        with gatescope.record(module) as rec:
            out, rec_last = module(x[:, :steps], prev, return_next_prev_hidden=True)
        torch.testing.assert_close(out, plain, atol=TOL, rtol=0)
        torch.testing.assert_close(rec_last, last, atol=TOL, rtol=0)
        if steps == 1:
            assert torch.equal(out, plain)  # the package's own step operations
        # minLSTM's parallel path starts from g(prev_hidden), its one-step path from prev_hidden (the package's)
        start = g(prev[1, 0]) if cls is minLSTM and steps > 1 else prev[1, 0]
        ref = reference(module, x[1, :steps], start)
        for kind in kinds:
            torch.testing.assert_close(seq(rec.trace, f"{cls.__name__.lower()}.l0.fwd.{kind}", 1), ref[kind],
                                       atol=TOL, rtol=0)


def test_a_closed_update_gate_holds_the_state(x):
    torch.manual_seed(4)
    module = minGRU(8)
    hold = gatescope.Intervention("mingru.l0.fwd.x", units=[0, 5], op="set", value=0.0, steps=slice(4, None))
    with gatescope.record(module, interventions=[hold]) as rec:
        module(x)
    h = rec.trace.padded("mingru.l0.fwd.h")  # (B, T, D)
    assert torch.equal(h[:, 4:, [0, 5]], h[:, 3:4, [0, 5]].expand(-1, 5, -1))

    def closed(kind, t, value):
        if kind == "x" and t >= 4:
            value = value.clone()
            value[[0, 5]] = 0.0
        return value

    ref = mingru_reference(module, x[2], edit=closed)
    torch.testing.assert_close(seq(rec.trace, "mingru.l0.fwd.h", 2), ref["h"], atol=TOL, rtol=0)


def test_minlstm_normalised_gate_edit_flows(x):
    torch.manual_seed(5)
    module = minLSTM(8)
    keep_all = gatescope.Intervention("minlstm.l0.fwd.p", op="set", value=1.0, steps=[6])
    with gatescope.record(module, interventions=[keep_all]) as rec:
        module(x)

    def keep(kind, t, value):
        return torch.ones_like(value) if kind == "p" and t == 6 else value

    ref = minlstm_reference(module, x[0], edit=keep)
    torch.testing.assert_close(seq(rec.trace, "minlstm.l0.fwd.h", 0), ref["h"], atol=TOL, rtol=0)


def test_min_lm_layers_are_found_by_class():
    torch.manual_seed(6)
    model = minLM(num_tokens=20, dim=8, depth=2, use_lstm=True)
    ids = torch.randint(0, 20, (2, 7), generator=torch.Generator().manual_seed(7))
    plain = model(ids)
    with gatescope.record(model) as rec:
        out = model(ids)
    torch.testing.assert_close(out, plain, atol=TOL, rtol=0)
    assert "layers.1.2.l0.fwd.t" in rec.trace.names
    assert rec.trace.num_sequences == 2 and rec.trace.token_ids is not None
    assert [m["cell"] for m in rec.trace.meta["modules"]] == ["minLSTM", "minLSTM"]


def test_hook_points_on_a_min_lm():
    torch.manual_seed(8)
    model = minLM(num_tokens=20, dim=8, depth=1)
    ids = torch.randint(0, 20, (2, 7), generator=torch.Generator().manual_seed(9))
    hooked = gatescope.hook_points(model, per="sequence")
    assert list(hooked.points) == ["layers.0.2.l0.fwd.x", "layers.0.2.l0.fwd.n", "layers.0.2.l0.fwd.h"]
    assert not hooked.outputs  # the package shapes its modules' outputs: no .out point
    hooked.points["layers.0.2.l0.fwd.x"].register_forward_hook(lambda module, args, gate: torch.zeros_like(gate))
    out = hooked(ids)
    with gatescope.record(model, interventions=[gatescope.Intervention("layers.0.2.l0.fwd.x", op="set")]):
        expected = model(ids)
    torch.testing.assert_close(out, expected, atol=TOL, rtol=0)


def test_a_subclass_is_recognised_by_its_packages_class(x):
    class Mine(minGRU):
        pass

    module = Mine(8)
    with gatescope.record(module) as rec:
        module(x)
    assert rec.trace.names == ["mingru.l0.fwd.x", "mingru.l0.fwd.n", "mingru.l0.fwd.h"]


def test_a_negative_previous_state_is_said(x):
    torch.manual_seed(10)
    module = minGRU(8)
    prev = -torch.rand(3, 1, 8, generator=torch.Generator().manual_seed(11))
    assert torch.isnan(module(x, prev)).any()  # the package's log-space scan
    with gatescope.record(module) as rec, pytest.warns(GatescopeWarning, match="negative values"):
        out = module(x, prev)
    ref = mingru_reference(module, x[0], prev[0, 0])
    torch.testing.assert_close(seq(rec.trace, "mingru.l0.fwd.h", 0), ref["h"], atol=TOL, rtol=0)
    assert not torch.isnan(out).any()
