"""Streaming accumulators: merge of two halves equals one pass, and the results equal the in-memory analyses."""
import numpy as np
import pytest
import torch

from gatescope.analysis.dynamics import saturation, timescales
from gatescope.analysis.labels import make_labels, resolve_labels
from gatescope.analysis.ranking import rank_units
from gatescope.analysis.streaming.accumulators import (
    Association,
    Grid,
    GroupMeans,
    Histogram,
    Moments,
    Saturation,
)
from gatescope.analysis.streaming.analyses import StreamingRanking, StreamingSaturation
from gatescope.errors import GatescopeError
from gatescope.traces.trace import Trace

N, H = 500, 6


def quantised_trace(seed=0):
    """h tracks a binary label in unit 2; values on a 1/512 grid (so every grid bin holds one value)."""
    g = torch.Generator().manual_seed(seed)
    y = (torch.rand(N, generator=g) > 0.5).float()
    h = torch.tanh(torch.randn(N, H, generator=g))
    h[:, 2] = torch.tanh(1.5 * y - 0.75 + 0.5 * torch.randn(N, generator=g))
    f = torch.sigmoid(torch.randn(N, H, generator=g) * 3)
    c = 3 * torch.randn(N, H, generator=g)
    h, f = torch.round(h * 512) / 512, torch.round(f * 512) / 512
    cat = torch.randint(0, 4, (N,), generator=g).float()
    cont = torch.randn(N, generator=g).double() + h[:, 1].double()
    cat[::7] = float("nan")
    return Trace({"rnn.l0.fwd.f": f, "rnn.l0.fwd.c": c, "rnn.l0.fwd.h": h}, torch.arange(0, N + 1, 10),
                 features={"label": y.numpy(), "cat": cat.numpy(), "cont": cont.numpy()})


def widths(trace):
    return {n: trace[n].shape[1] for n in trace.names}


def feed(analysis, trace, start=0, stop=N, chunk=64):
    for a in range(start, stop, chunk):
        b = min(stop, a + chunk)
        analysis.update({n: trace[n][a:b] for n in trace.names}, a)
    return analysis


