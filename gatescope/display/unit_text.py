"""One unit over text, Karpathy et al. 2015 style: each token on the colour of the unit's value there.

("Visualizing and understanding recurrent networks", Fig. 2.) Under the text of each sequence, every
chosen kind of the same unit (index) in the same layer is a small line plot over the tokens, as in
Lakretz et al. 2019's Fig. 1 gate profiles; hovering a token or a plot column shows the exact recorded
values. Colours are the browser's (gatescope.display.colorscale). The figure is as wide as its longest line
of text (up to `WRAP` characters) or its title, and a sentence that fits on one line is spread over the
plots' width, each token centred over its values, so 6 tokens never fill a corner of the plots.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from gatescope.display import svg
from gatescope.display.colorscale import ColorScale, is_light
from gatescope.display.figure import Figure
from gatescope.display.selection import Span, describe, read
from gatescope.kinds import KINDS, Range, described_range
from gatescope.kinds import describe as describe_kind
from gatescope.names import parse_name

WRAP = 100  # characters per line of text
LEGEND = 120  # px of the colour legend, right of the title
MARGIN = svg.MARGIN
LABEL = 48  # px left of the line plots, for the kind's symbol and range
PLOT_HEIGHT = 34
PLOT_GAP = 6
LINE_COLOR = "#1f5f99"


class UnitText(Figure):
    """`gatescope.show(trace, unit=...)`: the tokens of some sequences coloured by one unit, with its kinds plotted.

    ``values[k]`` is the unit's values (float32) over ``spans[k]``; ``plotted[kind][k]`` those of each plotted kind.
    """

    def __init__(self, trace: Any, unit: str, name: str, index: int, kinds: list[str], spans: list[Span],
                 notes: list[str]) -> None:
        self.unit, self.spans, self.kinds = unit, spans, kinds
        q = parse_name(name)
        modules = getattr(trace, "meta", {}).get("modules")  # each kind's range in its module's cell type
        self.ranges = {k: described_range(modules, q.path, k) for k in {*kinds, q.kind}}
        self.scale = ColorScale(q.kind, self.ranges[q.kind])
        layer = name[: -len(q.kind)]
        self.plotted = {k: [read(trace, layer + k, s.start, s.stop, index) for s in spans] for k in kinds}
        self.values = [self.plotted[q.kind][i] if q.kind in kinds else read(trace, name, s.start, s.stop, index)
                       for i, s in enumerate(spans)]
        self.tokens = [trace.tokens(s.start, s.stop) for s in spans]
        char = trace.meta.get("tokenizer") == "char"
        lengths = [int(trace.offsets[s.sequence + 1] - trace.offsets[s.sequence]) for s in spans]
        title = f"{unit} ({KINDS[q.kind].title})"
        super().__init__(self._draw(title, notes, lengths, char), title, notes)

    def _columns(self, char: bool) -> int:
        """Characters of the longest line of text (the tokens and the spaces between them), at most WRAP."""
        gap = 0 if char else 1
        longest = max((sum(max(len(svg.visible(t)), 1) + gap for t in tokens) - gap for tokens in self.tokens),
                      default=WRAP)
        return min(longest, WRAP)

    def _draw(self, title: str, notes: list[str], lengths: list[int], char: bool) -> str:
        heading = title + f", coloured by {self.scale.label}"
        scale = self.scale
        labels = len(f"{scale.label}  {scale.low:g}") + len(f"{scale.high:g}")  # the legend's, either side of it
        heading_width = 2 * MARGIN + (len(heading) + labels + 4) * svg.CHAR_WIDTH + LEGEND  # the title, the legend
        width = max(2 * MARGIN + LABEL + self._columns(char) * svg.CHAR_WIDTH, heading_width)
        body: list[str] = [svg.text(MARGIN, 18, heading, size=svg.FONT_SIZE, fill=svg.INK)]
        body += svg.legend(width - MARGIN - LEGEND, 9, self.scale)
        y = svg.notes(body, 26.0, notes)
        for i, span in enumerate(self.spans):
            body.append(svg.text(MARGIN, y + 20, describe(span, lengths[i])))
            y += 26
            y, centres = self._text(body, y, i, char, width - 2 * MARGIN - LABEL)
            y = self._plots(body, y + 6, i, width, centres)
        return svg.document(width, y + MARGIN, body, title)

    def _text(self, body: list[str], y: float, i: int, char: bool, room: float) -> tuple[float, list[float] | None]:
        """The tokens of span ``i`` from height ``y``, wrapped, or spread over ``room`` px when they fit on one
        line; returns the height below them, and the tokens' centres when they are on one line (the plots then
        put each token's value under it)."""
        span, values, tokens = self.spans[i], self.values[i], self.tokens[i]
        colors = self.scale.hex_colors(values)
        column, line = 0, 0
        centres = []
        gap = 0 if char else 1
        cells_of = [max(len(svg.visible(t)), 1) for t in tokens]
        slot = room / max(len(tokens), 1)  # px per token when spread
        spread = (sum(cells_of) + gap * (len(tokens) - 1) <= WRAP and not (char and "\n" in tokens[:-1])
                  and max(cells_of, default=0) * svg.CHAR_WIDTH <= slot)  # one line, no token wider than its share
        for k, token in enumerate(tokens):
            shown = svg.visible(token)
            cells = cells_of[k]
            if column and column + cells > WRAP:
                column, line = 0, line + 1
            x, top = MARGIN + LABEL + column * svg.CHAR_WIDTH, y + line * svg.LINE_HEIGHT
            if spread:  # centred in its share of the width
                x = MARGIN + LABEL + (k + 0.5) * slot - cells * svg.CHAR_WIDTH / 2
            centres.append(x + cells * svg.CHAR_WIDTH / 2)
            row = span.start + k
            lines = [f"{token!r}: sequence {span.sequence}, position {span.first + k} (row {row})",
                     f"{self.unit} = {svg.exact(values[k])}"]
            others = [kind for kind in self.kinds if kind != self.scale.kind]  # the unit's own value is above
            lines += [f"{kind} = {svg.exact(self.plotted[kind][i][k])}" for kind in others]
            ink = "#000000" if is_light(colors[k]) else "#ffffff"
            body.append(
                '<g class="token">' + svg.title("\n".join(lines))
                + f'<rect x="{x:.1f}" y="{top:.1f}" width="{cells * svg.CHAR_WIDTH:.1f}" '
                f'height="{svg.LINE_HEIGHT - 2}" fill="{colors[k]}"/>'
                + svg.text(x, top + svg.LINE_HEIGHT - 6, shown, size=svg.FONT_SIZE, fill=ink,
                           extra=' xml:space="preserve"')
                + "</g>"
            )
            column += cells + gap
            if char and token == "\n":
                column, line = 0, line + 1
        one_line = line == 0 or (line == 1 and column == 0)
        return y + (line + 1) * svg.LINE_HEIGHT, centres if one_line and len(tokens) > 1 else None

    def _plots(self, body: list[str], y: float, i: int, width: float, centres: list[float] | None) -> float:
        """Each plotted kind as a line over the tokens of span ``i`` (under the tokens' ``centres`` if given, else
        evenly spaced); hover columns with every kind's value."""
        span, n = self.spans[i], self.spans[i].stop - self.spans[i].start
        x0, plot_width = MARGIN + LABEL, width - 2 * MARGIN - LABEL
        if centres is None:
            xs = x0 + (np.arange(n) + 0.5) * plot_width / n  # (n,)
        else:
            xs = np.asarray(centres)
        edges = np.concatenate([[x0], (xs[1:] + xs[:-1]) / 2, [x0 + plot_width]])  # (n+1,) hover column bounds
        top = y
        for kind in self.kinds:
            values = self.plotted[kind][i]
            low, high = _range(self.ranges[kind], values)
            body.append(f"<g>{svg.title(describe_kind(kind))}"
                        + svg.text(MARGIN, y + PLOT_HEIGHT / 2 + 5, kind, size=svg.FONT_SIZE, fill=svg.INK) + "</g>")
            body.append(svg.text(x0 - 3, y + 9, f"{high:.3g}", size=9, anchor="end"))
            body.append(svg.text(x0 - 3, y + PLOT_HEIGHT - 1, f"{low:.3g}", size=9, anchor="end"))
            body.append(f'<rect x="{x0}" y="{y:.1f}" width="{plot_width:.1f}" height="{PLOT_HEIGHT}" fill="#f6f6f6"/>')
            if low < 0 < high:
                zero = y + PLOT_HEIGHT * high / (high - low)
                body.append(f'<line x1="{x0}" x2="{x0 + plot_width:.1f}" y1="{zero:.1f}" y2="{zero:.1f}" '
                            f'stroke="#bbbbbb" stroke-dasharray="3 3"/>')
            ys = y + PLOT_HEIGHT * (high - np.clip(values, low, high)) / (high - low)  # (n,)
            for run in _finite_runs(ys):
                if len(run) == 1:
                    j = run[0]
                    body.append(f'<circle cx="{xs[j]:.1f}" cy="{ys[j]:.1f}" r="1.5" fill="{LINE_COLOR}"/>')
                else:
                    points = " ".join(f"{xs[j]:.1f},{ys[j]:.1f}" for j in run)
                    body.append(f'<polyline points="{points}" fill="none" stroke="{LINE_COLOR}" stroke-width="1.3"/>')
            y += PLOT_HEIGHT + PLOT_GAP
        height = y - top - PLOT_GAP
        for k in range(n):  # hover columns over all the plots
            lines = [f"{self.tokens[i][k]!r}: position {span.first + k} (row {span.start + k})"]
            lines += [f"{kind} = {svg.exact(self.plotted[kind][i][k])}" for kind in self.kinds]
            body.append(f'<rect class="column" x="{edges[k]:.1f}" y="{top:.1f}" width="{edges[k + 1] - edges[k]:.2f}" '
                        f'height="{height:.1f}" fill="#000000" fill-opacity="0">'
                        + svg.title("\n".join(lines)) + "</rect>")
        return y + 4


def _range(rng: Range, values: np.ndarray) -> tuple[float, float]:
    """The y range of a kind's plot: its range where bounded (0..1 for gates, -1..1 for tanh-range values),
    symmetric around 0 and at least -1..1 for an unbounded one (the cell state)."""
    if rng.bounded and rng.high > rng.low:
        return rng.low, rng.high
    finite = values[np.isfinite(values)]
    bound = max(1.0, float(np.abs(finite).max())) if finite.size else 1.0
    return -bound, bound


def _finite_runs(values: np.ndarray) -> list[list[int]]:
    """Indices of the runs of finite values (a NaN breaks the line)."""
    runs: list[list[int]] = []
    current: list[int] = []
    for j, finite in enumerate(np.isfinite(values).tolist()):
        if finite:
            current.append(j)
        elif current:
            runs.append(current)
            current = []
    if current:
        runs.append(current)
    return runs
