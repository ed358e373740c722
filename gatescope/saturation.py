"""Gate saturation, defined once: for the analysis layer, `gatescope inspect` and the browser alike.

Karpathy, Johnson & Fei-Fei 2015 ("Visualizing and understanding recurrent networks", Fig. 3):
a gate is *left-saturated* when below 0.1 and *right-saturated* when above 0.9; a unit's
saturation is the fraction of time it spends there. Every kind is read on 0..1 through its range
(gatescope.kinds: a kind's own, or its range in a cell type, `CellType.range_of`), placed along it:

- a sigmoid gate (i f o, r z) as it is; a hard sigmoid's too (0..1);
- a tanh-range value (g n m h) as (x + 1) / 2;
- an unbounded value through tanh first: the LSTM cell state c as (tanh(c) + 1) / 2, the squashed cell
  the output gate multiplies (h = o * tanh(c)), which is also the value the browser colours; a relu
  RNN's h (0..inf) as tanh(h).

NaN values are neither saturated nor counted: fractions are over a unit's non-NaN values, and a
unit with none has NaN fractions (never 0, which would read as "never saturated"). An infinite
cell state counts as saturated (tanh(±inf) = ±1).

numpy only (the browser never imports torch): torch callers pass ``tensor.numpy()``.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from gatescope.kinds import Range, kind_range

LOW = 0.1  # left-saturated below this
HIGH = 0.9  # right-saturated above this


def on_unit_interval(values: np.ndarray, kind: str, value_range: Range | None = None) -> np.ndarray:
    """``values`` of ``kind`` read on 0..1 (see the module docstring), as float64; ``value_range``: the
    kind's range in its cell type (default: the kind's own)."""
    x = np.asarray(values, dtype=np.float64)
    value_range = kind_range(kind) if value_range is None else value_range
    if not value_range.bounded:
        x = np.tanh(x)
    shown = value_range.shown
    if shown == Range(0.0, 1.0):
        return x
    return (x - shown.low) / ((shown.high - shown.low) or 1.0)


@dataclass
class Saturation:
    """Per-unit counts over the rows seen so far: left- and right-saturated, and counted (non-NaN)."""

    left: np.ndarray  # (H,)
    right: np.ndarray  # (H,)
    counted: np.ndarray  # (H,)

    @classmethod
    def of(cls, block: np.ndarray, kind: str, low: float = LOW, high: float = HIGH,
           value_range: Range | None = None) -> Saturation:
        """The counts of one block of rows (N, H) of ``kind`` (``value_range``: as in `on_unit_interval`)."""
        x = on_unit_interval(block, kind, value_range)  # (N, H)
        return cls((x < low).sum(0), (x > high).sum(0), (~np.isnan(x)).sum(0))

    def __add__(self, other: Saturation) -> Saturation:
        return Saturation(self.left + other.left, self.right + other.right, self.counted + other.counted)

    def _fraction(self, count: np.ndarray) -> np.ndarray:
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(self.counted > 0, count / self.counted, np.nan)

    @property
    def left_fraction(self) -> np.ndarray:
        """Fraction of each unit's counted values below ``low``: (H,), NaN where none was counted."""
        return self._fraction(self.left)

    @property
    def right_fraction(self) -> np.ndarray:
        """Fraction of each unit's counted values above ``high``: (H,), NaN where none was counted."""
        return self._fraction(self.right)

    @property
    def fraction(self) -> np.ndarray:
        """Fraction of each unit's counted values saturated either way: (H,)."""
        return self._fraction(self.left + self.right)


def saturation(
    blocks: Iterable[np.ndarray], kind: str, hidden: int, low: float = LOW, high: float = HIGH,
    value_range: Range | None = None,
) -> Saturation:
    """The counts over every block of rows (each (N_b, hidden)) of one quantity of ``kind``, streamed."""
    total = Saturation(*(np.zeros(hidden, dtype=np.int64) for _ in range(3)))
    for block in blocks:
        total = total + Saturation.of(block, kind, low, high, value_range)
    return total
