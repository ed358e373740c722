"""Gate dynamics: saturation, forget-gate timescales, and per-timestep gate profiles of units.

- Saturation (Karpathy, Johnson & Fei-Fei 2015, "Visualizing and understanding recurrent
  networks", Fig. 3): per unit and gate, the fraction of steps it is left-saturated (< 0.1) and
  right-saturated (> 0.9), as defined once in gatescope.saturation (tanh-range kinds read as
  (x + 1) / 2, NaN values not counted), of the kinds whose range is bounded: an unbounded one, such as
  the cell state c, is refused (`saturation_kinds`).
- Timescales: a unit that keeps a fraction f of its cell per step forgets with time constant
  1 / (1 - f) steps (the LSTM forget gate f; for a GRU, the update gate z weighs the previous
  state). From a trace: the mean gate per unit; from weights: the gate at zero input and state, the
  biases through the cell type's gate activation (sigmoid(b_i + b_h) for torch's cells, as in chrono
  initialisation, Tallec & Ollivier 2018), computed once in gatescope.analysis.timescale.
- Gate profile: the values of one unit's gates and states along chosen sentences, one panel per
  kind, one line per sentence; the picture of Lakretz et al. 2019 Fig. 1 (c~ = g, i, f, c, o of
  the number units across "the boy(s) near the car(s) greet(s)"). Saved as PNG or SVG with
  matplotlib (Agg backend, imported only here).
"""
from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from gatescope.analysis.selection import (
    iter_rows,
    parse_kinds,
    resolve_unit,
    select_quantities,
    unit_row,
)
from gatescope.analysis.table import Table
from gatescope.analysis.timescale import memory_at_rest, timescale_of
from gatescope.display.plot_text import plain
from gatescope.errors import GatescopeError
from gatescope.files import atomic_write
from gatescope.kinds import (
    ALL_KINDS,
    CELL_TYPES,
    MEMORY_GATES,
    SIGMOID_KINDS,
    SIGNED_KINDS,
    described_range,
    module_cell_type,
    module_directions,
)
from gatescope.names import format_name, format_unit, parse_name
from gatescope.recorder.engine import layer_weights
from gatescope.recorder.recordable import find_recurrent, is_cell, packaged_of
from gatescope.saturation import HIGH, LOW
from gatescope.saturation import saturation as count_saturation
from gatescope.traces.trace import Trace

# views of gatescope.kinds, under the names this module has always exported
GATE_KINDS = tuple(k for k in ALL_KINDS if k in SIGMOID_KINDS)  # i f o r z
TANH_KINDS = SIGNED_KINDS  # g m n h
TIMESCALE_KINDS = MEMORY_GATES  # f (LSTM), z (GRU): the gate that keeps the previous state
TIMESCALE_COLUMNS = ["unit", "name", "layer", "direction", "kind", "index", "mean", "timescale"]
PROFILE_KINDS = {name.lower(): cell.profile for name, cell in CELL_TYPES.items()}  # Lakretz et al. 2019 Fig. 1


def saturation(trace: Trace, kinds: str | Iterable[str] | None = None, low: float = LOW, high: float = HIGH) -> Table:
    """Per unit: ``left`` (fraction of steps < low), ``right`` (> high), ``mean``, in trace order.

    kinds: of bounded range (`saturation_kinds`); default the sigmoid gates present (i f o, r z), else the
    tanh outputs present (g n h m). Fractions and means are over a unit's non-NaN values (gatescope.saturation).
    """
    names = select_quantities(trace, saturation_kinds(trace.names, kinds, trace.meta.get("modules")))
    if trace.num_tokens == 0:
        raise GatescopeError("the trace has no tokens")
    rows = []
    for name in names:
        blocks = [block.numpy() for _, block in iter_rows(trace, name)]  # float64 (rows, H)
        q = parse_name(name)
        value_range = described_range(trace.meta.get("modules"), q.path, q.kind)  # the kind's range in its cell
        counts = count_saturation(blocks, q.kind, trace[name].shape[1], low, high, value_range)
        total = sum(np.nansum(b, axis=0) for b in blocks)  # (H,)
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = np.where(counts.counted > 0, total / counts.counted, np.nan)
        left, right = counts.left_fraction, counts.right_fraction
        for j in range(len(left)):
            rows.append(unit_row(name, j) | {"left": float(left[j]), "right": float(right[j]), "mean": float(mean[j])})
    return Table(rows, ["unit", "name", "layer", "direction", "kind", "index", "left", "right", "mean"])


