"""Exports from the browser: the screen as SVG, a heatmap selection as a PNG figure.

The SVG is Textual's own screenshot (`App.export_screenshot`); the PNG is drawn with
matplotlib (imported here, lazily, only when a figure is asked for) on the same scales as
the terminal (viridis 0..1 for gates, RdBu -1..1 for tanh-range values, tanh(c) for c).
Both are written all or nothing (gatescope.files.atomic_write).
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from gatescope.errors import GatescopeError
from gatescope.files import atomic_write
from gatescope.tui.colors import Scale

if TYPE_CHECKING:
    from matplotlib.figure import Figure

MAX_TICKS = 60  # token labels on the x axis


def save_svg(svg: str, path: Path) -> Path:
    """Write an SVG screenshot (the text of `App.export_screenshot()`) to ``path``."""
    return atomic_write(path, lambda tmp: Path(tmp).write_text(svg, encoding="utf-8"))


def heatmap_figure(
    values: np.ndarray,  # (T, U) rows x units, as recorded
    kind: str,
    first_unit: int,
    tokens: list[str],
    title: str,
) -> Figure:
    """Units (y) x tokens (x) of one quantity on the browser's colour scale, as a matplotlib Figure."""
    from matplotlib.figure import Figure

    if values.size == 0:
        raise GatescopeError("nothing to export: the selection is empty")
    scale = Scale(kind)
    rows, units = values.shape
    fig = Figure(figsize=(min(max(rows * 0.18, 4), 24), min(max(units * 0.12, 2.5), 16)), layout="constrained")
    ax = fig.add_subplot()
    image = ax.imshow(
        scale.transform(values.T),  # (U, T)
        cmap="viridis" if scale.sequential else "RdBu_r",
        vmin=scale.low, vmax=scale.high, aspect="auto", interpolation="nearest",
        extent=(-0.5, rows - 0.5, first_unit + units - 0.5, first_unit - 0.5),
    )
    step = max(1, -(-rows // MAX_TICKS))
    ax.set_xticks(range(0, rows, step), [t.replace("\n", "↵") for t in tokens[::step]], rotation=90, fontsize=7)
    ax.set_ylabel("unit")
    ax.set_title(title, fontsize=9)
    fig.colorbar(image, ax=ax, label="tanh(c)" if kind == "c" else kind)
    return fig


def save_heatmap_png(path: Path, values: np.ndarray, kind: str, first_unit: int, tokens: list[str], title: str) -> Path:
    """`heatmap_figure` written to ``path`` as PNG (150 dpi), atomically."""
    fig = heatmap_figure(values, kind, first_unit, tokens, title)
    return atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=150))
