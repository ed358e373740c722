"""Exports from the browser: the screen as SVG, a heatmap selection as a PNG figure.

The SVG is Textual's own screenshot (`App.export_screenshot`), with a chain of monospace fonts
after Textual's web font, so that it renders offline (no font download) without its letters
shifting; the PNG is drawn with matplotlib (imported here, lazily, only when a figure is asked
for) on the same scales as the terminal (viridis 0..1 for gates, RdBu -1..1 for tanh-range
values, tanh(c) for c), with the cursor's unit and the sequence boundaries marked. The PNG's
file name and title give the same ranges, first and last inclusive; a screenshot is named for the view and
its cursor (`screenshot_name`). Both are written all or
nothing (gatescope.files.atomic_write).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from gatescope.display.plot_text import plain
from gatescope.errors import GatescopeError
from gatescope.files import atomic_write
from gatescope.tui.colors import Scale

if TYPE_CHECKING:
    from matplotlib.figure import Figure

MAX_TICKS = 60  # token labels on the x axis
MONOSPACE = '"Fira Code", "DejaVu Sans Mono", "Liberation Mono", Menlo, Consolas, "Courier New", monospace'
CURSOR_COLOR = "#ff00ff"  # as in the terminal


def with_font_fallback(svg: str) -> str:
    """Textual's screenshot with its text's font (Fira Code, downloaded) followed by common local monospace fonts.

    The @font-face rules that name Fira Code are kept as they are; only the text's font-family changes.
    """
    return re.sub(r"font-family:\s*Fira Code,\s*monospace;", f"font-family: {MONOSPACE};", svg)


def screenshot_name(quantity: str, unit: int, row: int | None = None, pair: tuple[int, int] | None = None) -> str:
    """``gatescope-rnn.l0.fwd.c-u12-r4.svg`` for the main view at its cursor; the split view of sequences A and
    B (``pair``) is named for them, ``gatescope-rnn.l0.fwd.c-u12-compare-s0-s1.svg``, so that neither replaces
    the other's file."""
    where = f"compare-s{pair[0]}-s{pair[1]}" if pair is not None else f"r{row}"
    return f"gatescope-{quantity}-u{unit}-{where}.svg"


def save_svg(svg: str, path: Path) -> Path:
    """Write an SVG screenshot (the text of `App.export_screenshot()`) to ``path``, with the font fallback."""
    text = with_font_fallback(svg)
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


@dataclass(frozen=True)
class HeatmapFigure:
    """What a PNG export shows: units (in order) x token rows from ``start``, the cursor and boundaries."""

    name: str  # the quantity, e.g. rnn.l0.fwd.c
    kind: str
    units: list[int]  # the rows of the figure, top to bottom
    start: int  # first token row
    tokens: list[str]
    boundaries: list[int]  # columns (0-based, within the figure) where a sequence starts
    cursor_unit: int
    cursor_row: int

    @property
    def stop(self) -> int:
        return self.start + len(self.tokens)

    def _ranges(self) -> tuple[str, str]:
        units = self.units
        contiguous = units == list(range(units[0], units[-1] + 1))
        unit_text = f"{units[0]}-{units[-1]}" if contiguous else f"{len(units)} selected"
        return unit_text, f"{self.start}-{self.stop - 1}"

    @property
    def file_name(self) -> str:
        """``gatescope-rnn.l0.fwd.c-u0-63-r100-180.png``: the same inclusive ranges as the title."""
        units, rows = self._ranges()
        return f"gatescope-{self.name}-u{units.replace(' ', '')}-r{rows}.png"

    @property
    def title(self) -> str:
        units, rows = self._ranges()
        return f"{self.name}, units {units}, rows {rows} (cursor: unit {self.cursor_unit}, row {self.cursor_row})"


def heatmap_figure(values: np.ndarray, figure: HeatmapFigure) -> Figure:
    """``values`` (T, U) on the browser's colour scale as a matplotlib Figure: units (y) x tokens (x)."""
    from matplotlib.figure import Figure

    if values.size == 0:
        raise GatescopeError("nothing to export: the selection is empty")
    scale = Scale(figure.kind)
    rows, units = values.shape
    fig = Figure(figsize=(min(max(rows * 0.18, 4), 24), min(max(units * 0.12, 2.5), 16)), layout="constrained")
    ax = fig.add_subplot()
    image = ax.imshow(
        scale.transform(values.T),  # (U, T)
        cmap="viridis" if scale.sequential else "RdBu_r",
        vmin=scale.low, vmax=scale.high, aspect="auto", interpolation="nearest",
        extent=(-0.5, rows - 0.5, units - 0.5, -0.5),
    )
    step = max(1, -(-rows // MAX_TICKS))
    labels = [plain(t.replace("\n", "↵")) for t in figure.tokens[::step]]
    ax.set_xticks(range(0, rows, step), labels, rotation=90, fontsize=7)
    ustep = max(1, -(-units // 40))
    ax.set_yticks(range(0, units, ustep), [str(u) for u in figure.units[::ustep]], fontsize=7)
    for column in figure.boundaries:
        ax.axvline(column - 0.5, color="white", linewidth=1.2)
    if figure.cursor_unit in figure.units:
        y = figure.units.index(figure.cursor_unit)
        ax.add_patch(_rectangle(-0.5, y - 0.5, rows, 1))
    if figure.start <= figure.cursor_row < figure.stop:
        ax.axvline(figure.cursor_row - figure.start, color=CURSOR_COLOR, linewidth=0.8, linestyle=":")
    ax.set_ylabel("unit")
    ax.set_title(plain(figure.title), fontsize=9, wrap=True)  # a few tokens make a figure narrower than its title
    fig.colorbar(image, ax=ax, label="tanh(c)" if figure.kind == "c" else figure.kind)
    return fig


def _rectangle(x: float, y: float, width: float, height: float):
    from matplotlib.patches import Rectangle

    return Rectangle((x, y), width, height, fill=False, edgecolor=CURSOR_COLOR, linewidth=1.0)


def save_heatmap_png(path: Path, values: np.ndarray, figure: HeatmapFigure) -> Path:
    """`heatmap_figure` written to ``path`` as PNG (150 dpi), atomically."""
    fig = heatmap_figure(values, figure)
    return atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=150))