def saturation_kinds(names: Iterable[str], kinds: str | Iterable[str] | None = None,
                     modules: Any = None) -> tuple[str, ...]:
    """The kinds `saturation` measures over the quantities ``names`` (each kind's range in its cell type as
    ``modules``, a trace's metadata, describes it; gatescope.kinds): the given ones, else the sigmoid gates
    present, else the other kinds of bounded range present. Saturation is defined on a bounded range (a gate
    near 0 or 1): a kind unbounded there (the LSTM cell state c, a relu RNN's h) is refused in one line that
    names the kinds it can measure."""
    quantities = [parse_name(name) for name in names]
    unbounded = {q.kind: r for q in quantities if not (r := described_range(modules, q.path, q.kind)).bounded}
    measurable = [k for k in ALL_KINDS if k not in unbounded and any(q.kind == k for q in quantities)]
    if kinds is None:
        kinds = [k for k in GATE_KINDS if k in measurable] or measurable
        if not kinds:
            raise GatescopeError(f"saturation is defined on kinds of bounded range; these quantities hold only "
                                 f"{', '.join(f'{k} ({r})' for k, r in unbounded.items())}")
    kinds = parse_kinds(kinds)
    if refused := [k for k in kinds if k in unbounded]:
        raise GatescopeError(f"saturation is defined on kinds of bounded range (a gate near 0 or 1), and "
                             f"{', '.join(f'{k} lies in {unbounded[k]}' for k in refused)}: give kinds among "
                             f"{','.join(measurable) or 'none'}")
    return kinds


def saturation_summary(table: Table, by: str = "name") -> Table:
    """Mean ``left`` and ``right`` over the units of each ``by`` (name, kind, layer) of a `saturation` table."""
    groups: dict[object, dict[str, float]] = {}
    for row in table:
        g = groups.setdefault(row[by], {by: row[by], "units": 0, "left": 0.0, "right": 0.0})
        g["units"] += 1
        g["left"] += row["left"]
        g["right"] += row["right"]
    rows = [g | {"left": g["left"] / g["units"], "right": g["right"] / g["units"]} for g in groups.values()]
    return Table(rows, [by, "units", "left", "right"])


def timescales(trace: Trace) -> Table:
    """Per unit of every memory gate (LSTM f, GRU z) in the trace: its mean and the timescale 1 / (1 - mean)."""
    names = select_quantities(trace, TIMESCALE_KINDS)
    rows = []
    for name in names:
        total = sum(block.double().sum(0) for _, block in iter_rows(trace, name))  # (H,)
        mean = total / max(1, trace.num_tokens)
        rows += timescale_rows(name, mean)
    return Table(rows, TIMESCALE_COLUMNS)


def weight_timescales(model: nn.Module) -> Table:
    """Per unit of every recurrent module of ``model`` with a memory gate: that gate at zero input and state,
    as its cell type computes it from the biases (sigmoid(b_ih + b_hh) for torch's cells), and the timescale
    1 / (1 - that): the same reading as ``gatescope inspect``'s report (gatescope.analysis.weights)."""
    rows = []
    for path, module in find_recurrent(model).items():
        cell = module_cell_type(module) if packaged_of(module) is None else None
        if cell is None or cell.memory_gate is None or is_cell(module):
            continue
        h = module.hidden_size
        for layer in range(module.num_layers):
            for direction in module_directions(module):
                w = layer_weights(module, layer, direction)
                bias = sum((b.detach().double().cpu() for b in (w.bias_ih, w.bias_hh) if b is not None),
                           torch.zeros(w.weight_ih.shape[0], dtype=torch.float64))  # (G*H,)
                keep = memory_at_rest(cell, bias, h)  # (H,)
                rows += timescale_rows(format_name(path, layer, direction, cell.memory_gate), keep)
    if not rows:
        raise GatescopeError("the model has no recurrent module with a memory gate (an LSTM's f, a GRU's z)")
    return Table(rows, TIMESCALE_COLUMNS)


