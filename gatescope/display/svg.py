"""Writing SVG by hand: escaping, exact numbers, visible tokens, and the text metrics of a monospace font.

Displays are inline SVG (W3C SVG 1.1): no JavaScript, no stylesheet to fetch, and the same text is a
notebook cell's HTML and a standalone ``.svg`` file. Hover titles are SVG ``<title>`` children, which
browsers show as tooltips. Text is monospace, so a token's width is its length times `CHAR_WIDTH`.
"""
from __future__ import annotations

import math
from xml.sax.saxutils import escape, quoteattr

import numpy as np

FONT = "ui-monospace, SFMono-Regular, Menlo, Consolas, 'DejaVu Sans Mono', monospace"
FONT_SIZE = 13  # px
CHAR_WIDTH = 0.6 * FONT_SIZE  # px: the advance of a monospace glyph is about 0.6 em
LINE_HEIGHT = 19  # px
SMALL = 11  # px, labels and notes
MUTED = "#6b6b6b"
INK = "#222222"  # titles and labels
NOTE = "#a34d00"  # a figure's notes on what it left out
MARGIN = 12  # px around a figure


def exact(value: float) -> str:
    """A recorded value as the shortest text that reads back to the same float32 (``nan`` for NaN)."""
    return "nan" if math.isnan(value) else str(np.float32(value))


def visible(token: str) -> str:
    """A token as it can be drawn: newline ↵, tab ⇥, other control characters as their Unicode pictures."""
    out = []
    for ch in token:
        code = ord(ch)
        if ch == "\n":
            out.append("↵")
        elif ch == "\t":
            out.append("⇥")
        elif code < 0x20:
            out.append(chr(0x2400 + code))
        elif code == 0x7F or 0x80 <= code < 0xA0 or 0xD800 <= code < 0xE000 or code in (0xFFFE, 0xFFFF):
            out.append("\ufffd")  # not allowed in XML, or invisible
        else:
            out.append(ch)
    return "".join(out)


def text(x: float, y: float, body: str, size: int = SMALL, fill: str = MUTED, anchor: str = "start",
         extra: str = "") -> str:
    """A ``<text>`` element; ``body`` is escaped here."""
    return (f'<text x="{x:.1f}" y="{y:.1f}" font-size="{size}" fill="{fill}" text-anchor="{anchor}"{extra}>'
            f"{escape(body)}</text>")


def title(body: str) -> str:
    """A hover title (tooltip), escaped."""
    return f"<title>{escape(body)}</title>"


def attr(value: str) -> str:
    """An attribute value, quoted and escaped."""
    return quoteattr(value)


def document(width: float, height: float, body: list[str], label: str) -> str:
    """A complete ``<svg>`` element (valid as inline HTML and as a file), white background."""
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0f}" height="{height:.0f}" '
            f'viewBox="0 0 {width:.0f} {height:.0f}" font-family={attr(FONT)} role="img" aria-label={attr(label)}>'
            f'<rect width="100%" height="100%" fill="#ffffff"/>' + "".join(body) + "</svg>")


def notes(body: list[str], y: float, lines: list[str]) -> float:
    """A figure's notes (what it left out), one a line from height ``y``; returns the height below them."""
    for line in lines:
        body.append(text(MARGIN, y + 11, line, fill=NOTE))
        y += 15
    return y


def legend(x: float, y: float, scale, width: float = 120) -> list[str]:
    """A colour bar (8 px high) for a `gatescope.display.colorscale.ColorScale` at (x, y), labelled with its range."""
    colors = scale.colors[:-1]  # without the NaN grey
    step = width / len(colors)
    parts = [f'<rect x="{x + i * step:.1f}" y="{y:.1f}" width="{step + 0.2:.1f}" height="8" fill="{c}"/>'
             for i, c in enumerate(colors)]
    parts.append(text(x - 4, y + 8, f"{scale.label}  {scale.low:g}", anchor="end"))
    parts.append(text(x + width + 4, y + 8, f"{scale.high:g}"))
    return parts
