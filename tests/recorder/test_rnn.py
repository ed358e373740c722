"""gatescope.LSTM / GRU are drop-ins for torch.nn.LSTM / GRU: same state_dict, same forward contract,
same results (max abs difference <= 1e-5 in float32), through both engine routes."""
import contextlib
import warnings

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

import gatescope
from gatescope.recorder import engine

TOL = 1e-5


def _max_diff(a, b):
    if isinstance(a, tuple):
        return max(_max_diff(x, y) for x, y in zip(a, b))
    if isinstance(a, nn.utils.rnn.PackedSequence):
        assert torch.equal(a.batch_sizes, b.batch_sizes)
        return _max_diff(a.data, b.data)
    return (a - b).abs().max().item()


configs = st.fixed_dictionaries(
    {
        "cell": st.sampled_from(["LSTM", "GRU"]),
        "num_layers": st.integers(1, 3),
        "bidirectional": st.booleans(),
        "bias": st.booleans(),
        "batch_first": st.booleans(),
        "proj": st.booleans(),
        "input_kind": st.sampled_from(["batched", "packed", "unbatched"]),
        "given_state": st.booleans(),
        "hidden": st.integers(1, 9),
        "steps": st.integers(1, 7),
        "batch": st.integers(1, 4),
        "seed": st.integers(0, 2**16),
    }
)


@settings(max_examples=60, deadline=None)
@given(configs, st.sampled_from(["step", "replay"]))
def test_drop_in_equivalence(cfg, route):
    torch.manual_seed(cfg["seed"])
    kwargs = dict(num_layers=cfg["num_layers"], bias=cfg["bias"], batch_first=cfg["batch_first"],
                  bidirectional=cfg["bidirectional"])
    proj = 0
    if cfg["cell"] == "LSTM" and cfg["proj"] and cfg["hidden"] > 1:
        proj = cfg["hidden"] - 1
        kwargs["proj_size"] = proj
    ref = getattr(nn, cfg["cell"])(3, cfg["hidden"], **kwargs).eval()
    ours = getattr(gatescope, cfg["cell"])(3, cfg["hidden"], **kwargs).eval()
    ours.load_state_dict(ref.state_dict())
    ours.route = route

    T, B = cfg["steps"], cfg["batch"]
    layers = cfg["num_layers"] * (2 if cfg["bidirectional"] else 1)
    if cfg["input_kind"] == "unbatched":
        x = torch.randn(T, 3)
        state_b = ()
    else:
        x = torch.randn(B, T, 3) if cfg["batch_first"] else torch.randn(T, B, 3)
        state_b = (B,)
    if cfg["input_kind"] == "packed":
        lengths = torch.randint(1, T + 1, (B,))
        x = pack_padded_sequence(x, lengths, batch_first=cfg["batch_first"], enforce_sorted=False)
    hx = None
    if cfg["given_state"]:
        h0 = torch.randn(layers, *state_b, proj or cfg["hidden"])
        hx = (h0, torch.randn(layers, *state_b, cfg["hidden"])) if cfg["cell"] == "LSTM" else h0
    with torch.no_grad():
        expected = ref(x, hx)
        got = ours(x, hx)
    assert type(got[0]) is type(expected[0])
    assert _max_diff(got, expected) <= TOL


def test_state_dict_loads_both_ways():
    ref = nn.LSTM(4, 6, num_layers=2, bidirectional=True, proj_size=3)
    ours = gatescope.LSTM(4, 6, num_layers=2, bidirectional=True, proj_size=3)
    ours.load_state_dict(ref.state_dict())
    assert list(ours.state_dict()) == list(ref.state_dict())
    back = nn.LSTM(4, 6, num_layers=2, bidirectional=True, proj_size=3)
    back.load_state_dict(ours.state_dict())
    assert all(torch.equal(a, b) for a, b in zip(back.state_dict().values(), ref.state_dict().values()))


