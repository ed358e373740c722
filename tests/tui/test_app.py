"""The trace browser driven headless with Textual's Pilot: navigation, kinds, search, ranked units, export.

Every value the browser shows is checked against the trace tensors themselves (or a brute-force
reference), never against the browser's own helpers.
"""
from __future__ import annotations

import asyncio
import functools
import math
import os

import numpy as np
import pytest
import torch

from gatescope.traces.trace import Trace
from gatescope.tui.app import GatescopeApp
from gatescope.tui.colors import SEQUENTIAL
from gatescope.tui.heatmap import Heatmap
from gatescope.tui.help_screen import HelpScreen
from gatescope.tui.prompt import Prompt
from gatescope.tui.ranked_units import RankedUnits
from gatescope.tui.sequence_list import SequenceList
from gatescope.tui.text_view import TextView
from gatescope.tui.unit_detail import UnitDetail

VOCAB = ["<unk>", "<eos>", "the", "boy", "boys", "near", "car", "cars", "greets", "greet", "dog"]
SENTENCES = [
    "the boy near the car greets",
    "the boys near the cars greet",
    "the dog greets",
    "the boys near the car greet",
    "the boy greets the dog",
]
LSTM_KINDS = "ifgoch"
SIZE = (120, 36)
FIRST = "rnn.l0.fwd.i:0"  # where the tests of navigation start (the default opens on c, at the best unit)


def word_trace(hidden: int = 9, layers: int = 2, directions=("fwd",), seed: int = 0, nan: bool = False,
               vocab: bool = True, sentences=SENTENCES) -> Trace:
    """A small word-level LSTM trace with known values, a `number` feature (1 plural subject, NaN on <eos>)."""
    g = torch.Generator().manual_seed(seed)
    ids, offsets, number = [], [0], []
    for sentence in sentences:
        words = sentence.split() + ["<eos>"]
        ids += [VOCAB.index(w) for w in words]
        offsets.append(len(ids))
        plural = float(words[1] == "boys")  # the subject's number
        number += [plural] * (len(words) - 1) + [math.nan]
    n = len(ids)
    tensors = {}
    for layer in range(layers):
        for direction in directions:
            for kind in LSTM_KINDS:
                x = torch.randn(n, hidden, generator=g)
                value = torch.sigmoid(x) if kind in "ifo" else 2 * x if kind == "c" else torch.tanh(x)
                if nan:
                    value[1, 0] = math.nan
                tensors[f"rnn.l{layer}.{direction}.{kind}"] = value
    meta = {"vocab": VOCAB, "tokenizer": "word"} if vocab else {}
    return Trace(tensors, offsets, token_ids=torch.tensor(ids), features={"number": number}, meta=meta)


def segment_at(strip, x: int):
    """The segment of a rendered line that starts at cell ``x``."""
    cell = 0
    for segment in strip:
        if cell == x:
            return segment
        cell += segment.cell_length
    raise AssertionError(f"no segment starts at cell {x}")


def values(trace: Trace, name: str, row: int, unit: int) -> float:
    return float(trace[name][row, unit])


def sync(scenario):
    """Run an async Pilot scenario as a plain test (no async pytest plugin needed)."""

    @functools.wraps(scenario)
    def test(*args, **kwargs):
        asyncio.run(scenario(*args, **kwargs))

    return test


async def settle(pilot) -> None:
    """Wait until every worker is done (a worker replaced by a newer one of its group counts as done)."""
    from textual.worker import WorkerCancelled

    while True:
        try:
            await pilot.app.workers.wait_for_complete()
            break
        except WorkerCancelled:
            continue
    await pilot.pause()


@pytest.fixture
def trace() -> Trace:
    return word_trace()


