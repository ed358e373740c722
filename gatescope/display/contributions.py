"""A decomposition in a notebook: the tokens of the text coloured by their contribution (blue negative, red
positive, on one scale symmetric about 0), to a logit difference or to one unit at one step, with the
constants' contribution and the actual value beside them (`gatescope.show(decomposition, ...)`)."""
from __future__ import annotations

from typing import Any

import numpy as np

from gatescope.display import svg
from gatescope.display.colorscale import is_light, signed_colors
from gatescope.display.figure import Figure

PAD = 6  # px inside a token's box


class ContributionText(Figure):
    """Each part's contribution (``values``, the constants first) drawn over the tokens it holds."""

    def __init__(self, result: Any, values: np.ndarray, actual: float, what: str) -> None:
        tokens = result.tokens or [str(t) for t in range(max(p for part in result.parts for p in part) + 1)]
        labels = ["constants"] + [svg.visible(t) for t in tokens]
        value_of = [0.0] * len(tokens)
        for p, positions in enumerate(result.parts[1:], start=1):
            for t in positions:
                value_of[t] = float(values[p])
        shown = [float(values[0]), *value_of]
        colors = signed_colors(np.array(shown))
        body, x, y = [], svg.MARGIN, svg.MARGIN + 16
        heading = f"{result.method}: each token's contribution to {what} (actual {actual:.3f})"
        body.append(svg.text(svg.MARGIN, y - 4, heading, fill=svg.INK))
        y += 6
        for k, (label, value, color) in enumerate(zip(labels, shown, colors)):
            width = len(label) * svg.CHAR_WIDTH + 2 * PAD
            ink = svg.INK if is_light(color) else "#ffffff"
            body.append(f'<g><rect x="{x:.1f}" y="{y:.1f}" width="{width:.1f}" height="{svg.LINE_HEIGHT + 4}" '
                        f'fill="{color}" rx="3"/>{svg.title(f"{label}: {value:+.4f}")}'
                        + svg.text(x + PAD, y + svg.LINE_HEIGHT - 3, label, size=svg.FONT_SIZE, fill=ink)
                        + svg.text(x + width / 2, y + svg.LINE_HEIGHT + 18, f"{value:+.2f}", anchor="middle")
                        + "</g>")
            x += width + (12 if k == 0 else 4)
        y += svg.LINE_HEIGHT + 26
        lines = [f"parts add up to within {result.check:.1e}"] + (
            [f"{result.method}: the parts need not add up; the interaction is "
             f"{actual - float(np.sum(values)):+.3f}"] if result.method != "shapley" else [])
        for line in lines:
            body.append(svg.text(svg.MARGIN, y + 11, line))
            y += 15
        width = max(x, svg.MARGIN + max(len(line) for line in [heading, *lines]) * 0.6 * svg.SMALL) + svg.MARGIN
        super().__init__(svg.document(width, y + svg.MARGIN, body, heading), heading, [])