def test_auto_route_uses_native_kernel_on_cpu_and_matches():
    torch.manual_seed(0)
    ref = nn.GRU(3, 5, num_layers=2)
    ours = gatescope.GRU(3, 5, num_layers=2)
    ours.load_state_dict(ref.state_dict())
    x = torch.randn(4, 2, 3)
    assert torch.equal(ours(x)[0], ref(x)[0])


@pytest.mark.parametrize("cell", ["LSTM", "GRU"])
def test_step_route_backpropagates_like_torch(cell):
    torch.manual_seed(1)
    ref = getattr(nn, cell)(3, 4, num_layers=2, bidirectional=True)
    ours = getattr(gatescope, cell)(3, 4, num_layers=2, bidirectional=True)
    ours.load_state_dict(ref.state_dict())
    ours.route = "step"
    x = torch.randn(5, 2, 3)
    ref(x)[0].pow(2).sum().backward()
    ours(x)[0].pow(2).sum().backward()
    for (name, a), b in zip(ours.named_parameters(), ref.parameters()):
        assert torch.allclose(a.grad, b.grad, atol=1e-5), name


def test_training_mode_dropout_between_layers_only():
    torch.manual_seed(2)
    ours = gatescope.LSTM(3, 4, num_layers=2, dropout=0.5)
    ours.route = "step"
    ours.train()
    x = torch.randn(5, 2, 3)
    a, b = ours(x)[0], ours(x)[0]
    assert not torch.equal(a, b)  # dropout draws differ between calls
    ours.eval()
    assert torch.equal(ours(x)[0], ours(x)[0])


# -- torch's errors, edge shapes, gradients, scripting: each as torch's own modules behave ----------

ROUTES = ["step", "replay", "record"]


def _pair(cell: str, route: str, *args, **kwargs):
    """(torch's module, the same weights run through ``route``): gatescope's module, or torch's under record()."""
    torch.manual_seed(0)
    ref = getattr(nn, cell)(*args, **kwargs)
    if route == "record":
        ours = getattr(nn, cell)(*args, **kwargs)
        ours.load_state_dict(ref.state_dict())
        return ref, ours, lambda *a: _recorded(ours, *a)
    ours = getattr(gatescope, cell)(*args, **kwargs)
    ours.load_state_dict(ref.state_dict())
    ours.route = route
    return ref, ours, ours


def _recorded(module, *args):
    with gatescope.record(module) as rec:
        out = module(*args)
    assert rec.trace.names  # the recording assembles
    return out


def _raised(fn, *args):
    with pytest.raises(Exception) as info:
        fn(*args)
    return type(info.value), str(info.value)


def _state(cell: str, *shape: int):
    return (torch.randn(*shape), torch.randn(*shape)) if cell == "LSTM" else torch.randn(*shape)


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("cell", ["LSTM", "GRU"])
def test_bad_arguments_raise_torchs_own_errors(cell, route):
    ref, _, ours = _pair(cell, route, 3, 4)
    bad = [
        (torch.randn(5, 2, 7),),  # wrong input size: RuntimeError
        (torch.randn(5, 2, 3, dtype=torch.float64),),  # dtype != weight dtype: ValueError
        (torch.randn(5, 2, 3, 1),),  # 4-D input: ValueError
        (torch.randn(0, 2, 3),),  # sequence length 0: torch's kernel refuses
        (torch.randn(5, 2, 3), _state(cell, 1, 3, 4)),  # hidden batch 3 for an input batch of 2
        (torch.randn(5, 2, 3), _state(cell, 3, 4)),  # 2-D hidden for a 3-D input
    ]
    for args in bad:
        expected = _raised(ref, *args)
        assert _raised(ours, *args) == expected, args[0].shape
    assert _raised(ours, torch.randn(5, 2, 3, dtype=torch.float64))[0] is ValueError


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("cell", ["LSTM", "GRU"])
def test_empty_batch_like_torch(cell, route):
    ref, ours_module, ours = _pair(cell, route, 3, 4, num_layers=2, bidirectional=True)
    x = torch.zeros(5, 0, 3, requires_grad=True)
    out, hidden = ours(x)
    expected, expected_hidden = ref(x)
    assert out.shape == expected.shape == (5, 0, 8)
    h = hidden[0] if cell == "LSTM" else hidden
    assert h.shape == (expected_hidden[0] if cell == "LSTM" else expected_hidden).shape == (4, 0, 4)
    if route != "replay":  # the replay route computes without autograd
        out.sum().backward()
        assert all(p.grad is not None and not p.grad.any() for p in ours_module.parameters())


