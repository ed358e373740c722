"""Causal tests: ablation and patching against the reference step loop, and the experiment runner."""
import statistics

import pytest
import torch
import torch.nn.functional as F
from tests.reference import reference_run
from torch import nn

from gatescope.analysis import causal
from gatescope.errors import GatescopeError
from gatescope.recorder.recording import record

torch.manual_seed(0)


def run_with(model, x, interventions):
    with torch.no_grad(), record(model, interventions=interventions) as rec:
        out = model(x)[0]
    return out, rec.trace


def reference(model, x, edit=None):
    """Batched reference: the unbatched loop of tests/reference.py per sequence, (B, T, H)."""
    return torch.stack([reference_run(model, x[b], "rnn", edit and (lambda n, t, v, b=b: edit(n, t, v, b)))[1]
                        for b in range(x.shape[0])])


@pytest.fixture(scope="module")
def lstm():
    model = nn.LSTM(3, 6, batch_first=True)
    model.eval()
    return model


class Wrapped(nn.Module):
    """Names the recurrent module ``rnn`` (as checkpoints do)."""

    def __init__(self, rnn):
        super().__init__()
        self.rnn = rnn

    def forward(self, x):
        return self.rnn(x)


def test_zero_ablation_of_h_matches_reference(lstm):
    model, x = Wrapped(lstm), torch.randn(2, 7, 3)
    out, _ = run_with(model, x, causal.ablate(["rnn.l0.fwd.h:1", "rnn.l0.fwd.h:4"]))

    def edit(name, t, v, b):
        if name == "rnn.l0.fwd.h":
            v = v.clone()
            v[[1, 4]] = 0.0
        return v

    with torch.no_grad():
        ref = reference(lstm, x, edit)
        plain = reference(lstm, x)
    assert torch.allclose(out, ref, atol=1e-6)
    assert not torch.allclose(out, plain, atol=1e-3)


def test_gate_ablation_from_a_step_on_and_at_a_value(lstm):
    model, x = Wrapped(lstm), torch.randn(2, 7, 3)
    out, trace = run_with(model, x, causal.ablate(["rnn.l0.fwd.f:2"], value=1.0, start=3))

    def edit(name, t, v, b):
        if name == "rnn.l0.fwd.f" and t >= 3:
            v = v.clone()
            v[2] = 1.0
        return v

    with torch.no_grad():
        ref = reference(lstm, x, edit)
    assert torch.allclose(out, ref, atol=1e-6)
    f = trace["rnn.l0.fwd.f"].reshape(2, 7, 6)
    assert (f[:, 3:, 2] == 1).all() and (f[:, :3, 2] != 1).all()


def test_mean_ablation_uses_the_trace_means(lstm):
    model, x = Wrapped(lstm), torch.randn(3, 5, 3)
    _, trace = run_with(model, x, [])
    ivs = causal.ablate(["rnn.l0.fwd.c:0", "rnn.l0.fwd.c:5"], value="mean", trace=trace)
    means = trace["rnn.l0.fwd.c"][:, [0, 5]].double().mean(0).float()
    assert torch.allclose(ivs[0].value, means)
    out, _ = run_with(model, x, ivs)

    def edit(name, t, v, b):
        if name == "rnn.l0.fwd.c":
            v = v.clone()
            v[[0, 5]] = means
        return v

    with torch.no_grad():
        assert torch.allclose(out, reference(lstm, x, edit), atol=1e-6)
    with pytest.raises(GatescopeError, match="needs a trace"):
        causal.ablate(["rnn.l0.fwd.c:0"], value="mean")


def test_patching_copies_a_counterfactual_run(lstm):
    model = Wrapped(lstm)
    x, source = torch.randn(2, 6, 3), torch.randn(2, 6, 3)
    units = ["rnn.l0.fwd.h:0", "rnn.l0.fwd.h:3"]
    out, _ = run_with(model, x, causal.patch(model, units, source))
    with torch.no_grad():
        src = torch.stack([reference_run(lstm, source[b], "rnn")[0]["rnn.l0.fwd.h"] for b in range(2)])  # (B, T, H)

    def edit(name, t, v, b):
        if name == "rnn.l0.fwd.h":
            v = v.clone()
            v[[0, 3]] = src[b, t, [0, 3]]
        return v

    with torch.no_grad():
        assert torch.allclose(out, reference(lstm, x, edit), atol=1e-5)
    every = [f"rnn.l0.fwd.h:{i}" for i in range(6)]
    full, _ = run_with(model, x, causal.patch(model, every, source))
    assert torch.allclose(full, src, atol=1e-5)  # patching all of h gives the counterfactual's outputs


