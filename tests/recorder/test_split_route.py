"""The split route: an edited LSTM forward direction runs oneDNN's fused kernel up to its first edited
step, and past it for an h ablation (folded into W_hh); every value equals the step route's and the
independent reference loop's, and the fused kernel is really used where the edits allow. At small batch
the edited runs step in the TorchScript-compiled loop, their Interventions as affine maps; at larger batch
in the step route's own loop: both are checked."""
import warnings

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

from gatescope import GatescopeWarning, Intervention, record
from gatescope.recorder import engine, onednn
from gatescope.recorder.interventions import split
from tests.reference import reference_run

ATOL = 1e-5
STEPS = 7

pytestmark = pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="torch built without oneDNN")

# (edits, the step loop's runs (their numbers of steps) in the edited forward direction of layer 0), STEPS = 7
EDITS = {
    "h ablation, every step": ([Intervention("lstm.l0.fwd.h", units=[1, 3], value=0.0)], []),
    "h set from step 3": ([Intervention("lstm.l0.fwd.h", units=[2], value=0.5, steps=slice(3, None))], [1]),
    "h of every unit, a later set wins": (
        [Intervention("lstm.l0.fwd.h", value=0.0), Intervention("lstm.l0.fwd.h", units=[4], value=-0.25)], [1]),
    "gates from step 2": (
        [Intervention("lstm.l0.fwd.c", units=[0], op="scale", value=2.5, steps=[2, 3]),
         Intervention("lstm.l0.fwd.f", units=[1, 3], value=0.0, steps=slice(4, None))], [5]),
    "h set on a window": ([Intervention("lstm.l0.fwd.h", units=[0], value=1.0, steps=range(2, 4))], [2]),
    "two separate steps": (
        [Intervention("lstm.l0.fwd.c", units=[0], op="add", value=0.5, steps=[1]),
         Intervention("lstm.l0.fwd.i", units=[2], op="scale", value=0.0, steps=[5])], [1, 1]),
    "an edit past the end": ([Intervention("lstm.l0.fwd.h", units=[0], value=1.0, steps=[50])], []),
}

CONFIGS = [
    {},
    {"num_layers": 2, "bidirectional": True},
    {"bias": False, "num_layers": 2},
]


@pytest.fixture
def loops(monkeypatch):
    """(which loop, steps) of every forward-direction call of a step loop, in call order: "python" (the
    step route's loop) or "compiled" (the TorchScript loop of an edited run at small batch)."""
    seen: list[tuple[str, int]] = []
    real_step, real_compiled = engine._step_direction, engine._compiled

    def step_spy(is_lstm, x, *args, **kwargs):
        if not args[4]:  # reverse
            seen.append(("python", x.shape[0]))
        return real_step(is_lstm, x, *args, **kwargs)

    def compiled_spy(x, *args):
        seen.append(("compiled", x.shape[0]))
        return real_compiled(x, *args)

    monkeypatch.setattr(engine, "_step_direction", step_spy)
    monkeypatch.setattr(engine, "_compiled", compiled_spy)
    return seen


def reference_edit(edits):
    """``edit(name, t, value)`` for tests/reference.py: the interventions applied to one unbatched value."""
    def edit(name, t, value):
        for iv in edits:
            if iv.name == name:
                changed = iv(value[None], t)
                value = value if changed is None else changed[0]
        return value
    return edit


def run(module, x, lengths, hx, edits, route):
    packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
    past_the_end = [e for e in edits if not len(e.steps_within(x.shape[1]))]
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        with torch.no_grad(), record(module, interventions=edits, route=route) as rec:
            out, state = module(packed, hx)
    # an edit that changed nothing is said, on every route (and nothing else is)
    assert [str(w.message) for w in said if w.category is GatescopeWarning] == [
        f"intervention on {e.name} changed nothing: its steps ({e.steps_shown()}) lie beyond every sequence lstm ran "
        f"({x.shape[1]} steps at most)" for e in past_the_end]
    return out, state, rec.trace


