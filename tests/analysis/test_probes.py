"""Diagnostic classifiers: planted weights are recovered, control tasks, top-k curves, streaming."""
import contextlib
import math

import pytest
import torch

from gatescope.analysis import selection
from gatescope.analysis.labels import make_labels
from gatescope.analysis.probes import (
    control_labels,
    evaluate_probe,
    fit_probe,
    probe_units,
)
from gatescope.errors import GatescopeError, GatescopeWarning
from gatescope.traces.trace import Trace

S, T, H = 300, 8, 16
PLANTED = {2: 2.0, 9: -1.5, 13: 1.0}


def planted(seed=0, token_ids=True):
    g = torch.Generator().manual_seed(seed)
    n = S * T
    h = torch.randn(n, H, generator=g)
    w = torch.zeros(H)
    for u, v in PLANTED.items():
        w[u] = v
    score = h @ w
    ids = torch.randint(0, 40, (n,), generator=g) if token_ids else None
    trace = Trace({"rnn.l0.fwd.h": h, "rnn.l0.fwd.c": torch.randn(n, H, generator=g)},
                  torch.arange(0, n + 1, T), token_ids=ids)
    return trace, h, w, score


def test_probe_recovers_planted_units_and_is_selective():
    trace, _, _, score = planted()
    table = probe_units(trace, (score > 0).numpy(), epochs=8)
    hrow, crow = table[0], table[1]
    assert hrow["name"] == "rnn.l0.fwd.h"
    assert set(hrow["top_units"][:3]) == {f"rnn.l0.fwd.h:{u}" for u in PLANTED}
    assert hrow["score"] > 0.95 and abs(crow["score"] - crow["baseline"]) < 0.06
    assert hrow["selectivity"] > 0.35  # labels do not follow token types
    assert hrow["curve"][4] > 0.93 and hrow["curve"][1] < hrow["curve"][4]
    assert hrow["k95"] <= 4
    assert list(hrow["curve"]) == [1, 2, 4, 8, 16]


def test_probe_weights_follow_planted_weights_and_streaming(monkeypatch):
    trace, h, w, score = planted(1)
    labels = make_labels(score + 0.05 * torch.randn(len(score)))
    rows = ~selection.heldout_rows(trace)
    monkeypatch.setattr(selection, "CHUNK_ROWS", 333)  # minibatches read chunk by chunk
    probe = fit_probe(trace, "rnn.l0.fwd.h", labels, rows, l1=0.0, l2=0.0, epochs=15)
    raw = probe.weight[0] / probe.std  # back to the units' own scale
    assert raw.tolist() == pytest.approx(w.tolist(), abs=0.08)
    r2 = evaluate_probe(trace, probe, labels, ~rows)
    yt = labels.values[~rows]
    x = h[~rows]
    pred = ((x - probe.mean) / probe.std) @ probe.weight[0] + probe.bias[0]
    ref = 1 - ((pred.double() - yt) ** 2).sum() / ((yt - yt.mean()) ** 2).sum()
    assert r2 == pytest.approx(float(ref), abs=1e-5) and r2 > 0.99


def test_control_task_labels_are_a_function_of_the_token_type():
    trace, _, _, score = planted()
    labels = make_labels((score > 0).double())
    ctrl = control_labels(trace, labels, seed=4)
    ids, values = trace.token_ids, ctrl.values
    for t in ids.unique()[:10].tolist():
        assert values[ids == t].unique().numel() == 1
    assert set(values.unique().tolist()) <= {0.0, 1.0}
    no_ids, *_ = planted(token_ids=False)
    with pytest.raises(GatescopeError, match="token ids"):
        control_labels(no_ids, labels)
    row = probe_units(no_ids, (score > 0).numpy(), kinds="h", ks=[1], epochs=2)[0]
    assert math.isnan(row["control"])


def test_a_probe_below_its_majority_baseline_is_said(recwarn):
    trace, h, _, score = planted(3)
    probe_units(trace, (score > 0).numpy(), ks=[1], epochs=2)  # at chance on c, well above on h
    assert not [w for w in recwarn if issubclass(w.category, GatescopeWarning)]
    held = selection.heldout_rows(trace)
    flipped = (h[:, 0] > 0) ^ held  # the held-out sequences' labels are the other way round
    with pytest.warns(GatescopeWarning, match=r"below the majority baseline: rnn.l0.fwd.h 0\.0\d\d < 0\.\d+"):
        table = probe_units(trace, flipped.numpy(), kinds="h", ks=[1], epochs=2)
    assert table[0]["score"] < 0.1  # still returned: the warning says what it is worth


def test_probe_bad_input():
    trace, h, _, score = planted()
    with pytest.raises(GatescopeError, match="has 5 values"):
        probe_units(trace, [0, 1, 0, 1, 1])
    with pytest.raises(GatescopeError, match="no quantity of kind z"):
        probe_units(trace, (score > 0).numpy(), kinds="z")
    for ks in ([0], [-1, 4], []):  # ks=[-1] probed all units but one, under the name -1
        with pytest.raises(GatescopeError, match="at least 1"):
            probe_units(trace, (score > 0).numpy(), kinds="h", ks=ks)
    one = Trace({"rnn.l0.fwd.h": h[:T]}, [0, T], token_ids=trace.token_ids[:T])
    with pytest.raises(GatescopeError, match="both training and held-out"):
        probe_units(one, [0, 1, 0, 1, 1, 1, 0, float("nan")])  # held out: the last row, unlabelled


def test_the_progress_bar_counts_every_probes_epochs_within_each_quantity(monkeypatch):
    from gatescope.analysis import probes

    trace, _, _, score = planted(2)
    seen = []  # (total, [description at each epoch])
    real = probes.counter

    def spy(total, description, unit, enabled):
        bar = real(total, description, unit, enabled)
        inner = bar.__enter__()
        names = []
        advance, describe = inner.advance, inner.describe
        inner.describe = lambda text: (names.append(text.removeprefix("probing ")), describe(text))
        inner.advance = lambda: (seen[-1][1].append(names[-1]), advance())
        seen.append((total, []))
        try:
            yield inner
        finally:
            bar.__exit__(None, None, None)

    monkeypatch.setattr(probes, "counter", contextlib.contextmanager(spy))
    probe_units(trace, (score > 0).numpy(), ks=[2, 4], epochs=3, progress=True)
    total, epochs = seen[0]
    # per quantity: the full probe, top-2 and top-4, the control task; 3 epochs each
    assert total == 2 * 4 * 3 == len(epochs)
    first, second = epochs[0], epochs[-1]  # the bar moves 12 times within each quantity, naming it
    assert {first, second} == {"rnn.l0.fwd.h", "rnn.l0.fwd.c"} and epochs == [first] * 12 + [second] * 12