def test_gru_gate_ablation_matches_reference():
    gru = nn.GRU(3, 4, batch_first=True)
    model, x = Wrapped(gru), torch.randn(2, 5, 3)
    out, _ = run_with(model, x, causal.ablate(["rnn.l0.fwd.z:1"], value=0.5, steps=[0, 2]))

    def edit(name, t, v, b):
        if name == "rnn.l0.fwd.z" and t in (0, 2):
            v = v.clone()
            v[1] = 0.5
        return v

    with torch.no_grad():
        assert torch.allclose(out, reference(gru, x, edit), atol=1e-6)


def additive_metric(weights):
    """A stand-in metric: 1 minus the summed weight of every ablated unit."""
    def fn(interventions):
        return 1.0 - sum(weights.get(f"{iv.name}:{u}", 0.0) for iv in interventions for u in iv.units)
    return causal.Metric("toy", fn)


def test_set_effect_against_random_sets():
    weights = {"rnn.l0.fwd.h:0": 0.3, "rnn.l0.fwd.h:1": 0.2, "rnn.l0.fwd.h:5": 0.01}
    metric = additive_metric(weights)
    pool = [f"rnn.l0.fwd.h:{i}" for i in range(2, 8)]
    effect = causal.set_effect(metric, ["rnn.l0.fwd.h:0", "rnn.l0.fwd.h:1"], pool=pool, draws=6, seed=2)
    assert effect.baseline == 1.0 and effect.harm == pytest.approx(0.5) and effect.value == pytest.approx(0.5)
    draws = causal.random_sets(pool, 2, 6, seed=2)
    expected = [sum(weights.get(u, 0.0) for u in s) for s in draws]
    assert effect.random_harms == pytest.approx(expected)
    assert effect.random_mean == pytest.approx(statistics.fmean(expected))
    assert effect.random_std == pytest.approx(statistics.stdev(expected))
    assert draws == causal.random_sets(pool, 2, 6, seed=2) and all(len(set(s)) == 2 for s in draws)


def test_sweep_greedy_and_top_k():
    weights = {f"rnn.l0.fwd.h:{i}": w for i, w in enumerate([0.05, 0.4, 0.0, 0.25, 0.1])}
    metric = additive_metric(weights)
    units = list(weights)
    table = causal.sweep(metric, units)
    assert table["unit"] == ["rnn.l0.fwd.h:1", "rnn.l0.fwd.h:3", "rnn.l0.fwd.h:4", "rnn.l0.fwd.h:0",
                             "rnn.l0.fwd.h:2"]
    assert table[0]["harm"] == pytest.approx(0.4)
    greedy = causal.greedy_search(metric, units, 3)
    assert greedy[-1]["units"] == ["rnn.l0.fwd.h:1", "rnn.l0.fwd.h:3", "rnn.l0.fwd.h:4"]
    assert greedy[-1]["harm"] == pytest.approx(0.75)
    assert causal.top_k(table, 2) == ["rnn.l0.fwd.h:1", "rnn.l0.fwd.h:3"]
    with pytest.raises(GatescopeError, match="k must be"):
        causal.greedy_search(metric, units, 9)


class LM(nn.Module):
    def __init__(self):
        super().__init__()
        self.embedding, self.rnn, self.decoder = nn.Embedding(7, 4), nn.GRU(4, 5, batch_first=True), nn.Linear(5, 7)

    def forward(self, ids):
        return self.decoder(self.rnn(self.embedding(ids))[0])


def test_logit_difference_under_a_full_patch():
    lm, ids, source = LM(), torch.randint(0, 7, (3, 6)), torch.randint(0, 7, (3, 6))
    correct, wrong = torch.tensor([1, 2, 3]), torch.tensor([4, 5, 6])
    with torch.no_grad():
        plain, counterfactual = lm(ids)[:, -1], lm(source)[:, -1]
    rows = torch.arange(3)
    assert torch.allclose(causal.logit_difference(lm, ids, correct, wrong),
                          plain[rows, correct] - plain[rows, wrong], atol=1e-6)
    every = causal.units_of(lm, ["h"])
    patched = causal.logit_difference(lm, ids, correct, wrong, causal.patch(lm, every, source))
    assert torch.allclose(patched, counterfactual[rows, correct] - counterfactual[rows, wrong], atol=1e-5)


