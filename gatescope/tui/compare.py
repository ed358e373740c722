"""Two sequences side by side: the same units, kind and colour scale, aligned by position, and A minus B.

The comparison an agreement study makes (Lakretz et al. 2019, Fig. 1: "the boy near the cars
greets" against "the boys near the car greet"): pane A and pane B are the heatmaps of two
sequences over the same units, token position t of both in the same column, and the optional
difference pane colours value(A) - value(B) on a diverging scale (blue: B higher, red: A
higher; the difference of two values on a scale of width w is divided by w, so -1..1; the cell
state is compared as tanh(c), as it is coloured). Columns are at least as wide as the longest
token of the two and a gap, so a suffix ("greets" / "greet") is never cut, and short sequences
are spread over the whole width (gatescope.tui.columns). The panes open on the first units (on
the cursor's unit when it lies further down); an arrow in the gutter says units are hidden above
or below.
"""
from __future__ import annotations

from typing import ClassVar

import numpy as np
from rich.segment import Segment
from rich.style import Style
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.screen import Screen
from textual.strip import Strip
from textual.widget import Widget
from textual.widgets import Footer, Static

from gatescope.tui.clip import clip
from gatescope.tui.colors import PairStyles, Scale
from gatescope.tui.columns import Columns
from gatescope.tui.heatmap import EMPTY_STYLE, GUTTER_STYLE, HALF, MAX_CELL, RULER_STYLES, ruler_label
from gatescope.tui.source import TraceSource

MAX_POSITIONS = 2048  # positions compared (a sequence may be a whole corpus)
TITLE_TOKENS = 400  # tokens of each sequence written out in the screen's title
TITLE_STYLE = Style(color="#00d7ff", bold=True, bgcolor="#121212")
DIFFERENCE = Scale("h")  # -1..1, blue .. white .. red


