"""The browser's explain panel (x): the cursor's unit at its token, term by term, and Enter on an upstream unit."""
from __future__ import annotations

from textual.widgets import OptionList, Static

from gatescope.cli import main
from gatescope.tui.app import GatescopeApp
from gatescope.tui.explain_panel import ExplainScreen
from tests.checkpoint_fixtures import language_model, word_metadata
from tests.tui.test_app import SIZE, settle, sync


def _traced(tmp_path):
    _, model = language_model(tmp_path, word_metadata())
    trace = tmp_path / "t.safetensors"
    main(["trace", str(model), "--text", "the boys near the car greet", "-o", str(trace)])
    return model, trace


@sync
async def test_the_panel_draws_the_cursor_unit_and_enter_moves_to_an_upstream_unit(tmp_path):
    model, trace = _traced(tmp_path)
    app = GatescopeApp(trace, start="rnn.l0.fwd.c:3")  # the model from the trace's metadata
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        app.heatmap.move_to(3, 4)
        await pilot.press("x")
        await settle(pilot)
        screen = app.screen
        assert isinstance(screen, ExplainScreen)
        body = str(screen.query_one("#explain-body", Static).render())
        assert "rnn.l0.fwd unit 3 (LSTM) at step 4 'car'" in body and "──[+]──" in body
        options = screen.query_one("#explain-upstream", OptionList)
        assert options.option_count == len(screen.choices) > 0
        unit, row = screen.choices[0]
        await pilot.press("enter")
        await settle(pilot)
        assert app.name_shown == "rnn.l0.fwd.h" and app.heatmap.row == row == 3
        assert f"{app.name_shown}:{app.heatmap.unit}" == unit


@sync
async def test_without_a_model_the_panel_says_how_to_give_one(tmp_path):
    _, trace = _traced(tmp_path)
    app = GatescopeApp(trace, model=tmp_path / "missing.safetensors")
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("x")
        await settle(pilot)
        assert "cannot explain" in str(app.screen.query_one("#explain-body", Static).render())
        await pilot.press("escape")
        assert not isinstance(app.screen, ExplainScreen)


@sync
async def test_shift_w_colours_the_text_by_each_tokens_contribution_to_the_cursor_unit(tmp_path):
    import gatescope
    from gatescope.analysis.decomposition import decompose
    from gatescope.tui.colors import contribution_styles
    from gatescope.tui.text_view import TextView

    model, trace = _traced(tmp_path)
    app = GatescopeApp(trace, start="rnn.l0.fwd.c:3")
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        app.heatmap.move_to(3, 4)
        await pilot.press("W")
        await settle(pilot)
        view = app.query_one(TextView)
        loaded = gatescope.load(model)
        ids = loaded.encode("the boys near the car greet")
        import torch
        expected = decompose(loaded, torch.tensor(ids), "gcd").quantities["rnn.l0.fwd.c"][1:, 4, 3].tolist()
        assert view.contributions == dict(enumerate(contribution_styles(expected)))
        await pilot.press("W")
        await settle(pilot)
        assert view.contributions is None