def test_loss_metric_and_lower_is_better():
    lm, ids = LM(), torch.randint(0, 7, (3, 6))
    metric = causal.loss_metric(lm, ids)
    with torch.no_grad():
        logits = lm(ids)
    assert metric([]) == pytest.approx(float(F.cross_entropy(logits[:, :-1].reshape(-1, 7), ids[:, 1:].reshape(-1))),
                                       abs=1e-6)
    assert not metric.higher_is_better and metric.harm(1.0, 1.5) == 0.5
    every = causal.units_of(lm, ["h"])
    assert every == [f"rnn.l0.fwd.h:{i}" for i in range(5)]
    effect = causal.set_effect(metric, every[:2], model=lm, draws=3)
    assert len(effect.random_harms) == 3 and effect.value != effect.baseline


def test_unknown_units_are_clear_errors(lstm):
    model = Wrapped(lstm)
    with pytest.raises(GatescopeError, match="has 6 units"):
        causal.check_units(model, ["rnn.l0.fwd.h:6"])
    with pytest.raises(GatescopeError, match="no quantity rnn.l1.fwd.h"):
        causal.check_units(model, ["rnn.l1.fwd.h:0"])
    with pytest.raises(GatescopeError, match="not a unit name"):
        causal.check_units(model, ["rnn.l0.fwd.h"])
    with pytest.raises(GatescopeError, match="unknown ablation value"):
        causal.ablate(["rnn.l0.fwd.h:0"], value="half")
    with pytest.raises(GatescopeError, match="cannot draw 3"):
        causal.random_sets(["a", "b"], 3, 1)
    with pytest.raises(GatescopeError, match="has 6 units"):
        causal.patch(model, ["rnn.l0.fwd.h:6"], torch.randn(1, 4, 3))
    with pytest.raises(GatescopeError, match=r"\[B, T, \.\.\.\]; got shape \[3\]"):
        causal.patch(model, ["rnn.l0.fwd.h:0"], torch.randn(3))
    with pytest.raises(GatescopeError, match="draws must be >= 0"):
        causal.set_effect(additive_metric({}), ["rnn.l0.fwd.h:0"], pool=["rnn.l0.fwd.h:1"], draws=-1)
    with pytest.raises(GatescopeError, match="no quantity rnn.l2.fwd.h"):
        causal.pool_of(model, ["rnn.l2.fwd.h:0"])
    pool = causal.pool_of(model, ["rnn.l0.fwd.h:2", "rnn.l0.fwd.c:0", "rnn.l0.fwd.f:5"])
    assert pool == ([f"rnn.l0.fwd.h:{i}" for i in (0, 1, 3, 4, 5)] + [f"rnn.l0.fwd.c:{i}" for i in range(1, 6)]
                    + [f"rnn.l0.fwd.f:{i}" for i in range(5)])  # the order given: seeded draws repeat across runs
    assert "rnn.l0.fwd.h:2" not in causal.pool_of(model, ["rnn.l0.fwd.h:2"])
    assert len(causal.pool_of(model, ["rnn.l0.fwd.h:2"])) == 5


def test_agreement_items_need_a_prefix_and_one_token_verbs():
    from gatescope.analysis.agreement import evaluate_agreement
    from gatescope.inputs.stimuli.agreement import AgreementItem
    from gatescope.vocab import Vocabulary

    lm, vocab = LM().eval(), Vocabulary(["the", "boy", "boys", "greets", "greet", "not", "near"])
    good = AgreementItem("the boy", "greets", "greet", "simple")
    with torch.no_grad():
        last = lm(torch.tensor([[0, 1]]))[0, -1]
    result = evaluate_agreement(lm, [good], vocab=vocab)
    assert result["mean_logit_diff"] == pytest.approx(float(last[3] - last[4]), abs=1e-5)
    for bad in (good._replace(correct="greets not"), good._replace(prefix=" ")):  # verbs were misaligned
        with pytest.raises(GatescopeError, match="a prefix and two one-token verbs"):
            evaluate_agreement(lm, [bad], vocab=vocab)


