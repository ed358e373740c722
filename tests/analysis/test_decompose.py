"""decompose: the parts add up to the model's values (checked here against tests/reference.py's independent
loop) on every configuration of the recording sweep, each Shapley rule equals the definition (every order of
the parts), information flows only forward in time, and what a method cannot do is refused in one line."""
import itertools
import math

import pytest
import torch

import gatescope
from gatescope import GatescopeError
from gatescope.analysis.decomposition import decompose, shapley
from gatescope.recorder.rnn import ResetBeforeGRU
from tests.recorder.test_record import CONFIGS, TinyLM
from tests.reference import reference_run

SAMPLE = "sample_models/agreement_lstm.safetensors"


def _shapley_by_orders(fn, x):
    """The definition: each part's marginal value averaged over every order of the parts (baseline f(0) apart)."""
    n = x.shape[0]
    phi = torch.zeros(n, *fn(x[0]).shape, dtype=x.dtype)
    for order in itertools.permutations(range(n)):
        total = torch.zeros_like(x[0])
        for j in order:
            phi[j] += fn(total + x[j]) - fn(total)
            total = total + x[j]
    return phi / math.factorial(n)


@pytest.mark.parametrize("fn", [torch.sigmoid, torch.tanh])
def test_exact_and_sampled_shapley_equal_the_definition(fn):
    torch.manual_seed(0)
    x = torch.randn(4, 3, 5, dtype=torch.float64)
    x[2] = 0  # a part that is zero throughout takes nothing
    base = torch.zeros(4, 3, 1, dtype=torch.float64)
    base[0] = 1
    expected = _shapley_by_orders(fn, x)
    expected[0] += fn(torch.zeros(3, 5, dtype=torch.float64))
    torch.testing.assert_close(shapley.exact(fn, x, base), expected)
    many = shapley.sampled(fn, x, base, 1000, torch.Generator().manual_seed(0))
    torch.testing.assert_close(many.sum(0), fn(x.sum(0)))  # every order adds up exactly
    assert float((many - expected).abs().max()) < 0.03


def test_the_product_rule_is_the_shapley_value_of_the_product():
    torch.manual_seed(1)
    a, b = torch.randn(2, 5, 2, 3, dtype=torch.float64)
    both = torch.stack([a, b], -1)  # the product of the two arguments, as one function of their sum
    by_orders = _shapley_by_orders(lambda s: s[..., 0] * s[..., 1], both)
    torch.testing.assert_close(shapley.product(a, b), by_orders)


def _model(cell, kwargs):
    torch.manual_seed(0)
    if cell == "GRU-reset-before":
        model = TinyLM("GRU")
        model.rnn = ResetBeforeGRU(4, 5, batch_first=True)
        return model.eval()
    return TinyLM(cell, **kwargs).eval()


SWEEP = [c for c in CONFIGS if "proj_size" not in c[1]] + [("GRU-reset-before", {})]


@pytest.mark.parametrize("method", ["shapley", "gcd", "cd"])
@pytest.mark.parametrize("cell,kwargs", SWEEP, ids=lambda v: str(v))
def test_parts_add_up_to_the_reference_values(cell, kwargs, method):
    model = _model(cell, kwargs)
    ids = torch.tensor([3, 1, 4, 1, 5])
    result = decompose(model, ids, method)
    assert result.check < 1e-5 and len(result.parts) == 6 and result.parts[0] == ()
    with torch.no_grad():
        expected, _ = reference_run(model.rnn, model.embedding(ids))
        logits = model(ids.unsqueeze(0))[0]
    assert set(result.quantities) == set(expected)
    if method == "shapley":  # the parts themselves add up; gcd/cd passes do (the check), their betas need not
        for name, values in expected.items():
            torch.testing.assert_close(result.quantities[name].sum(0), values, atol=1e-5, rtol=0)
        torch.testing.assert_close(result.logits.sum(0), logits, atol=1e-5, rtol=0)
        assert float(result.interaction.abs().max()) < 1e-5
    torch.testing.assert_close(result.actual["logits"], logits)
    forward = [n for n in expected if ".fwd." in n and n.endswith(".l0.fwd.h")]
    for name in forward:  # token 3 has no share in the first layer's forward states before it
        assert bool((result.quantities[name][4, :3] == 0).all())


def test_sampled_shapley_reports_its_error_and_is_near_the_exact_values():
    model = gatescope.load(SAMPLE)
    ids = torch.tensor(model.encode("the boys near the car"))
    exact = decompose(model, ids)
    sampled = decompose(model, ids, num_samples=64, seed=1)
    error = sampled.logit_difference_error(-1, 5, 6)
    gap = (sampled.logit_difference(-1, 5, 6) - exact.logit_difference(-1, 5, 6)).abs()
    assert sampled.check < 1e-5 and bool((error > 0).all()) and bool((gap < 5 * error + 1e-3).all())
    assert exact.sampling_error is None and exact.logit_difference_error(-1, 5, 6) is None


def test_spans_batches_and_refusals():
    model = _model("LSTM", {})
    ids = torch.tensor([[3, 1, 4, 1], [2, 7, 1, 8]])
    result = decompose(model, ids, "gcd", parts=[[0, 1], 3])
    assert result.parts == [(), (0, 1), (3,), (2,)] and result.logits.shape == (4, 2, 4, 11)
    assert result.labels(["a", "b", "c", "d"]) == ["constants", "a b", "d", "c"]
    with pytest.raises(GatescopeError, match="proj_size=3"):
        decompose(TinyLM("LSTM", proj_size=3), ids)
    with pytest.raises(GatescopeError, match="at most 12 parts"):
        decompose(model, torch.zeros(12, dtype=torch.long))
    with pytest.raises(GatescopeError, match="non-overlapping"):
        decompose(model, ids, parts=[[0, 1], [1]])
    with pytest.raises(GatescopeError, match="unknown decomposition method"):
        decompose(model, ids, "lrp")
    rnn = TinyLM("RNN")
    with pytest.raises(GatescopeError, match="LSTM and GRU layers; rnn is RNN"):
        decompose(rnn, ids)
    peephole = gatescope.load("sample_models/agreement_lstm_peephole.safetensors")
    with pytest.raises(GatescopeError, match=r"LSTM and GRU layers; rnn is LSTM \(peepholes\)"):
        decompose(peephole, ids)  # the variant named, not the LSTM it is not


def test_a_run_larger_than_memory_is_one_line(monkeypatch):
    """Parts x tokens copies of the run: 4,000 tokens asked torch's allocator for 147 GB, and its error came
    out as a traceback. Whatever the allocator refuses is a GatescopeError saying what grows and what to do."""
    import sys

    module = sys.modules["gatescope.analysis.decomposition.decompose"]  # the package's name is the function

    def refused(*args, **kwargs):
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:121] data. DefaultCPUAllocator: can't allocate memory: "
                           "you tried to allocate 147462144000 bytes. Error code 12 (Cannot allocate memory)")

    monkeypatch.setattr(module, "run_layer", refused)
    with pytest.raises(GatescopeError, match="decomposing 4 tokens needs more memory than there is.*fewer parts"):
        decompose(_model("LSTM", {}), torch.tensor([3, 1, 4, 1]), "gcd")
    monkeypatch.setattr(module, "run_layer", lambda *a: (_ for _ in ()).throw(RuntimeError("another failure")))
    with pytest.raises(RuntimeError, match="another failure"):  # any other error stays what it is
        decompose(_model("LSTM", {}), torch.tensor([3, 1, 4, 1]), "gcd")
