"""Numbers typed into the browser's prompts (go to unit, go to sequence, compare, token search) are read by
gatescope.numbers: a digit Python's str.isdigit() accepts but int() refuses (a superscript ²) is answered in
the status line, never a traceback that ends the browser."""
from __future__ import annotations

import pytest
import torch
from tests.tui.test_app import FIRST, SIZE, settle, sync, word_trace

from gatescope.errors import GatescopeError
from gatescope.traces.trace import Trace
from gatescope.tui.app import GatescopeApp
from gatescope.tui.arrays import trace_file
from gatescope.tui.heatmap import Heatmap
from gatescope.tui.source import TraceSource


@pytest.mark.slow  # four prompts in a running app (3 s of CPU); the parsers' own tests below stay
@sync
async def test_prompts_answer_a_superscript_digit_in_the_status_line():
    app = GatescopeApp(word_trace(), start=FIRST)
    notes = []
    app.notify = lambda message, **kwargs: notes.append(message)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        heatmap = app.query_one(Heatmap)
        for key in ("u", "number_sign", "C", "slash"):  # go to unit, go to sequence, compare, search
            await pilot.press(key, "\u00b2", "enter")
            await settle(pilot)
            assert (heatmap.unit, heatmap.row) == (0, 0) and app.is_running, key
        await pilot.press("u", "minus", "1", "enter")
        assert heatmap.unit == 0
    assert notes[:2] == ["not a unit name: '\u00b2' (expected QUANTITY:INDEX, e.g. rnn.l1.fwd.h:37)",
                         "not a sequence number: '\u00b2' (a whole number, 0..4)"], notes


def test_token_search_without_a_vocabulary_reads_typed_ids_as_numbers():
    trace = Trace({"gru.l0.fwd.z": torch.zeros(3, 2)}, [0, 3], token_ids=torch.tensor([4, 7, 4]))
    source = TraceSource(trace_file(trace))
    assert source.search("7 4", after=-1) == 1
    for query in ("\u00b2", "4 \u00b2", "\u0663"):  # a superscript two, an Arabic-Indic three
        with pytest.raises(GatescopeError, match="search for token ids"):
            source.search(query, after=-1)
