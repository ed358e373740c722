"""The browser's views and defaults with Pilot: jumps, scrolling margin, cut tokens, short traces, the split
view, opening defaults, rankings from a file, Tab order, and `browse` without a terminal."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from tests.tui.test_app import SIZE, VOCAB, settle, sync, word_trace

from gatescope.cli import main
from gatescope.traces.trace import Trace
from gatescope.tui.app import GatescopeApp
from gatescope.tui.compare import CompareScreen, PairView
from gatescope.tui.heatmap import MARGIN, Heatmap, fit
from gatescope.tui.ranked_units import RankedUnits
from gatescope.tui.sequence_list import SequenceList


def long_trace(sequences: int = 12, length: int = 40) -> Trace:
    """Sequences longer than the screen, so jumps and margins matter."""
    g = torch.Generator().manual_seed(2)
    n = sequences * length
    ids = torch.randint(2, len(VOCAB), (n,), generator=g)
    return Trace({"rnn.l0.fwd.h": torch.tanh(torch.randn(n, 6, generator=g))}, torch.arange(0, n + 1, length),
                 token_ids=ids, meta={"vocab": VOCAB, "tokenizer": "word"})


@pytest.mark.slow  # several seconds; CI runs it with the slow tests
@sync
async def test_a_jump_puts_the_sequence_first_token_at_the_left_and_moves_keep_a_margin():
    trace = long_trace()
    app = GatescopeApp(trace)
    async with app.run_test(size=(60, 20)) as pilot:  # narrow: a few presses reach the edges
        await settle(pilot)
        await pilot.press("number_sign", "5", "enter")
        await settle(pilot)
        heatmap = app.query_one(Heatmap)
        first = int(trace.offsets[5])
        assert heatmap.row == first and heatmap.visible_rows()[0] == first  # not at the right edge
        margin = min(MARGIN, heatmap.data_width // heatmap.cell_width // 4)
        assert margin > 0
        for _ in range(heatmap.data_width // heatmap.cell_width + 4):
            await pilot.press("right")
            right = heatmap.scroll_offset.x + heatmap.data_width  # the first cell past the view
            assert (heatmap.row + margin + 1) * heatmap.cell_width <= right  # context after the cursor stays in view
        assert heatmap.visible_rows()[0] > first  # it did scroll
        for _ in range(heatmap.data_width // heatmap.cell_width):
            await pilot.press("left")
            assert (heatmap.row - margin) * heatmap.cell_width >= heatmap.scroll_offset.x


def test_a_cut_token_keeps_its_end():
    assert fit("greets", 3) == "g…s" and fit("greets", 5) == "gr…ts" and fit("greet", 5) == "greet"
    assert fit("the", 5) == "the  " and fit("abc", 2) == "ab"


@sync
async def test_columns_widen_to_the_tokens_with_a_key():
    app = GatescopeApp(long_trace(sequences=40))
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        heatmap = app.query_one(Heatmap)
        assert heatmap.cell_width == 3
        ruler = "".join(s.text for s in heatmap.render_line(0))
        assert "g…s" in ruler or "g…t" in ruler  # greets / greet cut in the middle
        await pilot.press("w")
        await settle(pilot)
        start, stop = heatmap.visible_rows()
        assert heatmap.cell_width == max(len(t) for t in app.source.tokens(0, 40)) + 1 == 7  # and a gap
        ruler = "".join(s.text for s in heatmap.render_line(0))
        assert "greets " in ruler or "greet  " in ruler
        await pilot.press("w")
        assert heatmap.cell_width == 3


@sync
async def test_a_short_trace_is_stretched_over_the_screen():
    trace = word_trace(sentences=["the boy greets"])
    app = GatescopeApp(trace)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        heatmap = app.query_one(Heatmap)
        assert heatmap.cell_width == heatmap.data_width // trace.num_tokens > 3
        assert heatmap.columns.total == heatmap.data_width  # spread over all of it: no blank band on the right
        assert heatmap.size.height == heatmap.lines + 1  # only as tall as its units: the text view gets the rest


@sync
async def test_the_ruler_keeps_tokens_apart_and_uses_the_whole_width():
    """31 words in a 200-column terminal: every column is spread to 4 or 5 cells, each label ends in a gap."""
    words = ("the boy near the car greets the boys near the cars greet the dog near the boy greets "
             "the boys near the car greet the dog near the cars greets")
    trace = word_trace(sentences=[words])
    assert trace.num_tokens == 31
    app = GatescopeApp(trace)
    async with app.run_test(size=(200, 50)) as pilot:
        await settle(pilot)
        heatmap = app.query_one(Heatmap)
        assert heatmap.visible_rows() == (0, 31) and heatmap.columns.total == heatmap.data_width
        ruler = "".join(s.text for s in heatmap.render_line(0))[heatmap.gutter_width:]
        assert len(ruler.rstrip()) > heatmap.data_width - 2  # the last token ends at the right edge
        assert "greetsthe" not in ruler and "…s the " in ruler  # a blank cell between neighbours
        assert set(heatmap.columns.widths(0, 31).tolist()) == {4, 5}
        assert len(ruler.split()) == 31  # each label apart from the next
        await pilot.press("w")  # widen: the longest token and a gap, scrolling
        await settle(pilot)
        ruler = "".join(s.text for s in heatmap.render_line(0))
        assert heatmap.cell_width == len("greets") + 1 and "greets the" in ruler


@sync
async def test_opening_defaults_show_the_cell_state_at_the_unit_tracking_a_feature_best():
    trace = word_trace()
    best = 6
    c = trace["rnn.l0.fwd.c"].clone()
    second = torch.tensor([float(i % 2) for i in range(trace.num_tokens)])
    c[:, best] = second * 3 - 1.5 + 0.01 * c[:, best]  # unit 6 of c tracks "second" almost exactly
    tensors = dict(trace.items()) | {"rnn.l0.fwd.c": c}
    with_features = Trace(tensors, trace.offsets, token_ids=trace.token_ids,
                          features={"number": trace.features["number"], "second": second}, meta=trace.meta)
    app = GatescopeApp(with_features)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await settle(pilot)
        assert app.name_shown == "rnn.l0.fwd.c"
        ranked = app.query_one(RankedUnits)
        assert ranked.criterion == "second" and ranked.order[0] == best
        assert app.query_one(Heatmap).unit == best
    gru = Trace({"gru.l0.fwd.z": torch.rand(4, 3), "gru.l0.fwd.h": torch.rand(4, 3)}, [0, 4])
    app = GatescopeApp(gru)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        assert app.name_shown == "gru.l0.fwd.h"


@sync
async def test_a_ranking_file_fills_the_panel_and_names_its_source(tmp_path):
    trace = word_trace()
    ranking = [{"unit": "rnn.l1.fwd.h:7", "score": 0.97, "metric": "auc"},
               {"unit": "rnn.l1.fwd.h:2", "score": 0.91, "metric": "auc"},
               {"unit": "rnn.l0.fwd.c:3", "score": 0.80, "metric": "auc"}]
    path = tmp_path / "units.json"
    path.write_text(json.dumps(ranking))
    app = GatescopeApp(trace, ranking=path)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        assert app.name_shown == "rnn.l1.fwd.h" and app.query_one(Heatmap).unit == 7  # the file's best
        ranked = app.query_one(RankedUnits)
        assert ranked.order == [7, 2] and ranked.scores[7] == 0.97 and np.isnan(ranked.scores[0])
        assert str(ranked.query_one("#rank-status").render()) == "rnn.l1.fwd.h: auc from units.json"
        await pilot.press("c")
        await settle(pilot)
        assert app.name_shown == "rnn.l1.fwd.c"
        assert "units.json ranks no unit of rnn.l1.fwd.c" in str(ranked.query_one("#rank-status").render())


@sync
async def test_a_ranking_file_whose_best_unit_is_far_down_opens_with_it_in_view(tmp_path):
    path = tmp_path / "units.json"
    path.write_text(json.dumps([{"unit": "rnn.l0.fwd.c:150", "score": 0.9, "metric": "auc"}]))
    app = GatescopeApp(word_trace(hidden=160), ranking=path)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        heatmap = app.query_one(Heatmap)
        top, height = heatmap.scroll_offset.y, heatmap.scrollable_content_region.height
        assert heatmap.unit == 150 and top <= 150 // 2 < top + height - 1  # two units a line, under the ruler


@sync
async def test_the_cursor_stays_in_view_when_the_heatmap_grows_shorter():
    """A view made shorter (the match panels opening under it, a smaller terminal) scrolls to keep the
    cursor's unit on screen, as a view made narrower keeps its token."""
    app = GatescopeApp(word_trace(hidden=160), start="rnn.l0.fwd.c:150")
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        heatmap = app.query_one(Heatmap)
        await pilot.resize_terminal(SIZE[0], 14)
        await settle(pilot)
        top = heatmap.scroll_offset.y
        assert heatmap.unit == 150 and top <= 150 // 2 < top + heatmap.data_height, (top, heatmap.data_height)


