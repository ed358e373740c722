"""gatescope.LSTM / GRU are drop-ins for torch.nn.LSTM / GRU: same state_dict, same forward contract,
same results (max abs difference <= 1e-5 in float32), through both engine routes."""
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

import gatescope

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


def test_wrong_input_size_is_a_clear_error():
    ours = gatescope.LSTM(3, 4)
    ours.route = "step"
    with pytest.raises(ValueError, match="input_size"):
        ours(torch.randn(5, 2, 7))
