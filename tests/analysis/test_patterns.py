"""Select-and-match: planted repeats are found, windows respect sequences, counts match brute force."""
import itertools

import pytest
import torch

from gatescope.analysis import selection
from gatescope.analysis.patterns import Selection, match, on_counts, select
from gatescope.errors import GatescopeError
from gatescope.traces.trace import Trace

H, LEN = 10, 40
NAME = "rnn.l0.fwd.h"


def planted_trace(n_seq=30, starts=(3, 250, 611, 1000), seed=0):
    g = torch.Generator().manual_seed(seed)
    n = n_seq * LEN
    h = torch.rand(n, H, generator=g) * 0.32  # a few cells just above 0.3 by chance
    for s in starts:
        h[s : s + 4, [1, 4, 7]] = 0.8
    return Trace({NAME: h}, torch.arange(0, n + 1, LEN)), h


def brute_force(h, units, length, threshold, offsets):
    on = (h[:, units] > threshold).sum(1)
    out = {}
    for s in range(h.shape[0] - length + 1):
        seq = int(torch.searchsorted(offsets, torch.tensor(s), right=True)) - 1
        if s + length <= int(offsets[seq + 1]):
            out[s] = int(on[s : s + length].sum())
    return out


def test_select_finds_the_units_on_over_the_span():
    trace, _ = planted_trace()
    sel = select(trace, NAME, 3, 7)
    assert sel.units == (1, 4, 7) and sel.length == 4 and sel.threshold == 0.3


def test_match_finds_planted_repeats_first():
    trace, _ = planted_trace()
    table = match(trace, select(trace, NAME, 3, 7), top=5)
    assert sorted(r["start"] for r in table.rows[:3]) == [250, 611, 1000]
    assert all(r["matched"] == 12 and r["distance"] == 0 and r["score"] == 1.0 for r in table.rows[:3])
    assert table[0]["sequence"] == table[0]["start"] // LEN and table[0]["position"] == table[0]["start"] % LEN
    with_self = match(trace, select(trace, NAME, 3, 7), top=4, include_self=True)
    assert sorted(r["start"] for r in with_self) == [3, 250, 611, 1000]


def test_match_counts_agree_with_brute_force_and_never_overlap(monkeypatch):
    trace, h = planted_trace(starts=(3, 250, 611, 1000, 38))  # 38: crosses a sequence boundary
    monkeypatch.setattr(selection, "BUDGET", 50 * H)  # rows read 50 at a time
    sel = select(trace, NAME, 3, 7)
    table = match(trace, sel, top=40)
    ref = brute_force(h, [1, 4, 7], 4, 0.3, trace.offsets)
    ref = {s: v for s, v in ref.items() if not -4 < s - 3 < 4}
    for row in table:
        assert row["matched"] == ref[row["start"]]  # also: every result lies within one sequence
    assert table[0]["matched"] == max(ref.values())
    spans = sorted((r["start"], r["stop"]) for r in table)
    assert all(a[1] <= b[0] for a, b in itertools.pairwise(spans))
    assert [r["matched"] for r in table] == sorted((r["matched"] for r in table), reverse=True)
    assert 38 not in [r["start"] for r in table]  # a window crossing rows 39/40 is never considered
    assert torch.equal(on_counts(trace, sel), (h[:, [1, 4, 7]] > 0.3).sum(1))


def test_match_text_uses_the_vocabulary():
    trace, _ = planted_trace(n_seq=3)
    ids = torch.arange(trace.num_tokens) % 5
    vocab = ["a", "b", "c", "d", "e"]
    trace = Trace({NAME: trace[NAME]}, trace.offsets, token_ids=ids, meta={"vocab": vocab})
    row = match(trace, select(trace, NAME, 3, 7), top=1)[0]
    assert row["text"] == " ".join(vocab[i] for i in ids[row["start"] : row["stop"]].tolist())


def test_bad_selections():
    trace, _ = planted_trace()
    with pytest.raises(GatescopeError, match="crosses a sequence boundary"):
        select(trace, NAME, 38, 42)
    with pytest.raises(GatescopeError, match="no unit of"):
        select(trace, NAME, 100, 101, threshold=0.99)
    with pytest.raises(GatescopeError, match="no quantity 'rnn.l0.fwd.c' in this trace; it has: rnn.l0.fwd.h"):
        select(trace, "rnn.l0.fwd.c", 3, 7)
    with pytest.raises(GatescopeError, match="not a non-empty span"):
        select(trace, NAME, 7, 3)
    for units in ([99], [-1]):  # negative indices are refused, not read from the end
        with pytest.raises(GatescopeError, match=rf"unit\(s\) {units[0]} out of range; {NAME} has"):
            select(trace, NAME, 3, 7, units=units)
    with pytest.raises(GatescopeError, match="at least one unit"):
        match(trace, Selection(NAME, (), 3, 7))
    with pytest.raises(GatescopeError, match="a span of 1 to 1200 rows"):
        match(trace, Selection(NAME, (1,), 0, 2000))
    with pytest.raises(GatescopeError, match="not in this trace"):
        match(trace, Selection("rnn.l0.fwd.c", (1,), 3, 7))