@pytest.mark.parametrize("content, message", [
    ("{not json", "is not JSON"),
    ("[]", "is not a non-empty JSON list"),
    ('[{"unit": "rnn.l0.fwd.h:3"}]', "entry 0 is not an object with 'unit' and 'score'"),
    ('[{"unit": "rnn.l5.fwd.h:3", "score": 1}]', "is not in this trace (it has no rnn.l5.fwd.h)"),
    ('[{"unit": "rnn.l0.fwd.h:99", "score": 1}]', "is out of range (rnn.l0.fwd.h has 9 units)"),
    ('[{"unit": "rnn.l0.fwd.h:1", "score": "high"}]', "score is not a number"),
])
def test_bad_ranking_files_are_one_line_errors(tmp_path, capsys, content, message):
    word_trace().save(tmp_path / "t.safetensors")
    (tmp_path / "units.json").write_text(content)
    with pytest.raises(SystemExit) as exit_:
        main(["browse", str(tmp_path / "t.safetensors"), "--ranking", str(tmp_path / "units.json")])
    err = capsys.readouterr().err
    assert exit_.value.code == 1 and message in err and err.count("\n") == 1


def test_port_without_web_is_an_error(tmp_path, capsys):
    word_trace().save(tmp_path / "t.safetensors")
    with pytest.raises(SystemExit) as exit_:
        main(["browse", str(tmp_path / "t.safetensors"), "--port", "9000"])
    assert exit_.value.code == 1 and "--port is the port of --web" in capsys.readouterr().err


