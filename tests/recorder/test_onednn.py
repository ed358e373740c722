"""The oneDNN workspace route: an LSTM's gates read from the fused kernel's own workspace equal the
independent reference loop, the route is really taken where it applies, and a workspace that does
not hold what gatescope expects falls back to recomputing the gates from the fused kernel's own output
(never a wrong value, never the recurrence twice). The check's tolerance follows the cell state's
magnitude, so a long sequence with large cell values still takes the route."""
import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

from gatescope import record
from gatescope.recorder import onednn
from tests.reference import reference_run

ATOL = 1e-5

pytestmark = pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="torch built without oneDNN")


@pytest.fixture
def calls(monkeypatch):
    """Results of every `onednn.lstm_gates` call: True when the workspace was used, False on fallback."""
    seen: list[bool] = []
    real = onednn.lstm_gates

    def spy(*args):
        result = real(*args)
        seen.append(result[1] is not None)
        return result

    monkeypatch.setattr(onednn, "lstm_gates", spy)
    return seen


def check_against_reference(module: nn.LSTM, x: torch.Tensor, lengths: list[int]) -> None:
    """Record ``module`` over the padded batch x (B, T, I) with ``lengths``; compare every sequence."""
    packed = pack_padded_sequence(x, torch.tensor(lengths), batch_first=True, enforce_sorted=False)
    with torch.no_grad(), record(module, route="replay") as rec:
        module(packed)
    for b, n in enumerate(lengths):
        expected, _ = reference_run(module, x[b, :n], path="lstm")
        assert set(expected) == set(rec.trace.names)
        for name, values in expected.items():
            got = rec.trace[name][rec.trace.sequence(b)]
            assert torch.allclose(got, values, atol=ATOL), (name, b, (got - values).abs().max())


@pytest.mark.parametrize(
    "hidden,input_size,kwargs",
    [
        (5, 4, {}),
        (64, 3, {"num_layers": 2}),  # 4H = 256 floats: oneDNN pads such rows by 64 bytes
        (17, 9, {"bidirectional": True}),
        (8, 8, {"bias": False, "num_layers": 2, "bidirectional": True}),
        (33, 70, {"batch_first": True}),
    ],
)
def test_workspace_gates_equal_the_reference_and_the_route_is_taken(calls, hidden, input_size, kwargs):
    torch.manual_seed(0)
    module = nn.LSTM(input_size, hidden, batch_first=True, **{k: v for k, v in kwargs.items() if k != "batch_first"})
    x = torch.randn(3, 6, input_size)
    check_against_reference(module, x, [6, 2, 5])
    layers = module.num_layers * (2 if module.bidirectional else 1)
    assert calls == [True] * layers  # every layer and direction read its gates from the workspace


def test_a_workspace_that_does_not_match_falls_back_to_recomputing(calls, monkeypatch):
    monkeypatch.setattr(onednn, "good_ld", lambda n: n)  # a wrong row length: the check must catch it
    kernels = []
    real = torch._VF.lstm
    monkeypatch.setattr(torch._VF, "lstm", lambda *args: kernels.append(1) or real(*args))
    torch.manual_seed(1)
    module = nn.LSTM(4, 6, num_layers=2)
    check_against_reference(module, torch.randn(2, 5, 4), [5, 3])
    assert calls == [False, False]
    assert kernels == []  # the gates come from oneDNN's own output: the fused kernel is not run again


def saturated_lstm(hidden: int) -> nn.LSTM:
    """An LSTM whose first units keep adding about 1 to c at every step (f ~ 1, i ~ 1, g ~ 1): |c| ~ t."""
    torch.manual_seed(3)
    module = nn.LSTM(4, hidden, batch_first=True)
    with torch.no_grad():
        module.weight_hh_l0.mul_(0.1)
        bias = module.bias_ih_l0.view(4, hidden)  # i, f, g, o
        bias[:3, : hidden // 2] = 12.0
    return module


@pytest.mark.parametrize("wrong_layout", [False, True])
def test_a_long_sequence_with_large_cell_values_takes_the_route_and_a_wrong_layout_is_still_caught(
        calls, monkeypatch, wrong_layout):
    if wrong_layout:
        monkeypatch.setattr(onednn, "good_ld", lambda n: n + 16)  # rows one cache line too long
    module = saturated_lstm(8)
    steps = 1500
    x = torch.randn(2, steps, 4)
    with torch.no_grad(), record(module) as rec:
        module(x)
    c = rec.trace["lstm.l0.fwd.c"]
    assert float(c.abs().max()) > 1000  # the cell state grew with the sequence
    assert calls == [not wrong_layout]
    expected, _ = reference_run(module, x[1], path="lstm")
    for name, values in expected.items():  # relative where the magnitude grows, as the check itself
        torch.testing.assert_close(rec.trace[name][rec.trace.sequence(1)], values, rtol=1e-4, atol=ATOL)


def test_the_check_allows_rounding_that_grows_with_the_bound_and_never_a_nan():
    expected = torch.zeros(3, 2, 4)
    bound = torch.full((3, 2, 4), 1000.0)  # |c| up to 1000: 8u (t + 1) 1000 = 4.8e-4 (t + 1) allowed
    rounding = torch.arange(1, 4, dtype=torch.float32).mul_(onednn.ROUNDING).view(3, 1, 1)
    assert onednn._within(expected, bound, rounding, expected + 4e-4)
    assert not onednn._within(expected, bound, rounding, expected + 2e-3)  # beyond the first step's
    assert onednn._within(expected, bound * 0, rounding, expected + 9e-6)  # the activations' tolerance alone
    assert not onednn._within(expected, bound * 0, rounding, expected + 2e-5)
    off = expected.clone()
    off[1, 0, 2] = float("nan")
    assert not onednn._within(expected, bound, rounding, off)
    assert not onednn._within(expected, bound, rounding, torch.ones_like(off), off)


def test_the_route_stays_out_of_what_it_cannot_do(calls):
    torch.manual_seed(2)
    projected = nn.LSTM(4, 6, proj_size=3)
    with torch.no_grad(), record(projected, route="replay"):
        projected(torch.randn(5, 2, 4))
    half = nn.LSTM(4, 6).double()
    with torch.no_grad(), record(half, route="replay"):
        half(torch.randn(5, 2, 4, dtype=torch.float64))
    assert calls == []  # oneDNN has no projection here and runs float32 only


def test_recorded_values_are_not_part_of_any_graph():
    module = nn.LSTM(4, 6)  # parameters require grad; the route reads them without building a graph
    with torch.no_grad(), record(module, route="replay") as rec:
        module(torch.randn(5, 2, 4))
    assert not any(rec.trace[name].requires_grad for name in rec.trace.names)
