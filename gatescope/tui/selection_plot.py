"""A line plot of the selected units over the visible tokens, against the threshold (LSTMVis's selection view).

LSTMVis draws each selected unit's value as a line along the text ("parallel coordinates"), with
the threshold as a horizontal rule, so one sees which units stay on over the span and where else
they rise. Here the lines are drawn in Braille dots (2 x 4 per terminal cell), on the heatmap's
columns (same cell width and gutter), the threshold as a dotted rule, the selected span shaded.
The y axis is the kind's range (0..1 for a gate, -1..1 for tanh-range values; the cell state c
from the window's extremes, at least -1..1), since the threshold applies to the recorded value.
"""
from __future__ import annotations

import numpy as np
from rich.segment import Segment
from rich.style import Style
from textual.strip import Strip
from textual.widget import Widget

from gatescope.tui.columns import Columns
from gatescope.tui.source import TraceSource

HEIGHT = 5  # terminal lines of plot
LINE = "#d0d0d0"
LINE_STYLE = Style(color=LINE)
SPAN_STYLE = Style(color=LINE, bgcolor="#3a3a00")
RULE_STYLE = Style(color="#ff5f5f")
RULE_SPAN_STYLE = Style(color="#ff5f5f", bgcolor="#3a3a00")
LABEL = Style(color="#8a8a8a", bgcolor="#121212")
# Braille dot bits by (row 0..3, column 0..1) within a cell (Unicode U+2800 block)
DOTS = np.array([[0x01, 0x08], [0x02, 0x10], [0x04, 0x20], [0x40, 0x80]], dtype=np.int64)


class SelectionPlot(Widget):
    """The selected units of one quantity over token rows start:stop, and the threshold."""

    def __init__(self, source: TraceSource, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.source = source
        self.quantity = ""
        self.units: tuple[int, ...] = ()
        self.threshold = 0.0
        self.span = (0, 0)
        self.start = self.stop = 0
        self.columns, self.indent = Columns(1, 1), 5
        self._rows: list[Strip] | None = None

    def show(self, quantity: str, units: tuple[int, ...], threshold: float, span: tuple[int, int],
             window: tuple[int, int], columns: Columns, indent: int) -> None:
        self.quantity, self.units, self.threshold, self.span = quantity, units, threshold, span
        self.start, self.stop = window
        self.columns, self.indent = columns, indent
        self._rows = None
        self.refresh()

    def get_content_height(self, container, viewport, width: int) -> int:
        return HEIGHT

    def axis(self, values: np.ndarray) -> tuple[float, float]:
        """The y range: the kind's scale, or for an unbounded kind (the cell state) the window's extremes
        (at least -1..1)."""
        scale = self.source.scale(self.quantity)
        if scale.range.bounded:
            return scale.low, scale.high
        extreme = max(float(np.nanmax(np.abs(values))) if np.isfinite(values).any() else 1.0, 1.0, abs(self.threshold))
        return -extreme, extreme

    def dots(self) -> tuple[np.ndarray, int]:
        """The plot as Braille cells: (HEIGHT, W) int codes (0 = empty) and the line holding the threshold."""
        edges = self.columns.edges(self.start, self.stop)  # (W+1,) each token's first cell
        width = int(edges[-1])
        canvas = np.zeros((HEIGHT * 4, width * 2), dtype=bool)  # (dots y, dots x), y = 0 at the top
        values = self.source.window(self.quantity, self.start, self.stop, units=list(self.units))  # (W, k)
        low, high = self.axis(values)
        span = high - low

        def to_y(v: np.ndarray) -> np.ndarray:
            return np.rint((1 - (np.clip(v, low, high) - low) / span) * (HEIGHT * 4 - 1)).astype(np.int64)

        per_token = np.diff(edges) * 2  # (W,) dot columns of each token
        xs = np.arange(width * 2)  # (X,) dot columns
        heights = np.arange(HEIGHT * 4)[:, None]  # (Y, 1) dot rows
        joins = edges[1:-1] * 2 - 1  # (W-1,) the last dot column of each token but the last
        for unit_values in values.T:  # (W,) per unit
            finite = np.isfinite(unit_values)
            ys = to_y(np.where(finite, unit_values, low))
            level = np.repeat(ys, per_token)  # (X,) each token's level across its columns
            shown = np.repeat(finite, per_token)
            canvas[level[shown], xs[shown]] = True
            both = finite[:-1] & finite[1:]  # join a token's level to the next one's
            low_y, high_y = np.minimum(ys[:-1], ys[1:]), np.maximum(ys[:-1], ys[1:])  # (W-1,)
            canvas[:, joins] |= (heights >= low_y) & (heights <= high_y) & both
        cells = canvas.reshape(HEIGHT, 4, width, 2)  # (line, dot row, cell, dot column)
        codes = (cells * DOTS[None, :, None, :]).sum((1, 3))  # (HEIGHT, W)
        rule = int(to_y(np.array([self.threshold]))[0]) // 4
        return codes, rule

    def render_line(self, y: int) -> Strip:
        width = self.size.width
        if not self.units or not self.quantity or self.stop <= self.start:
            return Strip.blank(width)
        if self._rows is None:
            self._rows = self._draw()
        return self._rows[y].crop_extend(0, width, None) if y < len(self._rows) else Strip.blank(width)

    def _draw(self) -> list[Strip]:
        codes, rule = self.dots()
        first, last = (self.columns.x(self.span[0]) - self.columns.x(self.start),
                       self.columns.x(self.span[1]) - self.columns.x(self.start))
        rows = []
        for y in range(HEIGHT):
            label = f"{self.threshold:g}" if y == rule else ("sel" if y == 0 else "")
            segments = [Segment(f"{label[: self.indent - 1]:>{self.indent - 1}} ", LABEL)]
            for x, code in enumerate(codes[y].tolist()):
                inside = first <= x < last
                if code == 0 and y == rule:
                    segments.append(Segment("┄", RULE_SPAN_STYLE if inside else RULE_STYLE))
                else:
                    segments.append(Segment(chr(0x2800 + code), SPAN_STYLE if inside else LINE_STYLE))
            rows.append(Strip(Segment.simplify(segments)))
        return rows