class PairView(Widget, can_focus=True):
    """Panes A, B (and A - B) of one quantity over the same units, one column per position."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("up", "units(-2)", "units", show=False),
        Binding("down", "units(2)", "units", show=False),
        Binding("pageup", "units(-20)", show=False),
        Binding("pagedown", "units(20)", show=False),
        Binding("left", "shift(-1)", "position", show=False),
        Binding("right", "shift(1)", "position", show=False),
        Binding("d", "toggle_difference", "difference"),
    ]

    def __init__(self, source: TraceSource, quantity: str, a: int, b: int, unit: int, *, id: str | None = None):
        super().__init__(id=id)
        self.source, self.quantity, self.sequences = source, quantity, (a, b)
        self.kind = quantity.rsplit(".", 1)[1]
        self.scale = source.scale(quantity)
        self.hidden = int(source.data.arrays[quantity].shape[1])
        self.unit = unit
        self.first_unit = 0
        self._placed = False  # the first layout puts the cursor's unit in view
        self.first_position = 0
        self.difference = False
        rows = [source.sequence_rows(s) for s in (a, b)]
        rows = [(start, min(stop, start + MAX_POSITIONS)) for start, stop in rows]
        self.values = [source.window(quantity, *r) for r in rows]  # (L, H) each
        self.tokens = [source.tokens(*r) for r in rows]
        self.length = max(len(t) for t in self.tokens)
        longest = max(len(t) for tokens in self.tokens for t in tokens)
        self.min_width = 1 if source.tokenizer == "char" else min(max(longest + 1, 3), MAX_CELL)  # and a gap
        self.columns = Columns.uniform(self.length, self.min_width)
        self.gutter_width = max(len(str(self.hidden - 1)), 3) + 2  # room for an arrow: units hidden above/below
        self._styles = PairStyles(self.scale)
        self._difference_styles = PairStyles(DIFFERENCE)
        self._levels = [self._pane_levels(pane) for pane in range(3)]

    # -- what each pane holds ------------------------------------------------------------------
    def levels(self, pane: int) -> np.ndarray:
        """Colour levels of pane 0 (A), 1 (B) or 2 (A - B): (positions, H) uint8, NaN past a sequence's end."""
        return self._levels[pane]

    def _pane_levels(self, pane: int) -> np.ndarray:
        if pane < 2:
            padded = np.full((self.length, self.hidden), np.nan, dtype=np.float32)
            padded[: len(self.values[pane])] = self.values[pane]
            return self.scale.levels(padded)
        return DIFFERENCE.levels(self.difference_values())

    def difference_values(self) -> np.ndarray:
        """(A - B) / scale width on the colour scale's values (tanh(c) for c): (positions, H), NaN where one ends."""
        a, b = (np.full((self.length, self.hidden), np.nan) for _ in range(2))
        a[: len(self.values[0])] = self.scale.transform(self.values[0])
        b[: len(self.values[1])] = self.scale.transform(self.values[1])
        return (a - b) / (self.scale.high - self.scale.low)

    @property
    def cell_width(self) -> int:
        """The narrowest column (spread sequences have some one cell wider)."""
        return self.columns.narrowest

    def on_resize(self) -> None:
        length, room = self.length - self.first_position, max(self.size.width - self.gutter_width, 1)
        columns = Columns.uniform(max(length, 1), self.min_width)
        self.columns = columns if columns.total >= room else Columns(length, room)
        self.refresh()
        if not self._placed:
            self._placed = True
            if self.unit >= 2 * self.unit_lines:  # further down than the first page: start at its pair
                self.action_units(self.unit - self.unit % 2)

    @property
    def panes(self) -> int:
        return 3 if self.difference else 2

    @property
    def unit_lines(self) -> int:
        """Lines of units per pane (each pane also has a title line)."""
        return max((self.size.height - self.panes) // self.panes, 1)

    # -- actions -------------------------------------------------------------------------------
    def action_units(self, step: int) -> None:
        self.first_unit = min(max(self.first_unit + step, 0), max(self.hidden - 2 * self.unit_lines, 0))
        self.first_unit -= self.first_unit % 2
        self.refresh()

    def action_shift(self, step: int) -> None:
        self.first_position = min(max(self.first_position + step, 0), max(self.length - 1, 0))
        self.on_resize()

    def action_toggle_difference(self) -> None:
        self.difference = not self.difference
        self.refresh()

    # -- rendering -----------------------------------------------------------------------------
    def render_line(self, y: int) -> Strip:
        width = self.size.width
        pane, line = divmod(y, self.unit_lines + 1)
        if pane >= self.panes:
            return Strip.blank(width, EMPTY_STYLE)
        if line == 0:
            return clip(list(self._title(pane)), width, EMPTY_STYLE)
        first = self.first_unit + 2 * (line - 1)
        if first >= self.hidden:
            return Strip.blank(width, EMPTY_STYLE)
        styles = self._difference_styles if pane == 2 else self._styles
        levels = self.levels(pane)[self.first_position:]  # (P, H)
        upper = levels[:, first].astype(np.int32)
        lower = levels[:, first + 1].astype(np.int32) if first + 1 < self.hidden else np.full_like(upper, styles.blank)
        arrow = "↑" if line == 1 and first > 0 else "↓" if line == self.unit_lines and first + 2 < self.hidden else ""
        segments = [Segment(f"{arrow}{first:>{self.gutter_width - 1 - len(arrow)}} ", GUTTER_STYLE)]
        widths = self.columns.widths(self.first_position, self.length).tolist()
        segments += [Segment(HALF * w, styles.table[u][l]) for u, l, w in zip(upper.tolist(), lower.tolist(), widths)]
        return Strip(Segment.simplify(segments)).crop_extend(0, width, EMPTY_STYLE)

    def _title(self, pane: int) -> Strip:
        label = ("A", "B", "A-B")[pane]
        segments = [Segment(f"{label:>{self.gutter_width - 1}} ", TITLE_STYLE)]
        if pane == 2:
            return Strip(segments + [Segment(" value(A) - value(B): blue B higher, red A higher", GUTTER_STYLE)])
        tokens = self.tokens[pane][self.first_position:]
        widths = self.columns.widths(self.first_position, self.length).tolist()
        for i, (token, width) in enumerate(zip(tokens, widths)):
            segments += ruler_label(token.replace("\n", "↵"), width, RULER_STYLES[(self.first_position + i) % 2])
        return Strip(segments)


class CompareScreen(Screen[None]):
    """Sequences A and B of one quantity, aligned by position (`d`: their difference; Escape: back)."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape,q", "app.pop_screen", "back")]

    def __init__(self, source: TraceSource, quantity: str, a: int, b: int, unit: int) -> None:
        super().__init__()
        self.source, self.quantity, self.pair, self.unit = source, quantity, (a, b), unit

    def compose(self) -> ComposeResult:
        a, b = self.pair
        text = [self._text(s) for s in self.pair]
        yield Static(f"{self.quantity}   A = sequence {a}: {text[0]}\n{' ' * len(self.quantity)}   "
                     f"B = sequence {b}: {text[1]}", id="compare-title", markup=False)
        yield PairView(self.source, self.quantity, a, b, self.unit, id="pair")
        yield Footer()

    def _text(self, sequence: int) -> str:
        """The sequence's text, its first TITLE_TOKENS tokens (and "…" when there are more)."""
        start, stop = self.source.sequence_rows(sequence)
        text = self.source.join(self.source.tokens(start, min(stop, start + TITLE_TOKENS)))
        return text + (" …" if stop - start > TITLE_TOKENS else "")

    def on_mount(self) -> None:
        self.query_one(PairView).focus()