@pytest.mark.parametrize("route", ["step", "record"])
def test_lstm_weight_gradients_are_contiguous_like_torchs(route):
    ref, ours_module, ours = _pair("LSTM", route, 3, 4, num_layers=2)
    x = torch.randn(5, 2, 3)
    grads = torch.autograd.grad(ours(x)[0].pow(2).sum(), list(ours_module.parameters()))
    expected = torch.autograd.grad(ref(x)[0].pow(2).sum(), list(ref.parameters()))
    for g, e in zip(grads, expected):
        assert g.is_contiguous() and g.view(-1).shape == e.view(-1).shape
        torch.testing.assert_close(g, e, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("cell", ["LSTM", "GRU"])
def test_torch_jit_script_compiles_torchs_module_with_the_same_parameters(cell):
    class Net(nn.Module):
        def __init__(self, rnn: nn.Module):
            super().__init__()
            self.rnn = rnn

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.rnn(x)[0]

    ours = getattr(gatescope, cell)(3, 4, num_layers=2, bidirectional=True)
    net = Net(ours)
    with warnings.catch_warnings():  # torch 2.13 deprecates TorchScript, and still compiles it
        warnings.simplefilter("ignore", DeprecationWarning)
        scripted = torch.jit.script(net)
    x = torch.randn(5, 2, 3)
    assert torch.equal(scripted(x), net(x))
    assert scripted.rnn.weight_hh_l1_reverse.data_ptr() == ours.weight_hh_l1_reverse.data_ptr()
    # torch's __prepare_scriptable__ contract swaps the prepared module into the scripted model's tree
    assert type(net.rnn) is getattr(nn, cell) and net.rnn.weight_ih_l0 is ours.weight_ih_l0
    ours = getattr(gatescope, cell)(3, 4)
    ours.route = "step"
    with pytest.raises(RuntimeError, match="route='step' cannot be scripted"), warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.script(ours)


CELL_BAD = {
    "batch 1 hidden, batch 3 input": (torch.randn(3, 10), torch.randn(1, 20)),
    "3-D input": (torch.randn(2, 3, 10), None),
    "wrong input size": (torch.randn(3, 11), None),
    "wrong hidden size": (torch.randn(3, 10), torch.randn(3, 21)),
    "4-D hidden": (torch.randn(3, 10), torch.randn(3, 1, 1, 20)),
    "2-D hidden, 1-D input": (torch.randn(10), torch.randn(1, 20)),
    "float64 input": (torch.randn(3, 10, dtype=torch.float64), None),
}


@pytest.mark.parametrize("case", list(CELL_BAD))
@pytest.mark.parametrize("cell", ["LSTMCell", "GRUCell"])
def test_the_engines_cell_entry_checks_like_torch(cell, case):
    module = getattr(nn, cell)(10, 20)
    x, h = CELL_BAD[case]
    if h is not None and cell == "LSTMCell":
        h = (h, torch.randn(*h.shape))
    assert _raised(lambda *a: engine.run_cell(module, *a), x, h) == _raised(module, x, h)


@pytest.mark.parametrize("cell", ["LSTMCell", "GRUCell"])
def test_the_engines_cell_entry_computes_torchs_step(cell):
    torch.manual_seed(3)
    module = getattr(nn, cell)(10, 20)
    for x in (torch.randn(3, 10), torch.randn(10), torch.randn(0, 10)):
        h = torch.randn(*x.shape[:-1], 20)
        hx = (h, torch.randn_like(h)) if cell == "LSTMCell" else h
        for state in (None, hx):
            torch.testing.assert_close(engine.run_cell(module, x, state), module(x, state))


@pytest.mark.parametrize("cell", ["LSTM", "GRU"])
def test_per_sample_gradients_with_torch_func_on_the_step_route(cell):
    from torch.func import functional_call, grad, vmap

    _, ours, _ = _pair(cell, "step", 3, 4, bidirectional=True)
    params = {k: v.detach() for k, v in ours.named_parameters()}
    x = torch.randn(5, 3, 3)  # (T, B, I)

    def loss(p, sequence):  # one sequence (T, I), unbatched
        return functional_call(ours, p, (sequence,))[0].pow(2).sum()

    per_sample = vmap(grad(loss), in_dims=(None, 1))(params, x)
    for b in range(3):
        one = grad(loss)(params, x[:, b])
        for name in params:
            torch.testing.assert_close(per_sample[name][b], one[name])


@pytest.mark.parametrize("route", ["step", "record"])
@pytest.mark.parametrize("cell", ["LSTM", "GRU"])
def test_per_sample_gradients_with_expanded_weights(cell, route):
    """call_for_per_sample_grads (torch's ExpandedWeights) against one backward per sequence, packed."""
    from torch.nn.utils._per_sample_grad import call_for_per_sample_grads
    from torch.nn.utils.rnn import pad_packed_sequence

    ref, ours, _ = _pair(cell, route, 3, 4, bidirectional=True)
    x = pack_padded_sequence(torch.randn(5, 2, 3), torch.tensor([5, 3]))
    per_sample = call_for_per_sample_grads(ours, batch_size=2, loss_reduction="sum")
    with gatescope.record(ours) if route == "record" else contextlib.nullcontext():
        per_sample(x)[0].data.pow(2).sum().backward()
    padded, lengths = pad_packed_sequence(x)
    for name, param in ours.named_parameters():
        expected = []
        for b, n in enumerate(lengths.tolist()):
            ref.zero_grad()
            ref(padded[:n, b : b + 1])[0].pow(2).sum().backward()
            expected.append(dict(ref.named_parameters())[name].grad.clone())
        torch.testing.assert_close(param.grad_sample, torch.stack(expected), atol=1e-5, rtol=1e-4)


def test_per_sample_gradients_refused_on_the_replay_route():
    from torch.nn.utils._per_sample_grad import call_for_per_sample_grads

    ours = gatescope.GRU(3, 4)
    ours.route = "replay"
    with pytest.raises(RuntimeError, match="replay route has no autograd"):
        call_for_per_sample_grads(ours, batch_size=2)(torch.randn(5, 2, 3))


@pytest.mark.parametrize("cell", ["LSTMCell", "GRUCell"])
def test_the_engines_cell_entry_observes_the_reference_quantities(cell):
    """One cell call, observed as a one-step layer, against tests/reference.py's loop (zero state)."""
    from tests.reference import reference_run

    torch.manual_seed(4)
    module = getattr(nn, cell)(3, 5)
    layer = getattr(nn, cell.removesuffix("Cell"))(3, 5)  # the same weights as a one-layer module
    layer.load_state_dict({f"{k}_l0": v for k, v in module.state_dict().items()})
    x = torch.randn(3)
    kinds = ("i", "f", "g", "o", "c", "h") if cell == "LSTMCell" else ("r", "z", "n", "h")
    seen = {}
    observer = engine.Observer(frozenset(kinds), {}, lambda kind, values, lengths: seen.update({kind: values}))
    out = engine.run_cell(module, x, None, observer)
    expected, _ = reference_run(layer, x.unsqueeze(0))
    for kind in kinds:
        torch.testing.assert_close(seen[kind][0][0], expected[f"rnn.l0.fwd.{kind}"][0], atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(out[0] if cell == "LSTMCell" else out, expected["rnn.l0.fwd.h"][0])
