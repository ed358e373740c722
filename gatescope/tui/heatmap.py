"""The heatmap: units (rows) x token rows (columns) of one quantity, with a cursor.

Built on Textual's Line API (`ScrollView.render_line` returning cached `Strip`s), so a
trace of a million tokens costs only the visible window: the window's rows are read from
the (memory-mapped) trace in blocks, quantised once with numpy, and every line is a few
run-length segments of "▀" whose (foreground, background) colours are the (upper, lower)
unit of the pair: two units per terminal row, as in LSTMVis-style state heatmaps.
Line 0 is a sticky ruler of the tokens; the left gutter (unit numbers) is sticky too.
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
from gatescope.tui.source import Layer, TraceSource

HALF = "▀"
RULER_STYLES = (Style(color="#d0d0d0", bgcolor="#262626"), Style(color="#d0d0d0", bgcolor="#444444"))
START_STYLES = tuple(style + Style(color="#00d7ff", bold=True) for style in RULER_STYLES)  # a sequence's first token
CURSOR_STYLE = Style(color="black", bgcolor="#ff00ff", bold=True)
GUTTER_STYLE = Style(color="#8a8a8a", bgcolor="#121212")
EMPTY_STYLE = Style(bgcolor="#000000")


class Heatmap(ScrollView, can_focus=True):
    """Units x timesteps of one quantity; arrows move the cursor, pages scroll time.

    The ruler alternates two shades per token; a sequence's first token is bold cyan.
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("left", "move(0, -1)", "step", show=False),
        Binding("right", "move(0, 1)", "step", show=False),
        Binding("up", "move(-1, 0)", "unit", show=False),
        Binding("down", "move(1, 0)", "unit", show=False),
        Binding("pageup", "page(-1)", "page back", show=False),
        Binding("pagedown", "page(1)", "page on", show=False),
        Binding("ctrl+up", "unit_page(-1)", "units up", show=False),
        Binding("ctrl+down", "unit_page(1)", "units down", show=False),
        Binding("home", "sequence_edge(0)", "sequence start", show=False),
        Binding("end", "sequence_edge(1)", "sequence end", show=False),
        Binding("plus", "zoom(1)", "wider", show=False),
        Binding("minus", "zoom(-1)", "narrower", show=False),
    ]

    cursor: reactive[tuple[int, int]] = reactive((0, 0), repaint=False, init=False, always_update=True)
    """(unit, row) under the cursor, set on every move or switch; the app watches it to move the other views
    in the same frame."""

    def __init__(self, source: TraceSource, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.source = source
        self.cell_width = 1 if source.tokenizer == "char" else 3
        self.unit = 0
        self.row = 0
        self.rnn_layer: Layer = source.layers[0]
        self.kind = self.rnn_layer.kinds[0]
        self.quantity = self.rnn_layer.name(self.kind)
        self._styles = PairStyles(source.scales[self.kind])
        self._strips: LRUCache[tuple, Strip] = LRUCache(2048)
        self._window_key: tuple[str, int, int] | None = None
        self._window: np.ndarray | None = None
        self._update_virtual_size()

    # -- geometry ----------------------------------------------------------------------
    @property
    def gutter_width(self) -> int:
        return max(len(str(self.rnn_layer.hidden - 1)), 4) + 1

    @property
    def lines(self) -> int:
        return (self.rnn_layer.hidden + 1) // 2

    @property
    def data_width(self) -> int:
        return max(self.scrollable_content_region.width - self.gutter_width, 1)

    @property
    def data_height(self) -> int:
        return max(self.scrollable_content_region.height - 1, 1)

    def visible_rows(self) -> tuple[int, int]:
        """The token rows (start, stop) whose columns are on screen."""
        x = self.scroll_offset.x
        start = x // self.cell_width
        stop = -(-(x + self.data_width) // self.cell_width)
        return start, min(stop, self.source.num_tokens)

    def visible_units(self) -> tuple[int, int]:
        """The units (start, stop) whose rows are on screen."""
        top = self.scroll_offset.y * 2
        return top, min(top + 2 * self.data_height, self.rnn_layer.hidden)

    def _update_virtual_size(self) -> None:
        self.virtual_size = Size(self.gutter_width + self.source.num_tokens * self.cell_width, self.lines + 1)

    # -- what is shown -------------------------------------------------------------------
    def show(self, layer: Layer, kind: str) -> None:
        """Switch to another quantity, keeping the cursor's unit (clamped) and row."""
        self.rnn_layer, self.kind = layer, kind
        self.quantity = layer.name(kind)
        self._styles = PairStyles(self.source.scales[kind])
        self._strips.clear()
        self._update_virtual_size()
        self.refresh()
        self.move_to(min(self.unit, layer.hidden - 1), self.row)

    def move_to(self, unit: int, row: int) -> None:
        """Put the cursor on (unit, row), scroll it into view and set `cursor` (which the app watches)."""
        unit = min(max(unit, 0), self.rnn_layer.hidden - 1)
        row = min(max(row, 0), self.source.num_tokens - 1)
        old_line = self.unit // 2
        self.unit, self.row = unit, row
        self._scroll_into_view()
        self.refresh_lines(old_line + 1)
        self.refresh_lines(unit // 2 + 1)
        self.refresh(Region(0, 0, self.size.width, 1))  # the ruler marks the cursor's token
        self.cursor = (unit, row)

    def _scroll_into_view(self) -> None:
        x, y = self.scroll_offset
        left, right = self.row * self.cell_width, (self.row + 1) * self.cell_width
        if left < x:
            x = left
        elif right > x + self.data_width:
            x = right - self.data_width
        line = self.unit // 2
        if line < y:
            y = line
        elif line >= y + self.data_height:
            y = line - self.data_height + 1
        if (x, y) != tuple(self.scroll_offset):
            self.scroll_to(x, y, animate=False)

    # -- actions -----------------------------------------------------------------------
    def action_move(self, units: int, rows: int) -> None:
        self.move_to(self.unit + units, self.row + rows)

    def action_page(self, pages: int) -> None:
        step = max(self.data_width // self.cell_width, 1) * pages
        self.scroll_to(x=self.scroll_offset.x + step * self.cell_width, animate=False)
        self.move_to(self.unit, self.row + step)

    def action_unit_page(self, pages: int) -> None:
        self.move_to(self.unit + 2 * self.data_height * pages, self.row)

    def action_sequence_edge(self, end: int) -> None:
        start, stop = self.source.sequence_rows(self.source.sequence_of(self.row))
        self.move_to(self.unit, stop - 1 if end else start)

    def action_zoom(self, step: int) -> None:
        width = min(max(self.cell_width + step, 1), 12)
        if width != self.cell_width:
            self.cell_width = width
            self._strips.clear()
            self._update_virtual_size()
            self.refresh()
            self.call_after_refresh(self.move_to, self.unit, self.row)  # scroll back to the cursor

    def on_click(self, event: events.Click) -> None:
        """A click picks the upper unit of a cell; a second click on it picks the lower one."""
        offset = event.get_content_offset(self)
        if offset is None or offset.x < self.gutter_width:
            return
        row = (self.scroll_offset.x + offset.x - self.gutter_width) // self.cell_width
        if offset.y == 0:
            self.move_to(self.unit, row)
            return
        top = 2 * (self.scroll_offset.y + offset.y - 1)
        if top >= self.rnn_layer.hidden:
            return
        unit = top + 1 if (self.unit == top and self.row == row and top + 1 < self.rnn_layer.hidden) else top
        self.move_to(unit, row)

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
            key = ("ruler", scroll_x, width, self.cell_width, cursor_col)
        elif line >= self.lines:
            return Strip.blank(width, EMPTY_STYLE)
        else:
            on_line = self.unit // 2 == line
            cursor = (cursor_col, self.unit % 2) if on_line else None
            key = (self.quantity, line, scroll_x, width, self.cell_width, cursor)
        strip = self._strips.get(key)
        if strip is None:
            body = self._ruler(start, stop) if y == 0 else self._line(line, start, stop)
            gutter = self._gutter(line if y else None)
            skip = scroll_x - start * self.cell_width
            body = body.crop(skip, skip + width - self.gutter_width)
            strip = Strip.join([gutter, body]).extend_cell_length(width, EMPTY_STYLE)
            self._strips.set(key, strip)
        return strip

    def _gutter(self, line: int | None) -> Strip:
        width = self.gutter_width
        if line is None:
            return Strip([Segment(f"{'unit':>{width - 1}} ", GUTTER_STYLE)], width)
        style = CURSOR_STYLE if line == self.unit // 2 else GUTTER_STYLE
        return Strip([Segment(f"{2 * line:>{width - 1}} ", style)], width)

    def _ruler(self, start: int, stop: int) -> Strip:
        cw = self.cell_width
        tokens = self.source.tokens(start, stop)
        offsets = self.source.offsets
        firsts = set(offsets[np.searchsorted(offsets, start):np.searchsorted(offsets, stop)].tolist())
        segments = []
        for i, token in enumerate(tokens):
            row = start + i
            style = CURSOR_STYLE if row == self.row else (START_STYLES if row in firsts else RULER_STYLES)[row % 2]
            text = token.replace("\n", "↵").replace(" ", "␣") if self.source.tokenizer == "char" else token
            segments.append(Segment(f"{text[:cw]:<{cw}}", style))
        return Strip(segments, (stop - start) * cw)

    def _line(self, line: int, start: int, stop: int) -> Strip:
        levels = self._levels(start, stop)  # (W, H)
        styles = self._styles
        upper = levels[:, 2 * line].astype(np.int32)  # (W,)
        if 2 * line + 1 < self.rnn_layer.hidden:
            lower = levels[:, 2 * line + 1].astype(np.int32)
        else:
            lower = np.full_like(upper, styles.blank)
        if self.unit // 2 == line and start <= self.row < stop:
            (upper if self.unit % 2 == 0 else lower)[self.row - start] = styles.cursor
        code = upper * styles.size + lower  # (W,)
        starts = np.flatnonzero(np.diff(code, prepend=-1))
        ends = np.append(starts[1:], len(code))
        cw = self.cell_width
        table = styles.table
        segments = [
            Segment(HALF * ((e - s) * cw), table[upper[s]][lower[s]])
            for s, e in zip(starts.tolist(), ends.tolist())
        ]
        return Strip(segments, len(code) * cw)
