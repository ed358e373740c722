"""Where each token row sits across the screen: the columns the heatmap and the views under it share.

A trace longer than the view gets columns of one width and scrolls; one shorter than the view is
spread over all of it, its columns differing by at most one cell (as a justified line of text
spreads its spaces: row r starts at cell floor(r * total / count)), so no band of the screen is
left blank. Every view under the heatmap draws a token over the cells these columns give it.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Columns:
    """``count`` token rows over ``total`` cells (total >= count), the widths as even as they can be."""

    count: int
    total: int

    @classmethod
    def uniform(cls, count: int, width: int) -> Columns:
        return cls(max(count, 1), max(count, 1) * width)

    @property
    def narrowest(self) -> int:
        return self.total // self.count

    def x(self, row: int) -> int:
        """The first cell of token row ``row`` (``count``: the cell after the last column)."""
        return row * self.total // self.count

    def row_at(self, x: int) -> int:
        """The token row whose column holds cell ``x`` (clamped to the rows)."""
        return min(max(((x + 1) * self.count - 1) // self.total, 0), self.count - 1)

    def edges(self, start: int, stop: int) -> np.ndarray:
        """(stop - start + 1,) the cells where rows start..stop begin, counted from row ``start``'s first cell."""
        rows = np.arange(start, stop + 1, dtype=np.int64)
        cells = rows * (self.total // self.count) if self.total % self.count == 0 else rows * self.total // self.count
        return cells - cells[0]

    def widths(self, start: int, stop: int) -> np.ndarray:
        """(stop - start,) the width of each column of rows start:stop."""
        return np.diff(self.edges(start, stop))
