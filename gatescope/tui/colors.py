"""Colour scales for gate values: quantise once with numpy, then look styles up in a table.

Sigmoid gates (i f o r z) live in 0..1 and use a sequential scale (viridis, the matplotlib
default, perceptually uniform); tanh-range values (g m n h) use a diverging scale (RdBu, blue
for negative, red for positive, as in Karpathy et al. 2015's cell visualisations). The cell
state c is unbounded, so it is coloured by tanh(c): the value it contributes to h.
A heatmap line packs two units into one row with "▀" (foreground = upper unit, background =
lower unit), so the styles are precomputed for every (upper level, lower level) pair.
"""
from __future__ import annotations

import numpy as np
from rich.color import Color
from rich.style import Style

from gatescope.names import SIGMOID_KINDS

# viridis, 16 samples (matplotlib's table at i/15)
SEQUENTIAL = (
    "#440154", "#481a6c", "#472f7d", "#414487", "#39568c", "#31688e", "#2a788e", "#23888e",
    "#1f988b", "#22a884", "#35b779", "#54c568", "#7ad151", "#a5db36", "#d2e21b", "#fde725",
)
# RdBu reversed (negative blue, zero near white, positive red), 17 samples so 0 has its own level
DIVERGING = (
    "#053061", "#1a4c8a", "#2166ac", "#3a87bd", "#4393c3", "#74add1", "#92c5de", "#c2ddec",
    "#f2f2f2", "#fbd0b9", "#f4a582", "#e58267", "#d6604d", "#c13b3b", "#b2182b", "#8a0b25",
    "#67001f",
)
NAN_COLOR = "#5a5a5a"  # missing values (NaN): grey, on neither scale
CURSOR_COLOR = "#ff00ff"  # the cursor's half cell: magenta, on neither scale
BLANK_COLOR = "#000000"  # below the last unit when the hidden size is odd
SPARK = "▁▂▃▄▅▆▇█"


class Scale:
    """A colour scale for one kind: `levels` maps values to small ints, `colors[level]` is the colour."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.sequential = kind in SIGMOID_KINDS
        self.colors = (SEQUENTIAL if self.sequential else DIVERGING) + (NAN_COLOR,)
        self.nan_level = len(self.colors) - 1
        self.low, self.high = (0.0, 1.0) if self.sequential else (-1.0, 1.0)
        self.text_styles = tuple(_on_background(color) for color in self.colors)
        self.fg_styles = tuple(Style(color=color) for color in self.colors)

    def transform(self, values: np.ndarray) -> np.ndarray:
        """The values as coloured: tanh(c) for the cell state, the values themselves otherwise."""
        return np.tanh(values) if self.kind == "c" else values

    def unit_interval(self, values: np.ndarray) -> np.ndarray:
        """Transformed values mapped onto 0..1 along the scale, clipped; NaN stays NaN."""
        scaled = (self.transform(values) - self.low) / (self.high - self.low)
        return np.clip(scaled, 0.0, 1.0)

    def levels(self, values: np.ndarray) -> np.ndarray:
        """Quantise float values (any shape) to uint8 levels; NaN -> `nan_level`."""
        n = self.nan_level  # number of colour levels
        with np.errstate(invalid="ignore"):
            scaled = self.unit_interval(values)
            levels = np.minimum(np.floor(scaled * n), n - 1) if self.sequential else np.rint(scaled * (n - 1))
        return np.where(np.isnan(scaled), self.nan_level, levels).astype(np.uint8)



def _on_background(color: str) -> Style:
    """``color`` as background with a readable foreground (black on light colours, else white)."""
    r, g, b = Color.parse(color).get_truecolor()
    light = 0.299 * r + 0.587 * g + 0.114 * b > 140
    return Style(color="black" if light else "white", bgcolor=color)


class PairStyles:
    """Styles for "▀" cells: ``table[top][bottom]``, plus the cursor and blank pseudo-levels."""

    def __init__(self, scale: Scale) -> None:
        colors = list(scale.colors) + [CURSOR_COLOR, BLANK_COLOR]
        self.cursor = len(colors) - 2
        self.blank = len(colors) - 1
        self.size = len(colors)
        parsed = [Color.parse(c) for c in colors]
        self.table = [[Style(color=top, bgcolor=bottom) for bottom in parsed] for top in parsed]