def test_merge_of_halves_equals_one_pass():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(300, 5, generator=g, dtype=torch.float64)
    y = torch.randn(300, generator=g, dtype=torch.float64)
    y[::5] = float("nan")
    codes = torch.randint(0, 3, (300,), generator=g)
    makers = [
        (lambda: Moments(5), lambda acc, s: acc.update(x[s])),
        (lambda: Association(5, "continuous"), lambda acc, s: acc.update(x[s], y[s])),
        (lambda: Association(5, "categorical", 3), lambda acc, s: acc.update(x[s], codes[s].double())),
        (lambda: Histogram(5, Grid.for_kind("c", 64), 3), lambda acc, s: acc.update(x[s], codes[s])),
        (lambda: Saturation(5, "h"), lambda acc, s: acc.update(torch.tanh(x[s]))),
        (lambda: GroupMeans(5, 3), lambda acc, s: acc.update(x[s], codes[s])),
    ]
    for make, update in makers:
        whole, first, second = make(), make(), make()
        update(whole, slice(0, 300))
        update(first, slice(0, 137))
        update(second, slice(137, 300))
        first.merge(second)
        for key, value in whole.state.items():
            if value.dtype == torch.int64:
                assert torch.equal(first.state[key], value), key
            else:
                torch.testing.assert_close(first.state[key], value, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(first.result(), whole.result(), rtol=1e-12, atol=1e-12)


def test_merge_refuses_unlike_accumulators():
    with pytest.raises(GatescopeError, match="cannot merge"):
        Moments(3).merge(Moments(4))
    with pytest.raises(GatescopeError, match="cannot merge"):
        Moments(3).merge(Saturation(3, "f"))


def test_group_means_and_moments_against_torch():
    g = torch.Generator().manual_seed(2)
    x = torch.randn(100, 4, generator=g, dtype=torch.float64)
    groups = torch.randint(-1, 3, (100,), generator=g)
    acc = GroupMeans(4, 4)
    acc.update(x, groups)
    out = acc.result()
    for k in range(3):
        torch.testing.assert_close(out["mean"][k], x[groups == k].mean(0))
    assert out["count"][3] == 0 and bool(out["mean"][3].isnan().all())
    m = Moments(4)
    m.update(x)
    torch.testing.assert_close(m.result()["var"], x.var(0, unbiased=False))


@pytest.mark.parametrize("feature", ["label", "cat", "cont"])
def test_streaming_ranking_equals_rank_units(feature):
    trace = quantised_trace()
    exact = rank_units(trace, feature=feature, permutations=0)
    labels = resolve_labels(trace, feature=feature)
    stream = feed(StreamingRanking(widths(trace), labels), trace).result()
    assert [r["unit"] for r in stream][:3] == [r["unit"] for r in exact][:3]
    by_unit = {r["unit"]: r for r in exact}
    for row in stream:
        ref = by_unit[row["unit"]]
        value = "eta2" if feature == "cat" else "corr"
        assert row[value] == pytest.approx(ref[value], abs=1e-10)
        assert row["n"] == ref["n"]
        if row["kind"] != "c":  # gates and h lie on the grid: exact
            assert row["mi"] == pytest.approx(ref["mi"], abs=1e-12)
        if feature == "label":
            assert abs(row["auc"] - ref["auc"]) <= row["auc_bound"] + 1e-12
            if row["kind"] != "c":
                assert row["auc"] == pytest.approx(ref["auc"], abs=1e-12)


def test_streaming_auc_error_is_within_its_bound_off_the_grid():
    g = torch.Generator().manual_seed(3)
    y = (torch.rand(N, generator=g) > 0.3).float()
    f = torch.sigmoid(torch.randn(N, H, generator=g) + y[:, None])
    trace = Trace({"rnn.l0.fwd.f": f}, torch.arange(0, N + 1, 10), features={"label": y.numpy()})
    exact = {r["unit"]: r["auc"] for r in rank_units(trace, feature="label", permutations=0)}
    coarse = feed(StreamingRanking(widths(trace), resolve_labels(trace, feature="label"), grid_bins=16), trace)
    for row in coarse.result():
        assert row["auc_bound"] > 0
        assert abs(row["auc"] - exact[row["unit"]]) <= row["auc_bound"]


def test_streaming_ranking_merge_of_halves():
    trace = quantised_trace()
    labels = resolve_labels(trace, feature="label")
    whole = feed(StreamingRanking(widths(trace), labels), trace).result()
    first = feed(StreamingRanking(widths(trace), labels), trace, 0, 230)
    first.merge(feed(StreamingRanking(widths(trace), labels), trace, 230, N))
    for a, b in zip(first.result(), whole):
        assert a["unit"] == b["unit"]
        assert a == pytest.approx(b, abs=1e-12)


def test_streaming_saturation_equals_dynamics():
    trace = quantised_trace()
    for kinds in (None, "h", "f,h"):
        stream = feed(StreamingSaturation(widths(trace), kinds=kinds), trace)
        assert stream.result().rows == pytest.approx(saturation(trace, kinds=kinds).rows)
        assert stream.timescales().rows == pytest.approx(timescales(trace).rows)
    with pytest.raises(GatescopeError, match="c lies in -inf..inf"):  # refused by both, in the same words
        StreamingSaturation(widths(trace), kinds="c")
    nan = Trace({"rnn.l0.fwd.h": torch.tensor([[0.95, np.nan], [np.nan, np.nan], [-0.99, 0.0]])}, [0, 3])
    stream = feed(StreamingSaturation(widths(nan)), nan, 0, 3, 2)
    assert stream.result().rows == pytest.approx(saturation(nan).rows, nan_ok=True)  # NaN: the one rule


def test_streaming_ranking_refuses_what_it_cannot_do():
    trace = quantised_trace()
    labels = resolve_labels(trace, feature="label")
    with pytest.raises(GatescopeError, match="metric probe"):
        StreamingRanking(widths(trace), labels, metric="probe")
    with pytest.raises(GatescopeError, match="no quantity of kind"):
        StreamingRanking(widths(trace), labels, kinds="z")
    short = make_labels(torch.tensor([0.0, 1.0] * 10))
    with pytest.raises(GatescopeError, match="more tokens than"):
        feed(StreamingRanking(widths(trace), short), trace)
    bad = Moments(2)
    with pytest.raises(GatescopeError, match="NaN"):
        bad.update(torch.tensor([[1.0, np.nan]]))


@pytest.mark.parametrize("feature", ["label", "cont"])
def test_streaming_probe_equals_fit_probe(feature, monkeypatch):
    from gatescope.analysis import selection
    from gatescope.analysis.probes import evaluate_probe, fit_probe
    from gatescope.analysis.selection import heldout_rows
    from gatescope.analysis.streaming.analyses import StreamingProbes

    monkeypatch.setattr(selection, "CHUNK_ROWS", 64)  # the trace's chunks are the stream's batches
    trace = quantised_trace()
    labels = resolve_labels(trace, feature=feature)
    held = heldout_rows(trace)
    probes = StreamingProbes(widths(trace), labels, held, kinds="h", epochs=3)
    for phase in probes.passes():
        probes.begin(phase)
        feed(probes, trace)
    (row,) = probes.result().rows
    probe = fit_probe(trace, "rnn.l0.fwd.h", labels, ~held, epochs=3)
    streamed = probes._probe("rnn.l0.fwd.h")
    torch.testing.assert_close(streamed.weight, probe.weight, rtol=0, atol=1e-6)
    assert row["score"] == pytest.approx(evaluate_probe(trace, probe, labels, held), abs=1e-5)
    assert row["n_test"] == int((held & labels.valid).sum()) and row["top_units"][0].startswith("rnn.l0.fwd.h:")


def test_a_streamed_probe_below_its_majority_baseline_is_said():
    from gatescope.analysis.selection import heldout_rows
    from gatescope.analysis.streaming.analyses import StreamingProbes
    from gatescope.errors import GatescopeWarning

    trace = quantised_trace()
    held = heldout_rows(trace)
    flipped = make_labels(torch.as_tensor(trace.features["label"]) != held)  # held-out labels reversed
    probes = StreamingProbes(widths(trace), flipped, held, kinds="h", epochs=3)
    for phase in probes.passes():
        probes.begin(phase)
        feed(probes, trace)
    with pytest.warns(GatescopeWarning, match="below the majority baseline: rnn.l0.fwd.h"):
        (row,) = probes.result().rows
    assert row["score"] < row["baseline"]
