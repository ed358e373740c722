"""Units x tokens: a heatmap of chosen units over some sequences, as in LSTMVis (Strobelt et al. 2018).

One row per unit, each on its kind's colour scale (gatescope.display.colorscale: viridis 0..1 for gates, RdBu
-1..1 for tanh-range values, tanh(c) for the cell state, NaN grey), one column per token; sequences
side by side with a gap; every cell's hover title gives the unit, the token and the exact value.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from gatescope.display import svg
from gatescope.display.colorscale import ColorScale
from gatescope.display.figure import Figure
from gatescope.display.selection import Span, read
from gatescope.kinds import described_range
from gatescope.names import format_unit, parse_name

MARGIN = svg.MARGIN
CELL_HEIGHT = 14
GAP = 6  # px between sequences
MAX_WIDTH = 960  # px of cells, before they shrink to MIN_CELL
MIN_CELL, MAX_CELL = 3.0, 16.0
LABELED_CELL = 10.0  # cells at least this wide get their token written under the column


class Heatmap(Figure):
    """`gatescope.show(trace, units=[...])`: ``values[k]`` is (U, tokens of ``spans[k]``) float32, rows as ``units``."""

    def __init__(self, trace: Any, units: list[tuple[str, int]], spans: list[Span], notes: list[str],
                 title: str | None = None) -> None:
        self.units = [format_unit(name, index) for name, index in units]
        self.spans = spans
        by_name: dict[str, list[int]] = {}
        for row, (name, index) in enumerate(units):
            by_name.setdefault(name, []).append(row)
        self.values = []
        for s in spans:
            block = np.empty((len(units), s.stop - s.start), dtype=np.float32)  # (U, T)
            for name, rows in by_name.items():
                block[rows] = read(trace, name, s.start, s.stop, [units[r][1] for r in rows]).T
            self.values.append(block)
        self.tokens = [trace.tokens(s.start, s.stop) for s in spans]
        modules = getattr(trace, "meta", {}).get("modules")  # each kind's range in its module's cell type
        self.scales = [ColorScale(q.kind, described_range(modules, q.path, q.kind))
                       for q in (parse_name(name) for name, _ in units)]
        title = title or f"{len(units)} units x {sum(s.stop - s.start for s in spans)} tokens"
        super().__init__(self._draw(title, notes), title, notes)

    def _draw(self, title: str, notes: list[str]) -> str:
        n = sum(s.stop - s.start for s in self.spans)
        cell = float(np.clip((MAX_WIDTH - GAP * (len(self.spans) - 1)) / n, MIN_CELL, MAX_CELL))
        label_width = max(len(u) for u in self.units) * 0.6 * svg.SMALL + 8
        x0 = MARGIN + label_width
        body = [svg.text(MARGIN, 18, title, size=svg.FONT_SIZE, fill=svg.INK)]
        y = 26.0
        kinds = {}
        for scale in self.scales:
            kinds.setdefault(scale.kind, scale)
        legend_x = MARGIN
        for scale in kinds.values():
            legend_x += (len(scale.label) + 6) * 0.6 * svg.SMALL  # the label left of the bar
            body += svg.legend(legend_x, y, scale, width=90)
            legend_x += 90 + 24
        y = svg.notes(body, y + 18, notes) + 16  # then the sequence labels
        top = y
        for r, unit in enumerate(self.units):
            body.append(svg.text(x0 - 4, top + r * CELL_HEIGHT + CELL_HEIGHT - 3, unit, anchor="end"))
        x = x0
        for k, span in enumerate(self.spans):
            label = f"sequence {span.sequence}" if span.first == 0 else f"sequence {span.sequence} from {span.first}"
            fits = len(label) * 0.6 * svg.SMALL < (span.stop - span.start) * cell
            body.append(svg.text(x, top - 4, label if fits else f"s{span.sequence}"))
            colors = [scale.hex_colors(self.values[k][r]) for r, scale in enumerate(self.scales)]
            for t, token in enumerate(self.tokens[k]):
                where = f"{token!r} (sequence {span.sequence}, position {span.first + t}, row {span.start + t})"
                for r, unit in enumerate(self.units):
                    body.append(
                        f'<rect class="cell" x="{x + t * cell:.1f}" y="{top + r * CELL_HEIGHT:.1f}" '
                        f'width="{cell + 0.05:.2f}" height="{CELL_HEIGHT}" fill="{colors[r][t]}">'
                        + svg.title(f"{unit} at {where} = {svg.exact(self.values[k][r, t])}") + "</rect>"
                    )
                if cell >= LABELED_CELL:
                    lx, ly = x + (t + 0.5) * cell + 3, top + len(self.units) * CELL_HEIGHT + 4
                    body.append(svg.text(lx, ly, svg.visible(token), size=10, fill=svg.INK, anchor="end",
                                         extra=f' transform="rotate(-90 {lx:.1f} {ly:.1f})"'))
            x += (span.stop - span.start) * cell + GAP
        longest = max((len(svg.visible(t)) for ts in self.tokens for t in ts), default=0)
        labels = 8 * longest if cell >= LABELED_CELL else 0  # px under the cells for the token labels
        width = max(x - GAP + MARGIN, 2 * MARGIN + 420)
        height = top + len(self.units) * CELL_HEIGHT + min(labels, 120) + 8 + MARGIN
        return svg.document(width, height, body, title)