@pytest.mark.parametrize("batch,loop", [(3, "compiled"), (9, "python")])
@pytest.mark.parametrize("kwargs", CONFIGS)
@pytest.mark.parametrize("case", list(EDITS))
def test_the_split_route_equals_the_step_route_and_the_reference(loops, case, kwargs, batch, loop):
    edits, runs = EDITS[case]
    torch.manual_seed(5)
    module = nn.LSTM(4, 5, batch_first=True, **kwargs)
    x = torch.randn(batch, STEPS, 4)
    lengths = torch.tensor([STEPS, 4, 6, 7, 5, 1, 3, 7, 2][:batch])
    split_out, split_state, got = run(module, x, lengths, None, edits, "auto")
    assert [n for _, n in loops] == runs and {kind for kind, _ in loops} <= {loop}
    step_out, step_state, expected = run(module, x, lengths, None, edits, "step")
    assert torch.allclose(split_out.data, step_out.data, atol=ATOL)
    for a, b in zip(split_state, step_state):
        assert torch.allclose(a, b, atol=ATOL)
    assert got.names == expected.names
    for name in expected.names:
        assert torch.allclose(got[name], expected[name], atol=ATOL), (name, (got[name] - expected[name]).abs().max())
    for b, n in enumerate(lengths.tolist()):
        reference, _ = reference_run(module, x[b, :n], path="lstm", edit=reference_edit(edits))
        for name, values in reference.items():
            assert torch.allclose(got[name][got.sequence(b)], values, atol=ATOL), (name, b)


def test_an_ablation_of_units_that_do_not_start_at_the_constant_steps_once(loops):
    torch.manual_seed(6)
    module = nn.LSTM(4, 5, num_layers=2)
    x = torch.randn(STEPS, 2, 4)
    hx = (torch.randn(2, 2, 5), torch.randn(2, 2, 5))  # h0 of the ablated unit is not 0: step 0 steps
    edits = [Intervention("lstm.l0.fwd.h", units=[1], value=0.0), Intervention("lstm.l1.fwd.h", units=[0], value=0.3)]
    results = []
    for route in ("auto", "step"):
        with torch.no_grad(), record(module, interventions=edits, route=route) as rec:
            results.append((module(x, hx), rec.trace))
    assert [n for _, n in loops[:2]] == [1, 1]  # then the fused kernel, folded; the step route's two full layers follow
    ((out, (h_n, c_n)), got), ((out_s, (h_s, c_s)), expected) = results
    for a, b in ((out, out_s), (h_n, h_s), (c_n, c_s)):
        assert torch.allclose(a, b, atol=ATOL)
    for name in expected.names:
        assert torch.allclose(got[name], expected[name], atol=ATOL), name
    assert torch.all(got["lstm.l0.fwd.h"][:, 1] == 0) and torch.all(got["lstm.l1.fwd.h"][:, 0] == 0.3)


def test_a_workspace_that_does_not_match_still_gives_the_step_routes_values(loops, monkeypatch):
    monkeypatch.setattr(onednn, "good_ld", lambda n: n)  # the workspace check fails: gates are recomputed
    test_the_split_route_equals_the_step_route_and_the_reference(loops, "h set from step 3", {"num_layers": 2}, 3,
                                                                 "compiled")


def test_hooks_and_other_edits_keep_the_step_route(loops):
    torch.manual_seed(7)
    module = nn.LSTM(4, 5)
    x = torch.randn(STEPS, 2, 4)
    hook = (lambda value, hook: None)  # a hook's changes cannot be foreseen
    with torch.no_grad(), record(module, hooks=[("lstm.l0.fwd.h", hook)]):
        module(x)
    assert loops == [("python", STEPS)]
    assert split({"h": [lambda v, t: None]}, STEPS, 5) is None
    tensor_value = Intervention("lstm.l0.fwd.h", units=[0], value=torch.ones(2, 1))
    assert split({"h": [tensor_value]}, STEPS, 5).fold is None  # per-sample values: not one constant


def test_affine_maps_apply_every_op_as_the_interventions_do():
    from gatescope.recorder.interventions import affine

    torch.manual_seed(8)
    source = torch.randn(2, 12, 2)
    edits = [Intervention("lstm.l0.fwd.c", units=[0, 2], op="patch", value=source, steps=range(3, 9)),
             Intervention("lstm.l0.fwd.c", units=[2, 4], op="scale", value=torch.tensor([[2.0], [-1.0]])),
             Intervention("lstm.l0.fwd.c", units=[1], op="add", value=0.25, steps=slice(5, None)),
             Intervention("lstm.l0.fwd.c", units=[4], op="set", value=3.0, steps=[4, 10])]
    start, steps = 2, 9  # input positions 2..10
    scale, shift = affine(edits, start, steps, 2, 5, torch.float32, torch.device("cpu"))
    for t in range(steps):
        value = torch.randn(2, 5)
        expected = value
        for e in edits:
            changed = e(expected, start + t)
            expected = expected if changed is None else changed
        torch.testing.assert_close(value * scale[t] + shift[t], expected, rtol=0, atol=1e-6)
