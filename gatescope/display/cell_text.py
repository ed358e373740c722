"""A step's explanation as text: the cell drawn in one line of arrows with its values, then its terms.

Follows the seed's picture (Olah 2015): the LSTM's cell state runs along the top, multiplied by the forget
gate, added to the input gate's share of the candidate, then tanh and the output gate give h; the GRU's
hidden state runs along the top, kept by z, added to (1 - z) of the candidate n. Reads a
`gatescope.analysis.explain.StepExplanation` by its fields (no import of the analysis layer).
"""
from __future__ import annotations

from typing import Any

from gatescope.display.svg import visible


def short(unit: str, explanation: Any) -> str:
    """``rnn.l0.fwd.h:12`` as ``h:12`` within its own layer and direction; other names in full."""
    own = f"{explanation.module}.l{explanation.layer}.{explanation.direction}."
    return unit[len(own):] if unit.startswith(own) else unit


def squashed(state: dict) -> tuple[str, float]:
    """The LSTM's output activation of c and its value: ``("tanh", 0.62)``."""
    key = next(k for k in state if k.endswith("(c)"))
    return key[: -len("(c)")], state[key]


def diagram_lines(e: Any) -> list[str]:
    """The cell in two lines of text, each value where the seed's picture has it."""
    g, s = e.gates, e.state
    if "c" not in s and "z" not in g:  # the plain RNN: one activation of the whole sum
        return [f"h[t-1] {s['h_prev']:+.3f} ──[{g['h'].activation}(W x + U h + b)]── h {s['h']:+.3f}"]
    if "c" in s:
        out = "m" if "m" in s else "h"
        act, value = squashed(s)
        top = (f"c[t-1] {s['c_prev']:+.3f} ──[× f {g['f'].value:.3f}]── {s['f*c_prev']:+.3f} ──[+]── "
               f"c {s['c']:+.3f} ──{act}── {value:+.3f} ──[× o {g['o'].value:.3f}]── {out} {s[out]:+.3f}")
        column = top.index("[+]") + 1
        below = f"i {g['i'].value:.3f} × g {g['g'].value:+.3f} = {s['i*g']:+.3f}"
    else:
        top = (f"h[t-1] {s['h_prev']:+.3f} ──[× z {g['z'].value:.3f}]── {s['z*h_prev']:+.3f} ──[+]── "
               f"h {s['h']:+.3f}")
        column = top.index("[+]") + 1
        below = f"(1-z) {1 - g['z'].value:.3f} × n {g['n'].value:+.3f} = {s['(1-z)*n']:+.3f}   (r {g['r'].value:.3f})"
    start = max(0, column - len(below) // 2)
    return [top, " " * column + "│", " " * start + below]


def render_step(e: Any) -> str:
    """The whole explanation as text: a heading, the cell, the table of terms, the upstream units, the check."""
    token = visible(e.token)
    lines = [f"{e.module}.l{e.layer}.{e.direction} unit {e.index} ({e.cell}) at step {e.at} {token!r}"
             + (f" (sequence {e.sequence})" if e.sequence else ""), ""]
    lines += ["  " + line for line in diagram_lines(e)] + [""]
    header = f"  {'gate':<22}{'W x_t':>9}{'U h_t-1':>10}{'bias':>9}{'pre':>9}  {'act':<8}{'value':>8}"
    lines.append(header)
    for kind, gate in e.gates.items():
        if gate.preactivation is None:  # a coupled gate
            lines.append(f"  {kind + ' ' + gate.title:<22.22}{'= ' + gate.activation:>46}{gate.value:>10.3f}")
            continue
        extra = "".join(f"  + {name} {value:+.3f}" for name, value in (("peephole", gate.peephole),
                                                                      ("forget_bias", gate.forget_bias)) if value)
        lines.append(f"  {kind + ' ' + gate.title:<22.22}{gate.input:>+9.3f}{gate.recurrent:>+10.3f}{gate.bias:>+9.3f}"
                     f"{gate.preactivation:>+9.3f}  {gate.activation:<8}{gate.value:>8.3f}{extra}"
                     + ("  (clipped)" if gate.clipped else ""))
    lines.append("")
    step = "t-1" if e.direction == "fwd" else "t+1"
    lines.append(f"  what moved each gate most (U h[{step}] by upstream unit; W x_t by input unit):")
    for kind, gate in e.gates.items():
        if gate.preactivation is None:
            continue
        recurrent = "  ".join(f"{short(u.unit, e)} {u.contribution:+.3f}" for u in gate.upstream) or "-"
        inputs = "  ".join(f"{short(u.unit, e)} {u.contribution:+.3f}" for u in gate.inputs) or "-"
        lines.append(f"  {kind}  recurrent: {recurrent}")
        lines.append(f"     input:     {inputs}")
    lines.append("")
    lines.append(f"  check: the terms reproduce the recorded values within {e.check:.1e}")
    return "\n".join(lines)
