"""Unit detail: every kind of the cursor's unit over the visible window, and its exact values.

One sparkline per kind (i f g o c h for an LSTM, r z n h for a GRU), on the heatmap's time
axis (same columns, same cell width), so a gate and the state it drives read together:
the view of Lakretz et al. 2019, Fig. 1 (c~, i, f, c, o of one unit across a sentence).
The first line gives the exact recorded values at the cursor.
"""
from __future__ import annotations

import math

import numpy as np
from rich.style import Style
from rich.text import Text
from textual.widget import Widget

from gatescope.tui.colors import SPARK
from gatescope.tui.source import Layer, TraceSource

LABEL = Style(color="#8a8a8a")
CURSOR = Style(reverse=True)


class UnitDetail(Widget):
    """Sparklines of all kinds of one unit over token rows start:stop, aligned with the heatmap."""

    def __init__(self, source: TraceSource, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.source = source
        self.rnn_layer: Layer | None = None
        self.unit = self.row = self.start = self.stop = 0
        self.cell_width = 1
        self.indent = 0

    def show(self, layer: Layer, unit: int, row: int, window: tuple[int, int], cell_width: int, indent: int) -> None:
        self.rnn_layer, self.unit, self.row = layer, unit, row
        self.start, self.stop = window
        self.cell_width, self.indent = cell_width, indent
        self.refresh(layout=True)

    def values_at_cursor(self) -> dict[str, float]:
        """kind -> the exact value of the unit at the cursor's row."""
        assert self.rnn_layer is not None
        return {k: self.source.value(self.rnn_layer.name(k), self.row, self.unit) for k in self.rnn_layer.kinds}

    def get_content_height(self, container, viewport, width: int) -> int:  # noqa: ANN001 (Textual's signature)
        return 1 + (len(self.rnn_layer.kinds) if self.rnn_layer else 0)

    def render(self) -> Text:
        if self.rnn_layer is None:
            return Text("")
        exact = "  ".join(f"{k} {_format(v)}" for k, v in self.values_at_cursor().items())
        token = self.source.tokens(self.row, self.row + 1)[0]
        text = Text(no_wrap=True, overflow="crop")
        text.append(f"unit {self.unit}  row {self.row} {token!r}   ", LABEL)
        text.append(exact)
        for kind in self.rnn_layer.kinds:
            text.append("\n")
            text.append(f"{kind:>{self.indent - 1}} ", LABEL)
            self._sparkline(text, kind)
        return text

    def _sparkline(self, text: Text, kind: str) -> None:
        scale = self.source.scales[kind]
        values = self.source.window(self.rnn_layer.name(kind), self.start, self.stop)[:, self.unit]  # (W,)
        with np.errstate(invalid="ignore"):
            heights = np.minimum(scale.unit_interval(values) * len(SPARK), len(SPARK) - 1)
        levels = scale.levels(values)
        for i, height in enumerate(heights.tolist()):
            glyph = " " if math.isnan(height) else SPARK[int(height)]
            style = scale.fg_styles[levels[i]]
            if self.start + i == self.row:
                style += CURSOR
            text.append(glyph * self.cell_width, style)


def _format(value: float) -> str:
    return "nan" if math.isnan(value) else f"{value:+.4f}"
