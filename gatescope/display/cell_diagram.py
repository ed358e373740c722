"""The seed's cell diagram as SVG, each box and line labelled with one step's values, and its terms as a table.

The LSTM as Olah (2015) draws it: the cell state c runs along the top through the forget gate's product and
the sum with i·g; below, the four gate boxes (σ f, σ i, tanh g, σ o) read [h_{t-1}, x_t]; tanh(c) times o
gives h at the right. The GRU in the same style: h runs along the top through z's product and the sum with
(1 - z)·n; the boxes σ r, σ z, tanh n. Reads a `gatescope.analysis.explain.StepExplanation` by its fields.
"""
from __future__ import annotations

from html import escape
from typing import Any

from gatescope.display import svg
from gatescope.display.cell_text import diagram_lines, short, squashed
from gatescope.display.figure import Figure

WIDTH, HEIGHT = 760, 330
LINE = "#444444"
BOX = "#fde9c9"
OP = "#f5d0d0"


def _box(x: float, y: float, label: str, value: float, tip: str) -> list[str]:
    """A gate box (the layer of the seed's picture), its activation's name inside and its value under it."""
    return [f'<g>{svg.title(tip)}<rect x="{x - 34}" y="{y - 15}" width="68" height="30" rx="4" fill="{BOX}" '
            f'stroke="{LINE}"/>', svg.text(x, y + 5, label, size=svg.FONT_SIZE, fill=svg.INK, anchor="middle"),
            svg.text(x + 38, y - 18, f"{value:+.3f}", size=svg.SMALL, fill=svg.INK), "</g>"]


def _op(x: float, y: float, symbol: str) -> list[str]:
    """A pointwise operation (× or +) on a line."""
    return [f'<circle cx="{x}" cy="{y}" r="11" fill="{OP}" stroke="{LINE}"/>',
            svg.text(x, y + 5, symbol, size=svg.FONT_SIZE, fill=svg.INK, anchor="middle")]


def _line(points: list[tuple[float, float]]) -> str:
    path = " ".join(f"{x:.0f},{y:.0f}" for x, y in points)
    return f'<polyline points="{path}" fill="none" stroke="{LINE}" stroke-width="1.5"/>'


def _value(x: float, y: float, body: str, anchor: str = "middle") -> str:
    return svg.text(x, y, body, size=svg.SMALL, fill=svg.INK, anchor=anchor)


def _gate_tip(e: Any, kind: str) -> str:
    g = e.gates[kind]
    if g.preactivation is None:  # a coupled gate
        return f"{kind} ({g.title}) = {g.activation} = {g.value:+.3f}"
    ups = ", ".join(f"{short(u.unit, e)} {u.contribution:+.3f}" for u in g.upstream[:3])
    return (f"{kind} ({g.title}) = {g.activation}({g.input:+.3f} W x + {g.recurrent:+.3f} U h + {g.bias:+.3f} bias "
            f"= {g.preactivation:+.3f}); upstream: {ups}")


def _lstm(e: Any) -> list[str]:
    g, s = e.gates, e.state
    top, bottom = 70, 250
    out = "m" if "m" in s else "h"
    body = [_line([(40, top), (720, top)]), _value(40, top - 10, f"c[t-1] {s['c_prev']:+.3f}", "start"),
            _value(720, top - 10, f"c {s['c']:+.3f}", "end")]
    xf, xi, xg, xo = 180, 290, 390, 560
    body += [_line([(40, bottom), (xo, bottom)]), _value(40, bottom + 18, "h[t-1], x_t", "start")]
    for x, kind, label in ((xf, "f", "σ f"), (xi, "i", "σ i"), (xg, "g", "tanh g"), (xo, "o", "σ o")):
        body.append(_line([(x, bottom), (x, 185)]))
        body += _box(x, 185 - 15, label, g[kind].value, _gate_tip(e, kind))
    body += [_line([(xf, 155), (xf, top)])] + _op(xf, top, "×")
    body.append(_value(xf + 14, top - 14, f"{s['f*c_prev']:+.3f}", "start"))
    body += [_line([(xi, 155), (xi, 120), (xg, 120)]), _line([(xg, 155), (xg, 120)])] + _op(xg, 120, "×")
    body += [_line([(xg, 109), (xg, top)]), _value(xg + 14, 104, f"i·g {s['i*g']:+.3f}", "start")]
    body += _op(xg, top, "+")
    xt = 650
    act, value = squashed(s)
    body += [_line([(xt, top), (xt, 110)]), f'<ellipse cx="{xt}" cy="122" rx="26" ry="12" fill="{OP}" stroke="{LINE}"/>',
             svg.text(xt, 126, act, size=svg.SMALL, fill=svg.INK, anchor="middle"),
             _value(xt + 32, 126, f"{value:+.3f}", "start"),
             _line([(xt, 134), (xt, 174)]), _line([(xo + 34, 170), (xt - 11, 185)])]
    body += _op(xt, 185, "×") + [_line([(xt, 196), (xt, 290), (720, 290)]),
                                 _value(720, 284, f"{out} {s[out]:+.3f}", "end")]
    return body


