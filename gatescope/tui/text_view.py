"""The text view: the cursor's sequence as running text, each token on the colour of one unit.

The display of Karpathy, Johnson & Fei-Fei 2015 ("Visualizing and understanding recurrent
networks", Fig. 2): the characters or words of the input, each with its background set
by the selected unit's value at that step, wrapping like text. Only the stretch of the
sequence around the cursor that fits is laid out (a sequence may be a whole corpus); the
widget wraps the tokens itself and draws with the Line API, so it also knows which token a
click lands on and moves the cursor there; a mouse drag across tokens selects a span
(`SpanChosen`), which is underlined.
"""
from __future__ import annotations

from typing import NamedTuple

from rich.cells import cell_len
from rich.segment import Segment
from rich.style import Style
from textual import events
from textual.strip import Strip
from textual.widget import Widget

from gatescope.tui.clip import ELLIPSIS, clip
from gatescope.tui.messages import RowChosen, SpanChosen
from gatescope.tui.source import TraceSource

CURSOR = Style(underline=True, bold=True, reverse=True)
SPAN = Style(underline=True, bold=True)
MORE = Style(color="#8a8a8a")


class Placed(NamedTuple):
    """A token laid out on a line: its first cell, its text and its trace row (-1: an ellipsis)."""

    x: int
    text: str
    row: int


class TextView(Widget):
    """The tokens of the cursor's sequence, coloured by one unit of one quantity."""

    def __init__(self, source: TraceSource, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.source = source
        self.quantity = ""
        self.unit = 0
        self.row = 0
        self.span: tuple[int, int] | None = None
        self._anchor: int | None = None  # the token a drag started on
        self._dragged = False
        self._lines: list[list[Placed]] = []
        self._styles: dict[int, Style] = {}
        self._key: tuple | None = None
        self.contributions: dict[int, Style] | None = None  # row -> style, when coloured by a decomposition

    def colour_by(self, contributions: dict[int, Style] | None) -> None:
        """Colour the tokens by these styles (a decomposition's contributions) instead of the unit's values."""
        self.contributions, self._key = contributions, None
        self.refresh()

    def show(self, quantity: str, unit: int, row: int, span: tuple[int, int] | None = None) -> None:
        relayout = not self.quantity or self.source.sequence_of(row) != self.source.sequence_of(self.row)
        self.quantity, self.unit, self.row, self.span = quantity, unit, row, span
        self.refresh(layout=relayout)  # another sequence may need another height

    def get_content_height(self, container, viewport, width: int) -> int:
        """As many lines as the cursor's sequence wraps to (the stylesheet caps it)."""
        start, stop = self.source.sequence_rows(self.source.sequence_of(self.row))
        return len(self._wrap(start, start, stop, max(width, 1), max(container.height, 1))[: container.height])

    def lines(self) -> list[list[Placed]]:
        """The laid-out lines for the current quantity, unit, cursor and size (recomputed when they change)."""
        key = (self.quantity, self.unit, self.row, self.size.width, self.size.height)
        if key != self._key and self.quantity:
            self._key = key
            self._layout()
        return self._lines

    def _layout(self) -> None:
        width, height = max(self.size.width, 1), max(self.size.height, 1)
        start, stop = self.source.sequence_rows(self.source.sequence_of(self.row))
        per_token = 1 if self.source.tokenizer == "char" else 4
        first = max(start, self.row - width * height // (2 * per_token))
        lines = self._wrap(first, start, stop, width, height)
        cursor_line = next((i for i, line in enumerate(lines) for p in line if p.row == self.row), None)
        if cursor_line is None or cursor_line >= height:  # too far down: start closer to the cursor
            back = (height - 1) // 2
            first = max(start, self.row - width * back // (per_token + 1) - 1)
            lines = self._wrap(first, start, stop, width, height)
        self._lines = lines[:height]
        rows = [p.row for line in self._lines for p in line if p.row >= 0]
        if rows:
            scale = self.source.scale(self.quantity)
            levels = scale.levels(self.source.column(self.quantity, rows[0], rows[-1] + 1, self.unit))
            self._styles = {row: scale.text_styles[levels[row - rows[0]]] for row in rows}
            self._styles |= self.contributions or {}

    def _wrap(self, first: int, start: int, stop: int, width: int, height: int) -> list[list[Placed]]:
        """Lay tokens from row ``first`` out in lines of ``width`` cells until ``2 * height`` lines."""
        char = self.source.tokenizer == "char"
        lines: list[list[Placed]] = [[]]
        x = 0
        if first > start:
            lines[0].append(Placed(0, "… ", -1))
            x = 2
        row = first
        batch = max(width * height, 64)
        while row < stop and len(lines) <= 2 * height:
            for token in self.source.tokens(row, min(stop, row + batch)):
                text = token.replace("\n", "↵")
                if not char and cell_len(text) > width:  # a word wider than the view
                    text = text[:max(width - 1, 0)] + ELLIPSIS
                cells = cell_len(text)
                if x + cells > width and x > 0:
                    lines.append([])
                    x = 0
                lines[-1].append(Placed(x, text, row))
                x += cells + (0 if char else 1)  # words are followed by a space
                if char and token == "\n":
                    lines.append([])
                    x = 0
                row += 1
                if len(lines) > 2 * height:
                    break
        return lines

    def render_line(self, y: int) -> Strip:
        width = self.size.width
        lines = self.lines()
        if y >= len(lines):
            return Strip.blank(width)
        segments = []
        x = 0
        for placed in lines[y]:
            if placed.x > x:
                segments.append(Segment(" " * (placed.x - x)))
            if placed.row < 0:
                style = MORE
            else:
                style = self._styles.get(placed.row, MORE)
                if placed.row == self.row:
                    style += CURSOR
                elif self.span is not None and self.span[0] <= placed.row < self.span[1]:
                    style += SPAN
            segments.append(Segment(placed.text, style))
            x = placed.x + cell_len(placed.text)
        return clip(segments, width)

    def row_at(self, event: events.MouseEvent) -> int | None:
        """The trace row of the token under the mouse, or None."""
        offset = event.get_content_offset(self)
        lines = self.lines()
        if offset is None or offset.y >= len(lines):
            return None
        for placed in lines[offset.y]:
            if placed.row >= 0 and placed.x <= offset.x <= placed.x + cell_len(placed.text):
                return placed.row
        return None

    def on_mouse_down(self, event: events.MouseDown) -> None:
        self._anchor, self._dragged = self.row_at(event), False
        if self._anchor is not None:
            self.capture_mouse()

    def on_mouse_move(self, event: events.MouseMove) -> None:
        if self._anchor is None or event.button != 1 or self.app.mouse_captured is not self:
            return
        row = self.row_at(event)
        if row is not None and (row != self._anchor or self._dragged):
            self._dragged = True
            self.post_message(SpanChosen((min(row, self._anchor), max(row, self._anchor) + 1)))

    def on_mouse_up(self, event: events.MouseUp) -> None:
        if self.app.mouse_captured is self:
            self.capture_mouse(False)

    def on_click(self, event: events.Click) -> None:
        if self._dragged:
            self._dragged = False
            return
        row = self.row_at(event)
        if row is not None:
            self.post_message(RowChosen(row))
