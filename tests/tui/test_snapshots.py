"""Snapshots of the browser's main screens (pytest-textual-snapshot; Textual pinned in pyproject.toml).

Update after an intended change with `pytest tests/tui/test_snapshots.py --snapshot-update` and
look at the SVGs in tests/tui/__snapshots__/ before committing them.
"""
from __future__ import annotations

import pytest
import torch
from tests.tui.test_app import SIZE, settle, word_trace
from tests.tui.test_match import planted_trace

from gatescope.traces.trace import Trace
from gatescope.tui.app import GatescopeApp


async def settled(pilot) -> None:
    await settle(pilot)


def keys_then_settle(*keys: str):
    async def run_before(pilot) -> None:
        await settled(pilot)
        await pilot.press(*keys)
        await settled(pilot)

    return run_before


def test_main_screen(snap_compare):
    app = GatescopeApp(word_trace())
    assert snap_compare(app, terminal_size=SIZE, run_before=keys_then_settle("right", "right", "right", "down"))


def test_cell_state_of_layer_two_ranked_by_saturation(snap_compare):
    app = GatescopeApp(word_trace())

    async def run_before(pilot) -> None:
        await settled(pilot)
        await pilot.press("L", "c", "down", "down", "down")
        pilot.app.action_rank("saturation")
        await pilot.pause()
        await settled(pilot)

    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)


@pytest.mark.slow  # 2 s of CPU; the help screen is also opened by the key-binding tests
def test_help_screen(snap_compare):
    app = GatescopeApp(word_trace())
    assert snap_compare(app, terminal_size=SIZE, run_before=keys_then_settle("question_mark"))


def test_narrow_terminal_hides_the_side_panel(snap_compare):
    app = GatescopeApp(word_trace())
    assert snap_compare(app, terminal_size=(70, 22), run_before=keys_then_settle("pagedown", "g"))


@pytest.mark.slow  # 1 s of CPU; test_app checks NaN values and traces without a vocabulary by value
def test_char_trace_without_vocabulary_and_with_nan(snap_compare):
    """No vocabulary: the ruler and text show token ids; NaN cells are grey."""
    g = torch.Generator().manual_seed(3)
    h = torch.tanh(torch.randn(40, 12, generator=g))
    h[5:9, 2] = float("nan")
    trace = Trace({"gru.l0.fwd.h": h, "gru.l0.fwd.z": torch.sigmoid(torch.randn(40, 12, generator=g))},
                  [0, 25, 40], token_ids=torch.arange(40) % 7)
    assert snap_compare(GatescopeApp(trace), terminal_size=SIZE, run_before=keys_then_settle("down", "down"))


def test_select_and_match_with_meta_tracks(snap_compare):
    """A span selected on h: the units on over it, the plot against the threshold, the matches, the features."""
    app = GatescopeApp(planted_trace(), start="rnn.l0.fwd.h:2")
    assert snap_compare(app, terminal_size=SIZE, run_before=keys_then_settle("right", "right", "v", "shift+right"))


def test_split_view_with_difference(snap_compare):
    """Sequence 0 against sequence 1 ("the boy near the car greets" / "the boys near the cars greet")."""
    app = GatescopeApp(word_trace(), start="rnn.l0.fwd.h:0")
    assert snap_compare(app, terminal_size=SIZE, run_before=keys_then_settle("C", "1", "enter", "d"))