def _gru(e: Any) -> list[str]:
    g, s = e.gates, e.state
    top, bottom = 70, 250
    body = [_line([(40, top), (720, top)]), _value(40, top - 10, f"h[t-1] {s['h_prev']:+.3f}", "start"),
            _value(720, top - 10, f"h {s['h']:+.3f}", "end")]
    xr, xz, xn = 200, 340, 520
    body += [_line([(40, bottom), (xn, bottom)]), _value(40, bottom + 18, "h[t-1], x_t", "start")]
    for x, kind, label in ((xr, "r", "σ r"), (xz, "z", "σ z"), (xn, "n", "tanh n")):
        body.append(_line([(x, bottom), (x, 185)]))
        body += _box(x, 185 - 15, label, g[kind].value, _gate_tip(e, kind))
    body += [_line([(xr, 155), (xr, 130), (xn - 20, 130), (xn - 20, 155)]),
             _value(xr + 6, 124, "r · (W_hn h + b_hn) into n", "start")]
    body += [_line([(xz, 155), (xz, top)])] + _op(xz, top, "×")
    body += [_line([(xz + 20, 155), (xz + 20, 98), (604, 98), (612, 103)]), _value(xz + 26, 93, "1 - z", "start")]
    body.append(_value(xz + 14, top - 14, f"z·h {s['z*h_prev']:+.3f}", "start"))
    body += [_line([(xn, 155), (xn, 110), (620, 110), (620, top)])] + _op(620, 110, "×")
    body += [_value(634, 104, f"(1-z)·n {s['(1-z)*n']:+.3f}", "start")] + _op(620, top, "+")
    return body


def cell_figure(e: Any) -> Figure:
    """The cell with this step's values (hover a gate box for its terms)."""
    title = f"{e.module}.l{e.layer}.{e.direction} unit {e.index} ({e.cell}) at step {e.at} {svg.visible(e.token)!r}"
    body = [svg.text(svg.MARGIN, 22, title, size=svg.FONT_SIZE, fill=svg.INK)]
    if "c" in e.state:
        body += _lstm(e)
    elif "z" in e.gates:
        body += _gru(e)
    else:  # the plain RNN has no picture of gates: its one line
        body += [svg.text(svg.MARGIN, 80 + 20 * i, line, size=svg.FONT_SIZE, fill=svg.INK)
                 for i, line in enumerate(diagram_lines(e))]
    body.append(svg.text(svg.MARGIN, HEIGHT - 8, f"check: the terms reproduce the recorded values within {e.check:.1e}"))
    return Figure(svg.document(WIDTH, HEIGHT, body, title), title, [])


def terms_table(e: Any) -> str:
    """The gates' terms and their largest upstream shares as an HTML table."""
    head = "".join(f"<th>{escape(h)}</th>" for h in ("gate", "W x_t", "U h", "bias", "pre", "act", "value",
                                                    "top upstream"))
    rows = []
    for kind, g in e.gates.items():
        if g.preactivation is None:  # a coupled gate
            rows.append(f"<tr><td>{kind} ({escape(g.title)})</td><td colspan=\"5\">= {escape(g.activation)}</td>"
                        f"<td>{g.value:.3f}</td><td></td></tr>")
            continue
        ups = ", ".join(f"{escape(short(u.unit, e))} {u.contribution:+.3f}" for u in g.upstream)
        cells = [f"{kind} ({escape(g.title)})", f"{g.input:+.3f}", f"{g.recurrent:+.3f}", f"{g.bias:+.3f}",
                 f"{g.preactivation:+.3f}", g.activation, f"{g.value:.3f}", ups]
        rows.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    return f'<table class="gatescope-terms"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'