@sync
async def test_arrows_move_the_cursor_and_every_view_follows(trace):
    app = GatescopeApp(trace, start=FIRST)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("right", "right", "right", "down", "down")
        await settle(pilot)
        heatmap = app.query_one(Heatmap)
        assert (heatmap.unit, heatmap.row) == (2, 3)
        detail = app.query_one(UnitDetail)
        assert detail.values_at_cursor() == {k: values(trace, f"rnn.l0.fwd.{k}", 3, 2) for k in LSTM_KINDS}
        status = str(app.query_one("#status").render())
        assert "rnn.l0.fwd.i:2" in status and f"{values(trace, 'rnn.l0.fwd.i', 3, 2):+.4f}" in status
        assert "token 'the'" in status  # row 3 is "the" in "the boy near the car"
        await pilot.press("left", "up", "up", "up")  # the unit stops at 0
        assert (heatmap.unit, heatmap.row) == (0, 2)
        await pilot.press("end")
        assert heatmap.row == trace.offsets[1] - 1
        await pilot.press("home")
        assert heatmap.row == 0
        await pilot.press("pagedown")
        assert heatmap.row == min(trace.num_tokens - 1, heatmap.data_width // heatmap.cell_width)
        await pilot.press("plus", "plus")
        await settle(pilot)
        assert heatmap.cell_width == 5 and app.query_one(UnitDetail).columns == heatmap.columns
        assert heatmap.row * 5 in range(heatmap.scroll_offset.x, heatmap.scroll_offset.x + heatmap.data_width)


@sync
async def test_single_keys_switch_kind_layer_direction_and_module():
    trace = word_trace(layers=2, directions=("fwd", "bwd"))
    other = {f"enc.{k.split('.', 1)[1]}": v for k, v in trace.items() if k.startswith("rnn.l0.fwd")}
    both = Trace({**dict(trace.items()), **other}, trace.offsets, token_ids=trace.token_ids, meta=trace.meta)
    app = GatescopeApp(both, start=FIRST)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        assert app.name_shown == "rnn.l0.fwd.i"  # modules in the trace's order
        await pilot.press("M")
        assert app.name_shown == "enc.l0.fwd.i"
        await pilot.press("M")
        assert app.name_shown == "rnn.l0.fwd.i"
        await pilot.press("g")
        assert app.name_shown == "rnn.l0.fwd.g" and app.query_one(Heatmap).quantity == "rnn.l0.fwd.g"
        await pilot.press("k")
        assert app.name_shown == "rnn.l0.fwd.o"
        await pilot.press("L")
        assert app.name_shown == "rnn.l1.fwd.o"
        await pilot.press("D")
        assert app.name_shown == "rnn.l1.bwd.o"
        await pilot.press("z")  # not an LSTM kind: a warning, nothing changes
        assert app.name_shown == "rnn.l1.bwd.o"
        await pilot.press("c")
        await settle(pilot)
        # the text view colours the cursor's sequence by the cursor unit of the new quantity
        assert app.query_one(TextView).quantity == "rnn.l1.bwd.c"


@sync
async def test_search_goes_to_the_next_occurrence(trace):
    app = GatescopeApp(trace, start=FIRST)
    tokens = trace.tokens()
    expected = [i for i in range(len(tokens) - 1) if tokens[i] == "the" and tokens[i + 1] == "boys"]
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("slash")
        assert isinstance(app.screen, Prompt)
        await pilot.press(*"the boys", "enter")
        await settle(pilot)
        assert app.query_one(Heatmap).row == expected[0]
        await pilot.press("N")
        assert app.query_one(Heatmap).row == expected[1]
        await pilot.press("N")  # wraps around
        assert app.query_one(Heatmap).row == expected[0]
        await pilot.press("slash", *"zebra", "enter")  # not in the vocabulary: the cursor stays
        await settle(pilot)
        assert app.query_one(Heatmap).row == expected[0]


@pytest.mark.slow  # several seconds; CI runs it with the slow tests
@sync
async def test_go_to_unit_and_sequence(trace):
    app = GatescopeApp(trace, start=FIRST)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("u", "7", "enter")
        assert app.query_one(Heatmap).unit == 7
        await pilot.press("u", *"rnn.l1.fwd.h:3", "enter")
        assert (app.name_shown, app.query_one(Heatmap).unit) == ("rnn.l1.fwd.h", 3)
        await pilot.press("u", *"99", "enter")  # out of range: nothing changes
        assert app.query_one(Heatmap).unit == 3
        await pilot.press("u", *"rnn.l0.fwd.c:99", "enter")  # out of range in another quantity: nothing changes
        assert (app.name_shown, app.query_one(Heatmap).unit) == ("rnn.l1.fwd.h", 3)
        await pilot.press("number_sign", "3", "enter")
        await settle(pilot)
        assert app.query_one(Heatmap).row == int(trace.offsets[3])
        assert app.query_one(SequenceList).highlighted == 3


@sync
async def test_sequence_list_jumps_with_enter_and_click(trace):
    app = GatescopeApp(trace, start=FIRST)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        sequences = app.query_one(SequenceList)
        sequences.focus()
        await pilot.press("down", "down", "enter")
        await settle(pilot)
        assert app.query_one(Heatmap).row == int(trace.offsets[2])
        await pilot.click(SequenceList, offset=(2, 4))
        await settle(pilot)
        assert app.query_one(Heatmap).row == int(trace.offsets[4])


@sync
async def test_mouse_selects_heatmap_cells_and_text_tokens(trace):
    app = GatescopeApp(trace, start=FIRST)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        heatmap = app.query_one(Heatmap)
        x = heatmap.gutter_width + 4 * heatmap.cell_width  # column of row 4
        await pilot.click(Heatmap, offset=(x, 3))  # screen line 3 = units 4 (upper) and 5 (lower)
        assert (heatmap.unit, heatmap.row) == (4, 4)
        await pilot.click(Heatmap, offset=(x, 3))  # again: the lower unit
        assert (heatmap.unit, heatmap.row) == (5, 4)
        await settle(pilot)
        text = app.query_one(TextView)
        placed = next(p for line in text.lines() for p in line if p.row == 2)
        line = next(i for i, l in enumerate(text.lines()) if placed in l)
        await pilot.click(TextView, offset=(placed.x + text.gutter.left, line + text.gutter.top))
        assert heatmap.row == 2


@sync
async def test_text_view_colours_each_token_by_the_unit(trace):
    app = GatescopeApp(trace, start=FIRST)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("down", "o")
        await settle(pilot)
        text = app.query_one(TextView)
        placed = [p for line in text.lines() for p in line if p.row >= 0]
        assert [p.text for p in placed] == SENTENCES[0].split() + ["<eos>"]
        for p in placed:
            value = values(trace, "rnn.l0.fwd.o", p.row, 1)
            level = min(int(value * 16), 15)  # viridis, 16 levels over 0..1
            strip = text.render_line(next(i for i, l in enumerate(text.lines()) if p in l))
            segment = segment_at(strip, p.x)
            assert segment.text == p.text
            assert segment.style.bgcolor.triplet.hex == SEQUENTIAL[level]


@sync
async def test_ranked_units_follow_the_feature_and_select_a_unit(trace):
    app = GatescopeApp(trace, start=FIRST)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        ranked = app.query_one(RankedUnits)
        assert ranked.criterion == "number"
        x = trace["rnn.l0.fwd.i"].numpy()
        y = trace.features["number"].numpy()
        keep = np.isfinite(y)
        r = np.array([np.corrcoef(x[keep, u], y[keep])[0, 1] for u in range(x.shape[1])])
        np.testing.assert_allclose(ranked.scores, r, rtol=1e-9, atol=1e-12)
        best = int(np.argmax(np.abs(r)))
        assert ranked.order[0] == best
        table = ranked.query_one("#rank-table")
        table.focus()
        await pilot.press("down", "enter")  # the second best
        await settle(pilot)
        assert app.query_one(Heatmap).unit == ranked.order[1]
        app.action_rank("saturation")
        await settle(pilot)
        sat = ((x < 0.1) | (x > 0.9)).mean(0)
        np.testing.assert_allclose(ranked.scores, sat)
        assert ranked.order[0] == int(np.argmax(sat))


@sync
async def test_export_svg_and_png(trace, tmp_path):
    app = GatescopeApp(trace, export_dir=tmp_path, start=FIRST)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("e")
        svgs = list(tmp_path.glob("*.svg"))
        assert [p.name for p in svgs] == ["gatescope-rnn.l0.fwd.i-u0-r0.svg"]
        svg = svgs[0].read_text()
        assert svg.startswith("<svg") and "rnn.l0.fwd.i:0" in svg.replace("&#160;", " ")
        # offline, the text falls back to a local monospace font; the web font's own rule is kept
        assert "Consolas, \"Courier New\", monospace;" in svg and 'font-family: "Fira Code";' in svg
        await pilot.press("E")
        await settle(pilot)
        pngs = list(tmp_path.glob("*.png"))
        assert len(pngs) == 1 and pngs[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert not list(tmp_path.glob(".*.tmp"))  # written atomically
        umask = os.umask(0)
        os.umask(umask)
        assert {p.stat().st_mode & 0o777 for p in svgs + pngs} == {0o666 & ~umask}


@pytest.mark.slow  # several seconds; CI runs it with the slow tests
@sync
async def test_help_screen_and_command_palette(trace):
    app = GatescopeApp(trace, start=FIRST)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)
        await pilot.press("escape")
        assert not isinstance(app.screen, HelpScreen)
        await pilot.press("ctrl+p")
        await pilot.press(*"Show h: hidden", "enter")
        await settle(pilot)
        assert app.name_shown == "rnn.l0.fwd.h"


@sync
async def test_one_token_trace_nan_values_and_no_vocabulary():
    one = Trace({"gru.l0.fwd.z": torch.tensor([[math.nan, 0.5, 1.0]])}, [0, 1], token_ids=torch.tensor([4]))
    app = GatescopeApp(one)
    async with app.run_test(size=(60, 16)) as pilot:
        await settle(pilot)
        await pilot.press("right", "down", "pagedown", "end", "u", "2", "enter")
        heatmap = app.query_one(Heatmap)
        assert (heatmap.unit, heatmap.row) == (2, 0)
        ruler = "".join(s.text for s in heatmap.render_line(0))
        assert "4" in ruler  # no vocabulary: the token id
        detail = app.query_one(UnitDetail)
        await pilot.press("up", "up")
        assert math.isnan(detail.values_at_cursor()["z"])
        assert "nan" in "".join(s.text for s in detail.render_line(0))


@pytest.mark.slow  # several seconds of resizing; CI runs it with the slow tests (the narrow layout
# is in the default run as a snapshot)
@sync
async def test_tiny_terminal_and_resizing(trace):
    app = GatescopeApp(trace, start=FIRST)
    async with app.run_test(size=(24, 8)) as pilot:
        await settle(pilot)
        await pilot.press("right", "down", "pagedown", "question_mark", "escape")
        await pilot.resize_terminal(10, 4)
        await pilot.press("left", "up")
        await pilot.resize_terminal(160, 50)
        await settle(pilot)
        assert app.query_one("#side").display  # wide again: the side panel is back
        await pilot.resize_terminal(60, 20)
        await settle(pilot)
        assert app.screen.has_class("-narrow")


@sync
async def test_large_quantities_rank_only_when_asked(trace, monkeypatch):
    from gatescope.tui import ranked_units

    monkeypatch.setattr(ranked_units, "AUTO_LIMIT", 0)  # every quantity counts as large
    app = GatescopeApp(trace, start=FIRST)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        ranked = app.query_one(RankedUnits)
        assert ranked.scores is None and ranked.query_one("#rank-now").display
        assert "press rank" in str(ranked.query_one("#rank-status").render())
        await pilot.click("#rank-now")
        await settle(pilot)
        assert ranked.scores is not None and not ranked.query_one("#rank-now").display
        assert ranked.order[0] == int(np.nanargmax(np.abs(ranked.scores)))
