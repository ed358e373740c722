"""The browser's styles for the colour scales: rich styles looked up by colour level.

The scales themselves (value -> level -> colour, one per kind, from the kind registry) live in
gatescope.display.colorscale, shared with the notebook display; this module adds the terminal styles.
A heatmap line packs two units into one row with "▀" (foreground = upper unit, background =
lower unit), so the styles are precomputed for every (upper level, lower level) pair.
"""
from __future__ import annotations

from rich.color import Color
from rich.style import Style

from gatescope.display.colorscale import DIVERGING, NAN_COLOR, SEQUENTIAL, ColorScale, is_light  # noqa: F401
from gatescope.kinds import Range

CURSOR_COLOR = "#ff00ff"  # the cursor's half cell: magenta, on neither scale
BLANK_COLOR = "#000000"  # below the last unit when the hidden size is odd
SPARK = "▁▂▃▄▅▆▇█"


class Scale(ColorScale):
    """A kind's colour scale (gatescope.display.colorscale) with its rich styles: on a background, as foreground."""

    def __init__(self, kind: str, value_range: Range | None = None) -> None:
        super().__init__(kind, value_range)
        self.text_styles = tuple(_on_background(color) for color in self.colors)
        self.fg_styles = tuple(Style(color=color) for color in self.colors)


def contribution_styles(values: list[float]) -> list[Style]:
    """Text styles of contributions (a decomposition's), on the diverging scale symmetric about 0."""
    from gatescope.display.colorscale import signed_colors

    return [_on_background(color) for color in signed_colors(values)]


def _on_background(color: str) -> Style:
    """``color`` as background with a readable foreground (black on light colours, else white)."""
    return Style(color="black" if is_light(color) else "white", bgcolor=color)


class PairStyles:
    """Styles for "▀" cells: ``table[top][bottom]``, plus the cursor and blank pseudo-levels."""

    def __init__(self, scale: Scale) -> None:
        colors = list(scale.colors) + [CURSOR_COLOR, BLANK_COLOR]
        self.cursor = len(colors) - 2
        self.blank = len(colors) - 1
        self.size = len(colors)
        parsed = [Color.parse(c) for c in colors]
        self.table = [[Style(color=top, bgcolor=bottom) for bottom in parsed] for top in parsed]
