"""Unit detail: every kind of the cursor's unit over the visible window, and its exact values.

One sparkline per kind (i f g o c h for an LSTM, r z n h for a GRU), on the heatmap's time
axis (same columns, same cell width), so a gate and the state it drives read together:
the view of Lakretz et al. 2019, Fig. 1 (c~, i, f, c, o of one unit across a sentence).
The first line gives the exact recorded values at the cursor. Drawn with the Line API
(`render_line` -> `Strip`), one run-length segment per run of equal glyph and colour.
Kinds whose rows are not cached yet are drawn as "…" until the app's reader thread has
fetched them (a jump across a memory-mapped trace reads from disk), so the heatmap never
waits for them.
"""
from __future__ import annotations

import math

import numpy as np
from rich.segment import Segment
from rich.style import Style
from textual.strip import Strip
from textual.widget import Widget

from gatescope.tui.clip import clip
from gatescope.tui.colors import SPARK
from gatescope.tui.columns import Columns
from gatescope.tui.source import Layer, TraceSource

LABEL = Style(color="#8a8a8a")
VALUE = Style(color="#e4e4e4", bold=True)
CURSOR = Style(reverse=True)


class UnitDetail(Widget):
    """Sparklines of all kinds of one unit over token rows start:stop, aligned with the heatmap."""

    def __init__(self, source: TraceSource, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.source = source
        self.rnn_layer: Layer | None = None
        self.unit = self.row = self.start = self.stop = 0
        self.columns = Columns(1, 1)
        self.indent = 0

    def show(self, layer: Layer, unit: int, row: int, window: tuple[int, int], columns: Columns, indent: int) -> None:
        relayout = layer != self.rnn_layer  # the height is one line per kind
        self.rnn_layer, self.unit, self.row = layer, unit, row
        self.start, self.stop = window
        self.columns, self.indent = columns, indent
        self.refresh(layout=relayout)

    def _ready(self, kind: str, start: int, stop: int) -> bool:
        return not self.source.missing([self.rnn_layer.name(kind)], start, stop)

    def values_at_cursor(self) -> dict[str, float | None]:
        """kind -> the exact value of the unit at the cursor's row (None while it is being read)."""
        assert self.rnn_layer is not None
        return {
            k: self.source.value(self.rnn_layer.name(k), self.row, self.unit)
            if self._ready(k, self.row, self.row + 1) else None
            for k in self.rnn_layer.kinds
        }

    def get_content_height(self, container, viewport, width: int) -> int:
        return 1 + (len(self.rnn_layer.kinds) if self.rnn_layer else 0)

    def render_line(self, y: int) -> Strip:
        width = self.size.width
        if self.rnn_layer is None or y > len(self.rnn_layer.kinds):
            return Strip.blank(width)
        if y == 0:
            token = self.source.tokens(self.row, self.row + 1)[0]
            segments = [Segment(f"unit {self.unit} {token!r} ", LABEL)]
            for kind, value in self.values_at_cursor().items():
                segments += [Segment(f" {kind} ", LABEL), Segment(_format(value), VALUE)]
            return clip(segments, width)
        else:
            kind = self.rnn_layer.kinds[y - 1]
            segments = [Segment(f"{kind:>{self.indent - 1}} ", LABEL)]
            segments += self._sparkline(kind) if self._ready(kind, self.start, self.stop) else [Segment("…", LABEL)]
        return Strip(segments).crop_extend(0, width, None)

    def _sparkline(self, kind: str) -> list[Segment]:
        scale = self.source.scale(self.rnn_layer.name(kind))
        values = self.source.column(self.rnn_layer.name(kind), self.start, self.stop, self.unit)  # (W,)
        with np.errstate(invalid="ignore"):
            heights = np.minimum(scale.unit_interval(values) * len(SPARK), len(SPARK) - 1)
        heights = np.where(np.isnan(heights), -1, heights).astype(np.int64)  # -1: NaN, drawn blank
        levels = scale.levels(values)
        code = heights * 256 + levels  # (W,) equal code -> equal glyph and colour
        cursor = self.row - self.start
        if 0 <= cursor < len(code):
            code[cursor] = -2  # a run of its own
        starts = np.flatnonzero(np.diff(code, prepend=-3))
        ends = np.append(starts[1:], len(code))
        edges = self.columns.edges(self.start, self.stop).tolist()
        segments = []
        for s, e in zip(starts.tolist(), ends.tolist()):
            glyph = " " if heights[s] < 0 else SPARK[heights[s]]
            style = scale.fg_styles[levels[s]] + (CURSOR if s == cursor else Style())
            segments.append(Segment(glyph * (edges[e] - edges[s]), style))
        return segments


def _format(value: float | None) -> str:
    if value is None:
        return "…"
    return "nan" if math.isnan(value) else f"{value:+.4f}"
