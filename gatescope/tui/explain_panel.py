"""The explain panel: the unit and token at the cursor, term by term, when the model is at hand (x).

The model is the checkpoint given with ``browse --model`` or the one the trace's metadata names (``model``,
written by ``gatescope trace``). It is loaded once, in a worker thread (torch is imported only then), and run on
the cursor's sequence (the trace's token ids) by gatescope.analysis.explain. The panel shows the cell drawn in
text (gatescope.display.cell_text) and lists each gate's upstream units; Enter on one closes the panel and moves
the cursor to that unit at the step it comes from.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Label, OptionList, Static
from textual.widgets.option_list import Option

from gatescope.display.cell_text import short
from gatescope.errors import GatescopeError


class ExplainModel:
    """The checkpoint behind a trace, loaded on first use and kept (one per browser)."""

    def __init__(self, path: str | Path | None) -> None:
        self.path = None if path is None else Path(path)
        self._model = None

    def _loaded(self, token_ids: Any, what: str):
        from gatescope.checkpoints.loader import load

        if self.path is None:
            raise GatescopeError(f"{what} needs the model: browse TRACE --model MODEL (the trace names none)")
        if token_ids is None:
            raise GatescopeError(f"the trace holds no token ids: {what} needs the model's input")
        if self._model is None:
            self._model = load(self.path)
        return self._model

    def explain(self, token_ids: Any, unit: str, at: int, top: int = 5):
        """The `StepExplanation` of ``unit`` at step ``at`` of the sequence ``token_ids`` (numpy [T])."""
        import torch

        from gatescope.analysis.explain import explain

        model = self._loaded(token_ids, "explain")
        ids = torch.as_tensor(token_ids, dtype=torch.long)[None]  # (1, T)
        with torch.no_grad():
            return explain(model, ids, unit, at, top=top)

    def contributions(self, token_ids: Any, unit: str, at: int) -> list[float]:
        """Each token's contribution to ``unit`` ("name:index") at step ``at``, by GCD (one pass a token, so
        any length; gatescope.analysis.decomposition)."""
        import torch

        from gatescope.analysis.decomposition import decompose
        from gatescope.names import parse_unit

        model = self._loaded(token_ids, "colouring by contribution")
        name, index = parse_unit(unit)
        result = decompose(model, torch.as_tensor(token_ids, dtype=torch.long), "gcd")
        if name not in result.quantities:
            raise GatescopeError(f"no decomposition of {name}: it has {', '.join(result.quantities)}")
        return result.quantities[name][1:, at, index].tolist()  # the tokens' parts, constants left out


class ExplainScreen(ModalScreen[tuple[str, int] | None]):
    """The cell at the cursor; dismissed with (upstream unit, its trace row) when one is chosen."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "dismiss(None)", "close"),
                                             Binding("x", "dismiss(None)", "close", show=False)]

    def __init__(self, model: ExplainModel, token_ids: Any, unit: str, at: int, first_row: int) -> None:
        super().__init__()
        self.model, self.token_ids, self.unit, self.at, self.first_row = model, token_ids, unit, at, first_row
        self.choices: list[tuple[str, int]] = []

    def compose(self) -> ComposeResult:
        with Vertical(id="explain"):
            yield Label(f"explain {self.unit} at step {self.at}", classes="title")
            with VerticalScroll(id="explain-text"):
                yield Static("computing…", id="explain-body", markup=False)  # the drawing has [brackets]
            yield Label("upstream units (Enter: go there)", classes="title")
            yield OptionList(id="explain-upstream")

    def on_mount(self) -> None:
        self._compute()

    @work(thread=True, exclusive=True)
    def _compute(self) -> None:
        try:
            result = self.model.explain(self.token_ids, self.unit, self.at)
        except GatescopeError as exc:
            self.app.call_from_thread(self._failed, str(exc))
            return
        self.app.call_from_thread(self._show, result)

    def _failed(self, message: str) -> None:
        self.query_one("#explain-body", Static).update(f"cannot explain: {message}")

    def _show(self, result: Any) -> None:
        self.query_one("#explain-body", Static).update(Text(result.render(), no_wrap=True))  # keeps the indents
        options = self.query_one("#explain-upstream", OptionList)
        for kind, gate in result.gates.items():
            for up in gate.upstream:
                self.choices.append((up.unit, self.first_row + up.at))
                options.add_option(Option(f"{kind}  {short(up.unit, result):<12} {up.contribution:+.3f}  "
                                          f"(step {up.at})"))
        if self.choices:
            options.highlighted = 0
        options.focus()

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        self.dismiss(self.choices[event.option_index])