def timescale_rows(name: str, keep: torch.Tensor) -> list[dict]:
    """One row per unit of quantity ``name`` that keeps the fraction ``keep`` (H,) of its memory per step."""
    return [unit_row(name, j) | {"mean": m, "timescale": t}
            for j, (m, t) in enumerate(zip(keep.tolist(), timescale_of(keep).tolist()))]


def gate_profile(trace: Trace, unit: str, sequences: Sequence[int], kinds: Sequence[str] | None = None
                 ) -> dict[str, list[torch.Tensor]]:
    """{kind: [values along each sequence]} for unit index ``unit`` of every kind of its layer."""
    parsed = resolve_unit(trace, unit)
    qn = parse_name(parsed.name)
    if kinds is None:  # the unit's own module decides: an LSTM records f, a GRU z
        lstm = format_name(qn.path, qn.layer, qn.direction, "f") in trace.names
        kinds = PROFILE_KINDS["lstm" if lstm else "gru"]
    out: dict[str, list[torch.Tensor]] = {}
    for kind in kinds:
        name = format_name(qn.path, qn.layer, qn.direction, kind)
        if name not in trace.names:
            continue
        resolve_unit(trace, format_unit(name, parsed.index))
        out[kind] = [trace[name][trace.sequence(s), parsed.index].to(torch.float64) for s in sequences]
    if not out:
        raise GatescopeError(f"the trace has none of the kinds {','.join(kinds)} for {parsed.name}")
    return out


def plot_gate_profile(
    trace: Trace,
    unit: str,
    sequences: Sequence[int],
    path: str | os.PathLike,
    kinds: Sequence[str] | None = None,
    labels: Sequence[str] | None = None,
    title: str | None = None,
) -> Path:
    """Draw `gate_profile` (one panel per kind, one line per sequence) and save it to ``path``
    (.png or .svg, written atomically). labels: a legend entry per sequence (default: its text)."""
    path = Path(path)
    fmt = path.suffix.lower().lstrip(".")
    if fmt not in ("png", "svg", "pdf"):
        raise GatescopeError(f"cannot save a figure as {path.name}: use .png, .svg or .pdf")
    if not sequences:
        raise GatescopeError("choose at least one sequence to plot")
    if labels is not None and len(labels) != len(sequences):
        raise GatescopeError(f"{len(labels)} legend labels for {len(sequences)} sequences; give one a sequence")
    profile = gate_profile(trace, unit, sequences, kinds)
    texts = [trace.tokens(trace.sequence(s).start, trace.sequence(s).stop) for s in sequences]
    if labels is None:
        labels = [" ".join(t) for t in texts]
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    fig = Figure(figsize=(2.4 * len(profile), 3.2), layout="constrained")
    axes = fig.subplots(1, len(profile), squeeze=False)[0]
    ticks = _merged_tokens(texts)
    for ax, (kind, series) in zip(axes, profile.items()):
        for values, label in zip(series, labels):
            ax.plot(range(len(values)), values.numpy(), marker="o", markersize=3, label=plain(label))
        ax.set_title({"g": "g (c~)"}.get(kind, kind))
        ax.set_xticks(range(len(ticks)))
        ax.set_xticklabels([plain(t) for t in ticks], rotation=60, fontsize=7)
        if kind in SIGMOID_KINDS:
            ax.set_ylim(-0.05, 1.05)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=6, loc="best")
    fig.suptitle(plain(title or unit), fontsize=9)
    atomic_write(path, lambda tmp: fig.savefig(tmp, format=fmt, dpi=150))
    return path


def _merged_tokens(texts: Sequence[list[str]]) -> list[str]:
    """Per position, the sequences' distinct tokens joined by "/" ("car/cars")."""
    width = max(len(t) for t in texts)
    return ["/".join(dict.fromkeys(t[i] for t in texts if i < len(t))) for i in range(width)]
