"""Select-and-match in the browser, driven with Pilot: span by keys and mouse, threshold, units, matches.

The matches the browser lists are checked against `gatescope.analysis.patterns.match` run on the
same Trace (the analysis layer's own select-and-match), and the units against the values.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from tests.tui.test_app import SENTENCES, SIZE, VOCAB, settle, sync
from textual.events import MouseMove

from gatescope.analysis.patterns import match, select
from gatescope.traces.trace import Trace
from gatescope.tui.app import GatescopeApp
from gatescope.tui.heatmap import Heatmap
from gatescope.tui.match_panel import MatchPanel
from gatescope.tui.matching import SpanSelection
from gatescope.tui.meta_tracks import MetaTracks
from gatescope.tui.selection_plot import SelectionPlot
from gatescope.tui.text_view import TextView

H = "rnn.l0.fwd.h"
PLANTED = (2, 5)  # units on over every "near the"


def planted_trace() -> Trace:
    """h and f of a word trace: units 2 and 5 of h are 0.9 on every "near the", everything else below 0.3."""
    g = torch.Generator().manual_seed(0)
    ids, offsets, in_pp = [], [0], []
    for sentence in SENTENCES:
        words = sentence.split() + ["<eos>"]
        ids += [VOCAB.index(w) for w in words]
        offsets.append(len(ids))
        in_pp += [float(w in ("near", "the") and "near" in words[:i + 1] and i < 4) for i, w in enumerate(words)]
    n = len(ids)
    h = torch.rand(n, 8, generator=g) * 0.25
    tokens = [VOCAB[i] for i in ids]
    for row in range(n - 1):
        if tokens[row] == "near" and tokens[row + 1] == "the":
            h[row:row + 2, list(PLANTED)] = 0.9
    f = torch.sigmoid(torch.randn(n, 8, generator=g))
    return Trace({"rnn.l0.fwd.f": f, H: h}, offsets, token_ids=torch.tensor(ids),
                 features={"in_pp": in_pp, "depth": [float(i % 3) for i in range(n)]},
                 meta={"vocab": VOCAB, "tokenizer": "word"})


def near_rows(trace: Trace) -> list[int]:
    tokens = trace.tokens()
    return [i for i in range(len(tokens) - 1) if tokens[i:i + 2] == ["near", "the"]]


@sync
async def test_keys_select_a_span_and_the_matches_are_the_analysis_layers():
    trace = planted_trace()
    app = GatescopeApp(trace, start=f"{H}:0")
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("right", "right", "v", "shift+right")  # rows 2:4, "near the" of sentence 0
        await settle(pilot)
        chosen = app.selection
        assert (chosen.start, chosen.stop, chosen.threshold) == (2, 4, 0.3)  # tanh-range default
        assert chosen.units == PLANTED
        expected = match(trace, select(trace, H, 2, 4, 0.3), top=50)
        result = app.result
        assert result.starts == [r["start"] for r in expected] and result.matched == [r["matched"] for r in expected]
        assert result.starts[:2] == near_rows(trace)[1:]  # the other "near the"s come first, fully on
        panel = app.query_one(MatchPanel)
        status = str(panel.query_one("#match-status").render())
        windows = sum(stop - start - 1 for start, stop in zip(trace.offsets[:-1].tolist(), trace.offsets[1:].tolist()))
        assert status.startswith(f"{len(expected)} of ") and "candidate spans" in status
        assert result.candidates <= windows
        table = panel.query_one("#match-table")
        first = table.get_row_at(0)
        sequence = trace.sequence_of(result.starts[0])
        assert first[1] == f"{sequence}:{result.starts[0] - int(trace.offsets[sequence])}" and first[2] == "1.00"
        assert "near the" in first[3].plain  # the span in context
        features = str(panel.query_one("#match-features").render()).splitlines()
        in_pp = trace.features["in_pp"].numpy()
        spans = [in_pp[s:s + 2] for s in result.starts]
        on = np.mean(np.concatenate(spans) == 1)
        wholly = np.mean([bool(np.all(s == 1)) for s in spans])
        assert features[0] == (f"in_pp: {on:.0%} of matched tokens, {wholly:.0%} of matches wholly "
                               f"(trace {np.nanmean(in_pp):.0%})")
        assert features[1].startswith("depth: ")
        # selecting a match moves every view there
        table.focus()
        await pilot.press("enter")
        await settle(pilot)
        heatmap = app.query_one(Heatmap)
        assert heatmap.row == result.starts[0]
        assert heatmap.visible_rows()[0] <= result.starts[0] < heatmap.visible_rows()[1]
        assert app.query_one(TextView).row == result.starts[0]


@sync
async def test_threshold_keys_units_by_hand_and_restricting_the_heatmap():
    trace = planted_trace()
    app = GatescopeApp(trace, start="rnn.l0.fwd.f:0")
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("v", "shift+right", "shift+right")
        await settle(pilot)
        f = trace["rnn.l0.fwd.f"].numpy()[0:3]
        assert app.selection.threshold == 0.5  # a sigmoid gate's default
        assert app.selection.units == tuple(np.flatnonzero((f > 0.5).all(0)))
        await pilot.press("left_square_bracket", "left_square_bracket")
        await settle(pilot)
        assert app.selection.threshold == pytest.approx(0.4)
        on = tuple(np.flatnonzero((f > 0.4).all(0)))
        assert app.selection.units == on and "threshold 0.4" in str(app.query_one("#status").render())
        off = next(u for u in range(8) if u not in on)
        await pilot.press(*["down"] * off, "a")  # add a unit that is not on
        await settle(pilot)
        assert app.selection.units == tuple(sorted(on + (off,)))
        assert app.result.starts == [r["start"] for r in match(
            trace, select(trace, "rnn.l0.fwd.f", 0, 3, 0.4, units=list(app.selection.units)), top=50)]
        await pilot.press("a")  # and remove it again
        await settle(pilot)
        assert app.selection.units == on
        await pilot.press("R")
        await settle(pilot)
        heatmap = app.query_one(Heatmap)
        assert heatmap.shown.tolist() == list(on) and heatmap.unit in on
        await pilot.press("down")
        assert heatmap.unit in on
        await pilot.press("R", "escape")
        await settle(pilot)
        assert not heatmap.restricted and app.selection is None and not app.query_one(MatchPanel).display


@sync
async def test_mouse_drag_selects_in_the_heatmap_and_the_text_view():
    trace = planted_trace()
    app = GatescopeApp(trace, start=f"{H}:0")
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        heatmap = app.query_one(Heatmap)
        x = heatmap.gutter_width + 2 * heatmap.cell_width  # the column of row 2
        await pilot.mouse_down(Heatmap, offset=(x, 2))
        await pilot._post_mouse_events([MouseMove], Heatmap, offset=(x + heatmap.cell_width, 2), button=1)
        await pilot.mouse_up(Heatmap, offset=(x + heatmap.cell_width, 2))
        await settle(pilot)
        assert (app.selection.start, app.selection.stop) == (2, 4) and app.selection.units == PLANTED
        text = app.query_one(TextView)
        placed = {p.row: (p, i) for i, line in enumerate(text.lines()) for p in line if p.row >= 0}
        (boy, line), (greets, _) = placed[1], placed[5]
        origin = (text.gutter.left, text.gutter.top + line)
        await pilot.mouse_down(TextView, offset=(boy.x + origin[0], origin[1]))
        await pilot._post_mouse_events([MouseMove], TextView, offset=(greets.x + origin[0], origin[1]), button=1)
        await pilot.mouse_up(TextView, offset=(greets.x + origin[0], origin[1]))
        await settle(pilot)
        assert (app.selection.start, app.selection.stop) == (1, 6)
        assert app.query_one(TextView).span == (1, 6)


@sync
async def test_a_selection_with_no_unit_on_says_so():
    trace = planted_trace()
    app = GatescopeApp(trace, start=f"{H}:0")
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("v", "shift+right", "shift+right", "shift+right", "shift+right")  # "the boy near the car"
        await settle(pilot)
        assert app.selection.units == () and app.result.starts == []
        status = str(app.query_one(MatchPanel).query_one("#match-status").render())
        assert status.startswith("no unit of rnn.l0.fwd.h is above 0.3 over all of rows 0:5")


@pytest.mark.slow  # 1 s of CPU; the threshold keys test covers the selection itself
@sync
async def test_the_selection_plot_draws_the_units_against_the_threshold():
    trace = planted_trace()
    app = GatescopeApp(trace, start=f"{H}:0")
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("right", "right", "v", "shift+right")
        await settle(pilot)
        plot = app.query_one(SelectionPlot)
        codes, rule = plot.dots()
        assert plot.units == PLANTED and plot.axis(np.zeros(1)) == (-1.0, 1.0)
        assert rule == int(round((1 - (0.3 + 1) / 2) * 19)) // 4  # the line holding 0.3 on -1..1
        edges = plot.columns.edges(plot.start, plot.stop)
        values = trace[H].numpy()[plot.start:plot.stop][:, list(PLANTED)]  # (W, 2)
        for t in range(len(values)):  # each token's dots lie on the lines holding its units' values
            lines = {int(round((1 - (v + 1) / 2) * 19)) // 4 for v in values[t]}
            drawn = {y for y in range(codes.shape[0]) if codes[y, edges[t]:edges[t + 1]].any()}
            assert lines <= drawn


@sync
async def test_meta_tracks_draw_the_feature_values():
    trace = planted_trace()
    app = GatescopeApp(trace, start=f"{H}:0")
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        tracks = app.query_one(MetaTracks)
        assert [t.name for t in tracks.tracks] == ["in_pp", "depth"]
        assert [t.shape for t in tracks.tracks] == ["binary", "categorical"]
        start, stop = app.query_one(Heatmap).visible_rows()
        assert (tracks.start, tracks.stop) == (start, stop)
        in_pp = trace.features["in_pp"].numpy()[start:stop]
        assert [g for g, _ in tracks.cells(tracks.tracks[0])] == ["█" if v == 1 else "·" for v in in_pp]
        depth = trace.features["depth"].numpy()[start:stop]
        colours = [s.bgcolor for _, s in tracks.cells(tracks.tracks[1])]
        for value in (0, 1, 2):  # one colour per value, different values different colours
            assert len({c for c, v in zip(colours, depth) if v == value}) == 1
        assert len(set(colours)) == 3
        legend = "".join(s.text for s in tracks.render_line(2))
        assert "in_pp" in legend and "depth" in legend and " 0 " in legend


def test_a_selection_keeps_hand_edits_across_thresholds():
    chosen = SpanSelection(H, 2, 4, 0.3, (2, 5))
    assert chosen.toggled(3).units == (2, 3, 5) and chosen.toggled(5).units == (2,)
    later = chosen.toggled(3).toggled(5).at_threshold(0.2)
    assert later.found is None and later.threshold == 0.2
    assert math.isclose(later.threshold, 0.2) and later.added == {3} and later.removed == {5}
    assert chosen.only(7).units == (7,) and chosen.only(2).units == (2,)


def test_the_vocabulary_class_is_a_track_when_the_metadata_has_a_lexicon():
    from gatescope.tui.arrays import trace_file
    from gatescope.tui.features import VOCAB_CLASS, tracks

    trace = planted_trace()
    lexicon = {"noun": ["boy", "boys", "car", "cars", "dog"], "verb": ["greets", "greet"]}
    meta = {**trace.meta, "lexicon": lexicon}
    trace = Trace(dict(trace.items()), trace.offsets, token_ids=trace.token_ids, meta=meta)
    (track,) = [t for t in tracks(trace_file(trace)) if t.name == VOCAB_CLASS]
    assert track.shape == "categorical" and track.labels == ("noun", "verb")
    tokens = trace.tokens()
    expected = [0 if w in lexicon["noun"] else 1 if w in lexicon["verb"] else -1 for w in tokens]
    assert track.category(track.values).tolist() == expected


def test_a_match_in_a_narrow_column_keeps_its_span_and_cuts_the_context_before():
    """'the boys near the car greet', span 'car greet': in 14 cells the three tokens before it gave way to the
    span; now the context before is cut from its start, so the matched tokens stay in view."""
    from gatescope.tui.arrays import trace_file
    from gatescope.tui.source import TraceSource
    from tests.tui.test_app import word_trace

    trace = word_trace()
    panel = MatchPanel(TraceSource(trace_file(trace)))
    start = trace.sequence(3).start + 4  # 'car greet' of sequence 3
    assert panel.in_context(start, start + 2).plain == "boys near the car greet <eos>"
    assert panel.in_context(start, start + 2, 14).plain == "…he car greet…"  # 14 cells, the span whole
    assert panel.in_context(start, start + 2, 5).plain == "car …"  # the span alone is too long: cut at its end
