"""The heatmap: units (rows) x token rows (columns) of one quantity, with a cursor and a span selection.

Built on Textual's Line API (`ScrollView.render_line` returning cached `Strip`s), so a
trace of a million tokens costs only the visible window: the window's rows are read from
the (memory-mapped) trace in blocks, quantised once with numpy, and every line is a few
run-length segments of "▀" whose (foreground, background) colours are the (upper, lower)
unit of the pair: two units per terminal row, as in LSTMVis-style state heatmaps.
Line 0 is a sticky ruler of the tokens, each on its own shade with a blank cell after it when its
column has room (so "greets the" never reads "greetsthe"); the left gutter (unit numbers) is
sticky too.

The heatmap may show a subset of the units (the units of a select-and-match selection,
LSTMVis's view of the selected cells only); the cursor then moves among those. A span of
tokens is selected with shift+arrows, the mark key or a mouse drag, and reported to the app
with `SpanChosen`. The view scrolls before the cursor reaches an edge (as editors do), a
token wider than its column shows its start and its end ("gr…s"), and a trace shorter than
the screen is spread over all of it (gatescope.tui.columns).
"""
from __future__ import annotations

from typing import ClassVar

import numpy as np
from rich.segment import Segment
from rich.style import Style
from textual import events
from textual.binding import Binding, BindingType
from textual.cache import LRUCache
from textual.geometry import Region, Size
from textual.reactive import reactive
from textual.scroll_view import ScrollView
from textual.strip import Strip

from gatescope.tui.colors import PairStyles
from gatescope.tui.columns import Columns
from gatescope.tui.messages import SpanChosen
from gatescope.tui.source import Layer, TraceSource

HALF = "▀"
# tokens alternate a dark and a light shade, so neighbours read apart even where no gap fits
RULER_STYLES = (Style(color="#e4e4e4", bgcolor="#303030"), Style(color="#121212", bgcolor="#b2b2b2"))
START_STYLES = (Style(color="#00d7ff", bgcolor="#303030", bold=True),  # a sequence's first token
                Style(color="#005f87", bgcolor="#b2b2b2", bold=True))
SPAN_STYLE = Style(color="black", bgcolor="#ffd75f", bold=True)  # the selected span, on the ruler
CURSOR_STYLE = Style(color="black", bgcolor="#ff00ff", bold=True)
GUTTER_STYLE = Style(color="#8a8a8a", bgcolor="#121212")
CHOSEN_STYLE = Style(color="#ffd75f", bgcolor="#121212", bold=True)  # a gutter line holding a selected unit
EMPTY_STYLE = Style(bgcolor="#000000")
MAX_CELL = 13  # widest column (12 characters and the gap)
GAP_FROM = 4  # columns this wide end with a blank cell between tokens
MARGIN = 8  # tokens kept in view beyond the cursor, at most a quarter of the view


def ruler_label(text: str, width: int, style: Style) -> list[Segment]:
    """A token on a ruler, in a column of ``width`` cells: fitted, and a blank last cell when the column has room."""
    if width < GAP_FROM:
        return [Segment(fit(text, width), style)]
    return [Segment(fit(text, width - 1), style), Segment(" ", EMPTY_STYLE)]


def fit(text: str, width: int) -> str:
    """``text`` in ``width`` cells: cut in the middle when too long, so its end shows ("greets" -> "gr…s")."""
    if len(text) <= width:
        return f"{text:<{width}}"
    if width < 3:
        return text[:width]
    head = width // 2
    return text[:head] + "…" + text[len(text) - (width - head - 1):]


