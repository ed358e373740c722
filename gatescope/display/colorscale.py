"""Colour scales for recorded values: value -> colour, one scale per kind; shared by the browser and the notebook.

Each kind's range comes from the registry (gatescope.kinds: the kind's own, or its range in a cell type).
Values that cannot be negative (sigmoid gates i f o r z in 0..1, a relu RNN's h) use a sequential scale
(viridis, the matplotlib default, perceptually uniform); signed values (tanh-range g m n h) a diverging
scale (RdBu, blue for negative, red for positive, as in Karpathy et al. 2015's cell visualisations).
An unbounded kind (the cell state c) is coloured by tanh(c), the value it contributes to h. NaN is grey,
on neither scale.

Values are quantised once with numpy into small integer levels, and ``colors[level]`` is the colour,
so a renderer looks colours up in a table. Imports neither torch nor Textual nor rich.
"""
from __future__ import annotations

import numpy as np

from gatescope.errors import GatescopeError
from gatescope.kinds import KINDS, Range, kind_range
from gatescope.saturation import on_unit_interval

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


class ColorScale:
    """The colour scale of one kind: `levels` maps values to small ints, `colors[level]` is the colour."""

    def __init__(self, kind: str, value_range: Range | None = None) -> None:
        """value_range: the kind's range in its cell type (`gatescope.kinds.CellType.range_of`); default the kind's own."""
        if kind not in KINDS:
            raise GatescopeError(f"no colour scale for kind {kind!r}: not one of {', '.join(KINDS)}")
        self.kind = kind
        self.range = kind_range(kind) if value_range is None else value_range
        self.low, self.high = self.range.shown.low, self.range.shown.high
        self.sequential = self.low >= 0
        self.colors: tuple[str, ...] = (SEQUENTIAL if self.sequential else DIVERGING) + (NAN_COLOR,)
        self.nan_level = len(self.colors) - 1

    @property
    def label(self) -> str:
        """What the scale shows: ``tanh(c)`` for an unbounded kind (the cell state), the kind itself otherwise."""
        return self.kind if self.range.bounded else f"tanh({self.kind})"

    def transform(self, values: np.ndarray) -> np.ndarray:
        """The values as coloured: tanh of an unbounded kind (the cell state), the values themselves otherwise."""
        return values if self.range.bounded else np.tanh(values)

    def unit_interval(self, values: np.ndarray) -> np.ndarray:
        """Values mapped onto 0..1 along the scale (gatescope.saturation.on_unit_interval), clipped; NaN stays NaN."""
        return np.clip(on_unit_interval(values, self.kind, self.range), 0.0, 1.0)

    def levels(self, values: np.ndarray) -> np.ndarray:
        """Quantise float values (any shape) to uint8 levels; NaN -> `nan_level`."""
        n = self.nan_level  # number of colour levels
        with np.errstate(invalid="ignore"):
            scaled = self.unit_interval(values)
            levels = np.minimum(np.floor(scaled * n), n - 1) if self.sequential else np.rint(scaled * (n - 1))
        return np.where(np.isnan(scaled), self.nan_level, levels).astype(np.uint8)

    def hex_colors(self, values: np.ndarray) -> list[str]:
        """The colour of each value (flattened), as ``#rrggbb``."""
        return [self.colors[level] for level in self.levels(np.asarray(values, dtype=np.float32)).reshape(-1)]


def signed_colors(values: np.ndarray) -> list[str]:
    """Each value on the diverging scale, symmetric about 0 and reaching its ends at the largest |value|
    (contributions and attributions, whose range is the data's)."""
    values = np.asarray(values, dtype=np.float64).reshape(-1)
    top = float(np.abs(values).max()) if values.size else 0.0
    scaled = np.zeros_like(values) if top == 0 else values / top  # -1..1
    levels = np.rint((scaled + 1) / 2 * (len(DIVERGING) - 1)).astype(int)
    return [DIVERGING[level] for level in levels]


def is_light(color: str) -> bool:
    """Whether text on ``color`` (``#rrggbb``) reads better in black than in white (ITU-R 601 luma > 140)."""
    r, g, b = (int(color[i:i + 2], 16) for i in (1, 3, 5))
    return 0.299 * r + 0.587 * g + 0.114 * b > 140