def test_browse_without_a_terminal_exits_with_one_line(tmp_path):
    word_trace().save(tmp_path / "t.safetensors")
    result = subprocess.run([sys.executable, "-c", "from gatescope.cli import main; main()", "browse",
                             str(tmp_path / "t.safetensors")], stdin=subprocess.DEVNULL, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr == ("gatescope: error: gatescope browse needs a terminal (stdin, stdout and stderr are "
                             "not all one); use --web to open it in a web browser, or `gatescope analyze` for text "
                             "output\n")


def test_browse_with_stderr_redirected_says_so_instead_of_drawing_into_the_file(tmp_path):
    """Textual draws on stderr: with only stderr redirected (``2>log``) the screen would go into the log
    and the terminal stay blank, so that is refused too."""
    word_trace().save(tmp_path / "t.safetensors")
    main, terminal = os.openpty()
    try:
        result = subprocess.run([sys.executable, "-c", "from gatescope.cli import main; main()", "browse",
                                 str(tmp_path / "t.safetensors")], stdin=terminal, stdout=terminal,
                                stderr=subprocess.PIPE, text=True, timeout=60)
    finally:
        os.close(terminal)
        os.close(main)
    assert result.returncode == 1
    assert result.stderr.startswith("gatescope: error: gatescope browse needs a terminal (stdin, stdout and stderr")
    assert result.stderr.count("\n") == 1


@sync
async def test_a_screenshot_of_the_split_view_is_named_for_it_not_for_the_main_view(tmp_path):
    app = GatescopeApp(word_trace(), export_dir=tmp_path, start="rnn.l0.fwd.h:2")
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("e", "C", "1", "enter")
        await settle(pilot)
        await pilot.press("e")
        names = sorted(p.name for p in tmp_path.glob("*.svg"))
        assert names == ["gatescope-rnn.l0.fwd.h-u2-compare-s0-s1.svg", "gatescope-rnn.l0.fwd.h-u2-r0.svg"]
        assert "B = sequence 1" in (tmp_path / names[0]).read_text().replace("&#160;", " ")


@sync
async def test_the_split_view_compares_two_sequences_with_the_same_scale():
    trace = word_trace()
    app = GatescopeApp(trace, start="rnn.l0.fwd.h:0")
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("C", "1", "enter")  # sequence 0 against sequence 1
        await settle(pilot)
        assert isinstance(app.screen, CompareScreen)
        pair = app.screen.query_one(PairView)
        scale = app.source.scale("rnn.l0.fwd.h")
        h = trace["rnn.l0.fwd.h"].numpy()
        a, b = h[trace.sequence(0)], h[trace.sequence(1)]
        np.testing.assert_array_equal(pair.levels(0)[:len(a)], scale.levels(a))
        np.testing.assert_array_equal(pair.levels(1)[:len(b)], scale.levels(b))
        np.testing.assert_allclose(pair.difference_values()[:len(a)], (a - b) / 2, rtol=1e-6)
        assert pair.min_width == len("greets") + 1  # the longest token of the two and a gap: suffixes are not cut
        title = "".join(s.text for s in pair.render_line(0))
        assert "greets" in title and title.index("boy") == pair.gutter_width + pair.columns.x(1)  # a column a position
        await pilot.press("k", "v")  # the main screen's keys do nothing over the split view
        assert app.name_shown == "rnn.l0.fwd.h" and app.selection is None
        await pilot.press("d")
        assert pair.panes == 3 and "A-B" in "".join(s.text for s in pair.render_line(2 * (pair.unit_lines + 1)))
        await pilot.press("escape")
        assert not isinstance(app.screen, CompareScreen)


@pytest.mark.slow  # 2 s of CPU; the split view's other tests and snapshot stay in the default run
@sync
async def test_the_split_view_opens_at_the_top_over_the_whole_width_and_shows_hidden_units():
    trace = word_trace(hidden=60)

    async def split_view(pilot) -> PairView:
        await settle(pilot)
        await pilot.press("C", "1", "enter")  # compare with sequence 1
        await settle(pilot)
        return pilot.app.screen.query_one(PairView)

    app = GatescopeApp(trace, start="rnn.l0.fwd.h:2")
    async with app.run_test(size=(200, 50)) as pilot:
        pair = await split_view(pilot)
        assert pair.first_unit == 0  # unit 2 is on the first page: units 0-1 are not scrolled away
        assert pair.columns.total == pair.size.width - pair.gutter_width  # 7 positions over all 200 columns
        title = "".join(s.text for s in pair.render_line(0))
        assert title.index("<eos>") == pair.gutter_width + pair.columns.x(6) > pair.size.width - 30  # the last
        first, last = ("".join(s.text for s in pair.render_line(y))[:pair.gutter_width] for y in (1, pair.unit_lines))
        assert "↑" not in first and "↓" in last  # more units below, none above
        await pilot.press("pagedown")
        assert "↑" in "".join(s.text for s in pair.render_line(1))[:pair.gutter_width]
        title = str(app.screen.query_one("#compare-title").render())
        assert "B = sequence 1" in title  # the long first line does not wrap over the second
    app = GatescopeApp(trace, start="rnn.l0.fwd.h:51")
    async with app.run_test(size=(200, 50)) as pilot:
        pair = await split_view(pilot)
        assert pair.first_unit <= 50 < pair.first_unit + 2 * pair.unit_lines  # a unit further down is in view


@pytest.mark.slow  # several seconds; CI runs it with the slow tests
@sync
async def test_tab_visits_only_controls_that_are_shown(monkeypatch):
    from gatescope.tui import ranked_units

    monkeypatch.setattr(ranked_units, "AUTO_LIMIT", 0)  # the rank button shows, then hides once pressed
    app = GatescopeApp(word_trace(), start="rnn.l0.fwd.h:0")
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.click("#rank-now")
        await settle(pilot)

        async def cycle(presses: int = 5) -> set[str]:
            seen = set()
            for _ in range(presses):
                await pilot.press("tab")
                focused = app.focused
                assert all(w.display and w.visible for w in focused.ancestors_with_self if hasattr(w, "display"))
                assert focused.region.area > 0
                seen.add(focused.id)
            return seen

        seen = await cycle()
        assert "rank-now" not in seen and "match-table" not in seen and "heatmap" in seen
        app.heatmap.focus()
        await pilot.press("v")
        await settle(pilot)
        assert "match-table" in await cycle()
    monkeypatch.undo()
    app = GatescopeApp(word_trace())  # opening on the best feature's unit: no rank button to land on
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        assert not app.query_one("#rank-now").display
        for _ in range(4):
            await pilot.press("tab")
            assert app.focused.id != "rank-now" and app.focused.region.area > 0


@sync
async def test_a_one_line_text_leaves_the_height_to_the_heatmap_and_cut_lines_end_in_an_ellipsis():
    trace = word_trace(hidden=80, sentences=["the boy near the cars greets the dog near the boys near the car"] * 2)
    app = GatescopeApp(trace)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        heatmap, text = app.query_one(Heatmap), app.query_one("#text")
        assert text.outer_size.height == 2  # its rule and its one line of text, nothing empty under it
        views = app.query_one("#views")
        assert sum(w.outer_size.height for w in views.children if w.display) == views.size.height
        assert heatmap.outer_size.height > views.size.height // 2  # the heatmap has the room instead
        line = "".join(s.text for s in app.query_one(SequenceList).render_line(0))
        assert line.endswith("…") and len(line) == app.query_one(SequenceList).size.width  # cut, and says so


def test_clip_marks_a_cut_with_an_ellipsis_and_pads_a_short_line():
    from rich.segment import Segment

    from gatescope.tui.clip import clip
    assert "".join(s.text for s in clip([Segment("greets the")], 6)) == "greet…"
    assert "".join(s.text for s in clip([Segment("the")], 6)) == "the   " and clip([Segment("abc")], 3).cell_length == 3