class Heatmap(ScrollView, can_focus=True):
    """Units x timesteps of one quantity; arrows move the cursor, pages scroll time.

    The ruler alternates a dark and a light shade per token; a sequence's first token is bold
    cyan, the selected span yellow.
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("left", "move(0, -1)", "step", show=False),
        Binding("right", "move(0, 1)", "step", show=False),
        Binding("up", "move(-1, 0)", "unit", show=False),
        Binding("down", "move(1, 0)", "unit", show=False),
        Binding("shift+left", "extend(-1)", "select", show=False),
        Binding("shift+right", "extend(1)", "select", show=False),
        Binding("v", "mark", "select"),
        Binding("pageup", "page(-1)", "page back", show=False),
        Binding("pagedown", "page(1)", "page on", show=False),
        Binding("ctrl+up", "unit_page(-1)", "units up", show=False),
        Binding("ctrl+down", "unit_page(1)", "units down", show=False),
        Binding("home", "sequence_edge(0)", "sequence start", show=False),
        Binding("end", "sequence_edge(1)", "sequence end", show=False),
        Binding("plus", "zoom(1)", "wider", show=False),
        Binding("minus", "zoom(-1)", "narrower", show=False),
        Binding("w", "fit_tokens", "fit tokens", show=False),
    ]

    cursor: reactive[tuple[int, int]] = reactive((0, 0), repaint=False, init=False, always_update=True)
    """(unit, row) under the cursor, set on every move or switch; the app watches it to move the other views
    in the same frame."""

    def __init__(self, source: TraceSource, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.source = source
        self.base_width = 1 if source.tokenizer == "char" else 3
        self.width_asked = self.base_width  # the narrowest column: the default, the tokens' (w) or the user's (+ -)
        self.zoomed = False  # the user chose the width with + or -: no spreading
        self.columns = Columns.uniform(source.num_tokens, self.base_width)
        self.unit = 0
        self.row = 0
        self.rnn_layer: Layer = source.layers[0]
        self.kind = self.rnn_layer.kinds[0]
        self.quantity = self.rnn_layer.name(self.kind)
        self.shown: np.ndarray = np.arange(self.rnn_layer.hidden)  # (U,) units drawn, in order
        self.chosen: frozenset[int] = frozenset()  # the selection's units, marked in the gutter
        self.span: tuple[int, int] | None = None  # the selected rows start:stop
        self._anchor: int | None = None  # where a selection started (keys or drag)
        self._dragging = False
        self._styles = PairStyles(source.scale(self.quantity))
        self._strips: LRUCache[tuple, Strip] = LRUCache(2048)
        self._window_key: tuple[str, int, int] | None = None
        self._window: np.ndarray | None = None
        self._update_virtual_size()

    # -- geometry ----------------------------------------------------------------------
    @property
    def restricted(self) -> bool:
        return len(self.shown) != self.rnn_layer.hidden

    @property
    def gutter_width(self) -> int:
        digits = max(len(str(self.rnn_layer.hidden - 1)), 4 if not self.restricted else 1)
        return (2 * digits + 1 if self.restricted else digits) + 1

    @property
    def lines(self) -> int:
        return (len(self.shown) + 1) // 2

    @property
    def data_width(self) -> int:
        return max(self.scrollable_content_region.width - self.gutter_width, 1)

    @property
    def data_height(self) -> int:
        return max(self.scrollable_content_region.height - 1, 1)

    @property
    def cell_width(self) -> int:
        """The narrowest column (a spread trace has some one cell wider)."""
        return self.columns.narrowest

    def visible_rows(self) -> tuple[int, int]:
        """The token rows (start, stop) whose columns are on screen."""
        x = self.scroll_offset.x
        return self.columns.row_at(x), self.columns.row_at(x + self.data_width - 1) + 1

    def visible_units(self) -> list[int]:
        """The units whose rows are on screen, top to bottom."""
        top = self.scroll_offset.y * 2
        return self.shown[top:top + 2 * self.data_height].tolist()

    def _position(self, unit: int) -> int:
        """Where ``unit`` is among the units shown (the nearest one shown when it is not)."""
        return min(int(np.searchsorted(self.shown, unit)), len(self.shown) - 1)

    def _update_virtual_size(self) -> None:
        self.virtual_size = Size(self.gutter_width + self.columns.total, self.lines + 1)
        scrollbar = 1 if self.columns.total > self.data_width else 0
        self.styles.max_height = self.lines + 1 + scrollbar  # no taller than its units: a small layer leaves room

    def get_content_height(self, container: Size, viewport: Size, width: int) -> int:
        """As tall as the units need (and the ruler)."""
        return self.lines + 1

    def on_resize(self) -> None:
        self._set_width(self.width_asked)
        # a shorter view (the match panels opened under it, a smaller terminal) keeps the cursor's unit in it
        self.call_after_refresh(self._scroll_into_view, False)

    def _set_width(self, width: int) -> None:
        """Columns at least ``width`` wide; a trace narrower than the view is spread over it (unless zoomed)."""
        self.width_asked = width
        count = self.source.num_tokens
        columns = Columns.uniform(count, width)
        if not self.zoomed and columns.total < self.data_width:
            columns = Columns(count, self.data_width)  # rather than a blank band on the right
        if columns != self.columns:
            self.columns = columns
            self._strips.clear()
            self._update_virtual_size()
            self.refresh()
            self.call_after_refresh(lambda: self.move_to(self.unit, self.row))  # back to the cursor, where it is then

    # -- what is shown -------------------------------------------------------------------
    def show(self, layer: Layer, kind: str) -> None:
        """Switch to another quantity, keeping the cursor's unit (clamped) and row; every unit shown."""
        self.rnn_layer, self.kind = layer, kind
        self.quantity = layer.name(kind)
        self.shown = np.arange(layer.hidden)
        self._styles = PairStyles(self.source.scale(self.quantity))
        self._strips.clear()
        self._update_virtual_size()
        self.refresh(layout=True)
        self.move_to(min(self.unit, layer.hidden - 1), self.row)

    def show_units(self, units: list[int] | None) -> None:
        """Draw only ``units`` (ascending unit order), or every unit (None); the cursor goes to a shown unit."""
        self.shown = np.arange(self.rnn_layer.hidden) if not units else np.array(sorted(units))
        self._strips.clear()
        self.call_after_refresh(self._set_width, self.width_asked)  # the gutter's width changed the view's
        self._update_virtual_size()
        self.refresh(layout=True)
        self.move_to(int(self.shown[self._position(self.unit)]), self.row)

    def mark(self, span: tuple[int, int] | None, units: frozenset[int]) -> None:
        """Show the selected span on the ruler and its units in the gutter."""
        if (span, units) != (self.span, self.chosen):
            self.span, self.chosen = span, units
            if span is None:
                self._anchor = None
            self.refresh()  # the ruler's and the gutter's cache keys hold the span and the chosen units

    def move_to(self, unit: int, row: int, align_left: bool = False) -> None:
        """Put the cursor on (unit, row), scroll it into view and set `cursor` (which the app watches).

        align_left: put the row at the left edge of the view (a jump to a sequence's first token).
        """
        row = min(max(row, 0), self.source.num_tokens - 1)
        if self.restricted:
            unit = int(self.shown[self._position(unit)])
        unit = min(max(unit, 0), self.rnn_layer.hidden - 1)
        old_line = self._position(self.unit) // 2
        self.unit, self.row = unit, row
        self._scroll_into_view(align_left)
        self.refresh_lines(old_line + 1)
        self.refresh_lines(self._position(unit) // 2 + 1)
        self.refresh(Region(0, 0, self.size.width, 1))  # the ruler marks the cursor's token
        self.cursor = (unit, row)

    def _scroll_into_view(self, align_left: bool) -> None:
        x, y = self.scroll_offset
        cw = self.cell_width
        margin = min(MARGIN, self.data_width // cw // 4) * cw
        left, right = self.columns.x(self.row), self.columns.x(self.row + 1)
        if align_left:
            x = left
        elif left - margin < x:
            x = max(left - margin, 0)
        elif right + margin > x + self.data_width:
            x = right + margin - self.data_width
        x = max(min(x, self.virtual_size.width - self.scrollable_content_region.width), 0)
        line = self._position(self.unit) // 2
        if line < y:
            y = line
        elif line >= y + self.data_height:
            y = line - self.data_height + 1
        if (x, y) != tuple(self.scroll_offset):
            self.scroll_to(x, y, animate=False, immediate=True)

    # -- actions -----------------------------------------------------------------------
    def action_move(self, units: int, rows: int) -> None:
        self._anchor = None  # a plain move ends a key selection
        unit = int(self.shown[min(max(self._position(self.unit) + units, 0), len(self.shown) - 1)])
        self.move_to(unit, self.row + rows)

    def action_mark(self) -> None:
        """Start a selection at the cursor's token (shift+arrows extend it)."""
        self._anchor = self.row
        self.post_message(SpanChosen((self.row, self.row + 1)))

    def action_extend(self, rows: int) -> None:
        """Extend the selection from its anchor to the cursor's new row, within the cursor's sequence."""
        if self._anchor is None:
            self._anchor = self.row
        first, last = self.source.sequence_rows(self.source.sequence_of(self._anchor))
        row = min(max(self.row + rows, first), last - 1)
        self.move_to(self.unit, row)
        self.post_message(SpanChosen((min(self._anchor, row), max(self._anchor, row) + 1)))

    def action_page(self, pages: int) -> None:
        step = max(self.data_width // self.cell_width, 1) * pages
        first = min(max(self.visible_rows()[0] + step, 0), self.source.num_tokens)
        self.scroll_to(x=self.columns.x(first), animate=False, immediate=True)
        self.move_to(self.unit, self.row + step)

    def action_unit_page(self, pages: int) -> None:
        position = min(max(self._position(self.unit) + 2 * self.data_height * pages, 0), len(self.shown) - 1)
        self.move_to(int(self.shown[position]), self.row)

    def action_sequence_edge(self, end: int) -> None:
        start, stop = self.source.sequence_rows(self.source.sequence_of(self.row))
        self.move_to(self.unit, stop - 1 if end else start)

    def action_zoom(self, step: int) -> None:
        self.zoomed = True
        self._set_width(min(max(self.cell_width + step, 1), MAX_CELL))

    def action_fit_tokens(self) -> None:
        """Columns as wide as the longest token on screen and its gap (up to MAX_CELL); again: back to the default."""
        start, stop = self.visible_rows()
        longest = max((len(t) for t in self.source.tokens(start, stop)), default=1)
        wide = min(max(longest + (self.base_width > 1), self.base_width), MAX_CELL)  # words get their gap
        self.zoomed = False
        self._set_width(self.base_width if self.width_asked == wide else wide)

    # -- mouse -------------------------------------------------------------------------
    def _cell_at(self, event: events.MouseEvent) -> tuple[int, int] | None:
        """(screen line, token row) under the mouse, None in the gutter."""
        offset = event.get_content_offset(self)
        if offset is None or offset.x < self.gutter_width:
            return None
        return offset.y, self.columns.row_at(self.scroll_offset.x + offset.x - self.gutter_width)

    def on_mouse_down(self, event: events.MouseDown) -> None:
        cell = self._cell_at(event)
        if cell is not None and event.button == 1:
            self._anchor, self._dragging = cell[1], False
            self.capture_mouse()

    def on_mouse_move(self, event: events.MouseMove) -> None:
        if self._anchor is None or event.button != 1 or self.app.mouse_captured is not self:
            return
        cell = self._cell_at(event)
        if cell is None:
            return
        first, last = self.source.sequence_rows(self.source.sequence_of(self._anchor))
        row = min(max(cell[1], first), last - 1)
        if row != self._anchor or self._dragging:
            self._dragging = True
            self.post_message(SpanChosen((min(self._anchor, row), max(self._anchor, row) + 1)))

    def on_mouse_up(self, event: events.MouseUp) -> None:
        if self.app.mouse_captured is self:
            self.capture_mouse(False)

    def on_click(self, event: events.Click) -> None:
        """A click picks the upper unit of a cell; a second click on it picks the lower one (not after a drag)."""
        if self._dragging:
            self._dragging = False
            return
        cell = self._cell_at(event)
        if cell is None:
            return
        y, row = cell
        if y == 0:
            self.move_to(self.unit, row)
            return
        top = 2 * (self.scroll_offset.y + y - 1)
        if top >= len(self.shown):
            return
        upper = int(self.shown[top])
        lower = int(self.shown[top + 1]) if top + 1 < len(self.shown) else None
        self.move_to(lower if (self.unit == upper and self.row == row and lower is not None) else upper, row)

    # -- rendering ---------------------------------------------------------------------
    def _levels(self, start: int, stop: int) -> np.ndarray:
        """Colour levels of rows start:stop, all units: (stop-start, H) uint8, one read per window."""
        key = (self.quantity, start, stop)
        if key != self._window_key:
            self._window = self.source.window(self.quantity, start, stop, levels=True)
            self._window_key = key
        return self._window

    def render_line(self, y: int) -> Strip:
        width = self.size.width
        scroll_x, scroll_y = self.scroll_offset
        start, stop = self.visible_rows()
        line = scroll_y + y - 1
        cursor_col = self.row if start <= self.row < stop else -1
        if y == 0:
            key = ("ruler", scroll_x, width, self.columns, cursor_col, self.span)
        elif line >= self.lines:
            return Strip.blank(width, EMPTY_STYLE)
        else:
            position = self._position(self.unit)
            cursor = (cursor_col, position % 2) if position // 2 == line else None
            chosen = bool(self.chosen.intersection(self.shown[2 * line:2 * line + 2].tolist()))
            key = (self.quantity, line, scroll_x, width, self.columns, cursor, chosen)
        strip = self._strips.get(key)
        if strip is None:
            body = self._ruler(start, stop) if y == 0 else self._line(line, start, stop)
            gutter = self._gutter(line if y else None)
            skip = scroll_x - self.columns.x(start)
            body = body.crop(skip, skip + width - self.gutter_width)
            strip = Strip.join([gutter, body]).extend_cell_length(width, EMPTY_STYLE)
            self._strips.set(key, strip)
        return strip

    def _gutter(self, line: int | None) -> Strip:
        width = self.gutter_width
        if line is None:
            return Strip([Segment(f"{'unit':>{width - 1}} "[-width:], GUTTER_STYLE)], width)
        pair = self.shown[2 * line:2 * line + 2].tolist()
        label = "/".join(map(str, pair)) if self.restricted else str(pair[0])
        style = CURSOR_STYLE if line == self._position(self.unit) // 2 else (
            CHOSEN_STYLE if self.chosen.intersection(pair) else GUTTER_STYLE)
        return Strip([Segment(f"{label:>{width - 1}} ", style)], width)

    def _ruler(self, start: int, stop: int) -> Strip:
        widths = self.columns.widths(start, stop).tolist()
        tokens = self.source.tokens(start, stop)
        offsets = self.source.offsets
        firsts = set(offsets[np.searchsorted(offsets, start):np.searchsorted(offsets, stop)].tolist())
        span = self.span or (0, 0)
        segments = []
        for i, token in enumerate(tokens):
            row = start + i
            if row == self.row:
                style = CURSOR_STYLE
            elif span[0] <= row < span[1]:
                style = SPAN_STYLE
            else:
                style = (START_STYLES if row in firsts else RULER_STYLES)[row % 2]
            text = token.replace("\n", "↵").replace(" ", "␣") if self.source.tokenizer == "char" else token
            segments += ruler_label(text, widths[i], style)
        return Strip(segments, sum(widths))

    def _line(self, line: int, start: int, stop: int) -> Strip:
        levels = self._levels(start, stop)  # (W, H)
        styles = self._styles
        pair = self.shown[2 * line:2 * line + 2].tolist()
        upper = levels[:, pair[0]].astype(np.int32)  # (W,)
        lower = levels[:, pair[1]].astype(np.int32) if len(pair) > 1 else np.full_like(upper, styles.blank)
        position = self._position(self.unit)
        if position // 2 == line and start <= self.row < stop:
            (upper if position % 2 == 0 else lower)[self.row - start] = styles.cursor
        code = upper * styles.size + lower  # (W,)
        starts = np.flatnonzero(np.diff(code, prepend=-1))
        ends = np.append(starts[1:], len(code))
        edges = self.columns.edges(start, stop).tolist()
        table = styles.table
        segments = [
            Segment(HALF * (edges[e] - edges[s]), table[upper[s]][lower[s]])
            for s, e in zip(starts.tolist(), ends.tolist())
        ]
        return Strip(segments, edges[-1])
