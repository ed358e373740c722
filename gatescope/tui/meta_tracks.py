"""Meta tracks: the trace's annotations as rows under the heatmap, on its columns (LSTMVis's meta tracks).

One line per `gatescope.tui.features.Track` over the heatmap's visible token rows, with the same
cell width and gutter, so an annotation lines up with the units above it: binary features as
filled / empty cells, categorical ones as a colour per value, continuous ones on a colour scale
from their minimum to their maximum. The last line is the legend. Drawn with the Line API.
"""
from __future__ import annotations

import numpy as np
from rich.segment import Segment
from rich.style import Style
from textual.strip import Strip
from textual.widget import Widget

from gatescope.tui.clip import clip
from gatescope.tui.colors import SEQUENTIAL
from gatescope.tui.columns import Columns
from gatescope.tui.features import Track

LABEL = Style(color="#8a8a8a", bgcolor="#121212")
LEGEND = Style(color="#8a8a8a")
ON = Style(color="#5fafff")
OFF = Style(color="#4e4e4e")
# matplotlib's tab10: a colour per category
CATEGORICAL = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
               "#bcbd22", "#17becf")
CATEGORY_STYLES = tuple(Style(bgcolor=c) for c in CATEGORICAL)
SCALE_STYLES = tuple(Style(color=c) for c in SEQUENTIAL)


class MetaTracks(Widget):
    """A row per annotation over token rows start:stop, aligned with the heatmap, and a legend."""

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.tracks: list[Track] = []
        self.start = self.stop = 0
        self.columns = Columns(1, 1)
        self.indent = 5

    def set_tracks(self, tracks: list[Track]) -> None:
        self.tracks = tracks
        self.display = bool(tracks)
        self.refresh(layout=True)

    def show(self, window: tuple[int, int], columns: Columns, indent: int) -> None:
        self.start, self.stop = window
        self.columns, self.indent = columns, indent
        self.refresh()

    def get_content_height(self, container, viewport, width: int) -> int:
        return len(self.tracks) + 1 if self.tracks else 0

    def render_line(self, y: int) -> Strip:
        width = self.size.width
        if y > len(self.tracks) or not self.tracks:
            return Strip.blank(width)
        if y == len(self.tracks):
            return clip(self._legend(), width)
        track = self.tracks[y]
        label = Segment(f"{track.name[: self.indent - 1]:>{self.indent - 1}} ", LABEL)
        return Strip([label, *self._cells(track)]).crop_extend(0, width, None)

    def cells(self, track: Track) -> list[tuple[str, Style]]:
        """(glyph, style) for each visible token row of ``track``: what is drawn, one entry per token."""
        values = track.values[self.start:self.stop]  # (W,)
        if track.shape == "binary":
            on = track.categories[-1]
            return [(" ", Style()) if np.isnan(v) else ("█", ON) if v == on else ("·", OFF) for v in values.tolist()]
        if track.shape == "categorical":
            return [(" ", Style()) if c < 0 else (" ", CATEGORY_STYLES[c % len(CATEGORY_STYLES)])
                    for c in track.category(values).tolist()]
        span = track.high - track.low or 1.0
        with np.errstate(invalid="ignore"):
            levels = np.minimum(((values - track.low) / span * len(SCALE_STYLES)), len(SCALE_STYLES) - 1)
        return [(" ", Style()) if np.isnan(v) else ("█", SCALE_STYLES[int(v)]) for v in levels.tolist()]

    def _cells(self, track: Track) -> list[Segment]:
        segments: list[Segment] = []
        widths = self.columns.widths(self.start, self.stop).tolist()
        for (glyph, style), width in zip(self.cells(track), widths):
            if segments and segments[-1].style == style and segments[-1].text[0] == glyph:
                segments[-1] = Segment(segments[-1].text + glyph * width, style)
            else:
                segments.append(Segment(glyph * width, style))
        return segments

    def _legend(self) -> list[Segment]:
        segments = [Segment(" " * self.indent)]
        for track in self.tracks:
            segments.append(Segment(f"{track.name} ", LEGEND))
            if track.shape == "binary":
                low, high = track.labels
                segments += [Segment("█", ON), Segment(f" {high} ", LEGEND), Segment("·", OFF), Segment(f" {low}  ", LEGEND)]
            elif track.shape == "categorical":
                for i, label in enumerate(track.labels):
                    segments += [Segment(" ", CATEGORY_STYLES[i % len(CATEGORY_STYLES)]), Segment(f"{label} ", LEGEND)]
                segments.append(Segment(" "))
            else:
                segments += [Segment(f"{track.low:.3g} ", LEGEND), *(Segment("█", s) for s in SCALE_STYLES[::3]),
                             Segment(f" {track.high:.3g}  ", LEGEND)]
        return segments
