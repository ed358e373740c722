"""The text view: the cursor's sequence as running text, each token on the colour of one unit.

The display of Karpathy, Johnson & Fei-Fei 2015 ("Visualizing and understanding recurrent
networks", Fig. 2): the characters or words of the input, each with its background set
by the selected unit's value at that step, wrapping like text. For long sequences only
the stretch around the cursor that fits the widget is shown; clicking a token moves the
cursor to it.
"""
from __future__ import annotations

from rich.style import Style
from rich.text import Text
from textual.widget import Widget

from gatescope.tui.messages import RowChosen
from gatescope.tui.source import TraceSource

CURSOR = Style(underline=True, bold=True, reverse=True)


class TextView(Widget):
    """The tokens of the cursor's sequence, coloured by one unit of one quantity."""

    def __init__(self, source: TraceSource, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.source = source
        self.quantity = ""
        self.unit = 0
        self.row = 0

    def show(self, name: str, unit: int, row: int) -> None:
        self.quantity, self.unit, self.row = name, unit, row
        self.refresh()

    def window(self) -> tuple[int, int]:
        """The rows shown: the cursor's sequence, cut to about what fits around the cursor."""
        start, stop = self.source.sequence_rows(self.source.sequence_of(self.row))
        per_token = 2 if self.source.tokenizer == "char" else 7  # cells, a rough guess for words
        budget = max(self.size.width * max(self.size.height, 1) // per_token, 8)
        before = budget * 2 // 5
        first = max(start, self.row - before)
        return first, min(stop, first + budget)

    def render(self) -> Text:
        if not self.quantity:
            return Text("")
        first, last = self.window()
        tokens = self.source.tokens(first, last)
        values = self.source.window(self.quantity, first, last)[:, self.unit]  # (W,)
        scale = self.source.scales[self.quantity.rsplit(".", 1)[1]]
        levels = scale.levels(values)
        char = self.source.tokenizer == "char"
        text = Text(no_wrap=False, overflow="fold")
        sequence_start, _ = self.source.sequence_rows(self.source.sequence_of(self.row))
        if first > sequence_start:
            text.append("… ")
        for i, token in enumerate(tokens):
            row = first + i
            style = scale.text_styles[int(levels[i])] + Style(meta={"@click": f"pick({row})"})
            if row == self.row:
                style += CURSOR
            if char and token == "\n":
                text.append("↵", style)
                text.append("\n")
                continue
            text.append(token, style)
            if not char:
                text.append(" ")
        return text

    def action_pick(self, row: int) -> None:
        self.post_message(RowChosen(row))
