"""Cutting a line to a view's width with an ellipsis, so that a cut never reads as the end of the text.

Every view that draws its own lines (the Line API) ends them with `clip`: a line wider than the
view loses its last cells to "…", a shorter one is padded to the width.
"""
from __future__ import annotations

from rich.segment import Segment
from rich.style import Style
from textual.strip import Strip

ELLIPSIS = "…"


def clip(segments: list[Segment], width: int, pad: Style | None = None) -> Strip:
    """``segments`` as a strip of exactly ``width`` cells: cut with "…" in the last cell, or padded with ``pad``."""
    strip = Strip(segments)
    if strip.cell_length <= width:
        return strip.extend_cell_length(width, pad)
    if width < 1:
        return Strip([], 0)
    kept = list(strip.crop(0, width - 1))
    return Strip([*kept, Segment(ELLIPSIS, kept[-1].style if kept else None)], width)
