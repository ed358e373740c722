"""`gatescope.show`: one unit over text, or a units x tokens heatmap, of a trace in a notebook."""
from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from typing import Any

from gatescope.display.contributions import ContributionText
from gatescope.display.heatmap import Heatmap
from gatescope.display.selection import as_sequences, spans
from gatescope.display.unit_text import UnitText
from gatescope.errors import GatescopeError
from gatescope.names import parse_name, parse_unit

MAX_TEXT_TOKENS = 2000  # tokens of text drawn by one show(unit=...)
MAX_HEATMAP_TOKENS = 200  # columns of one heatmap
MAX_HEATMAP_UNITS = 128  # rows of one heatmap


def show(trace: Any, unit: str | None = None, *, units: Iterable[Any] | None = None,
         sequences: int | Iterable[int] | None = None, kinds: str | Iterable[str] | None = None,
         window: tuple[int, int] | None = None, max_tokens: int | None = None,
         max_units: int = MAX_HEATMAP_UNITS, correct: int | None = None, wrong: int | None = None,
         at: int = -1) -> UnitText | Heatmap | ContributionText:
    """A figure of ``trace`` that displays itself in a notebook; ``.save("x.html")`` or ``.save("x.svg")`` writes it.

    Args:
        trace: a `gatescope.Trace`, or a trace file's path.
        unit: one unit, e.g. ``"rnn.l0.fwd.c:160"``: the tokens coloured by it (Karpathy et al. 2015), and
            under them each of ``kinds`` of the same unit as a line plot.
        units: unit names, or rows of a ranking Table: a units x tokens heatmap (give ``unit`` or ``units``).
        sequences: the sequences drawn (default: the first).
        kinds: the kinds drawn (default: every kind recorded for the unit's layer); with ``units``, each unit
            in each of those kinds of its layer.
        window: ``(start, stop)`` positions within each sequence.
        max_tokens: at most this many tokens are drawn (default: 2000 of text, 200 heatmap columns); the
            figure says what it cut.
        max_units: at most this many heatmap rows.

    With a `gatescope.analysis.decomposition.Decomposition` of one sequence instead of a trace: its tokens
    coloured by their contribution to logit[correct] - logit[wrong] at step ``at`` (default the last; ids), or
    with ``unit`` to that unit's value at step ``at`` (a `ContributionText`).

    Returns:
        The figure (a `UnitText` for ``unit``, a `Heatmap` for ``units``).

    Raises:
        GatescopeError: neither or both of ``unit`` and ``units``, a unit or kind the trace does not hold.
    """
    if hasattr(trace, "logit_difference"):
        return _contributions(trace, unit, correct, wrong, at)
    if (unit is None) == (units is None):
        raise GatescopeError("show: give unit='rnn.l0.fwd.h:3' (one unit over text) or units=[...] (a heatmap)")
    if isinstance(trace, (str, os.PathLike)):
        from gatescope.traces.trace import load_trace

        trace = load_trace(trace)
    chosen = as_sequences(sequences, trace.num_sequences)
    offsets = trace.offsets.numpy()  # (S+1,)
    if unit is not None:
        name, index = _check_unit(trace, unit)
        layer_kinds = _layer_kinds(trace, name)
        plotted = layer_kinds if kinds is None else _check_kinds(kinds, layer_kinds, name)
        picked, notes = spans(offsets, chosen, window, MAX_TEXT_TOKENS if max_tokens is None else max_tokens)
        return UnitText(trace, unit.strip(), name, index, plotted, picked, notes)
    rows = []
    for item in units:
        name, index = _check_unit(trace, item["unit"] if isinstance(item, Mapping) else item)
        if kinds is None:
            rows.append((name, index))
            continue
        layer = name[: -len(parse_name(name).kind)]
        rows += [(layer + k, index) for k in _check_kinds(kinds, _layer_kinds(trace, name), name)]
    if not rows:
        raise GatescopeError("show: units=[] names no unit")
    notes = []
    if len(rows) > max_units:
        notes.append(f"cut: {len(rows)} units asked for; showing the first {max_units} (max_units={max_units})")
        rows = rows[:max_units]
    picked, cut = spans(offsets, chosen, window, MAX_HEATMAP_TOKENS if max_tokens is None else max_tokens)
    return Heatmap(trace, rows, picked, notes + cut)


def _contributions(result: Any, unit: str | None, correct: int | None, wrong: int | None,
                   at: int) -> ContributionText:
    """A decomposition's tokens coloured by their contribution to a logit difference or to one unit."""
    if result.logits.dim() != 3:
        raise GatescopeError("show: a decomposition of one sequence (ids [T]) is drawn; this one holds a batch")
    if unit is not None:
        name, index = parse_unit(unit)
        if name not in result.quantities:
            raise GatescopeError(f"show: the decomposition has no {name}; it has: {', '.join(result.quantities)}")
        values = result.quantities[name][:, at, index].numpy()  # (P,)
        return ContributionText(result, values, float(result.actual[name][at, index]), f"{unit} at step {at}")
    if correct is None or wrong is None:
        raise GatescopeError("show: give correct= and wrong= (token ids) or unit= for a decomposition")
    values = result.logit_difference(at, correct, wrong).numpy()
    actual = result.actual["logits"][at]
    return ContributionText(result, values, float(actual[correct] - actual[wrong]),
                            f"logit[{correct}] - logit[{wrong}] at step {at}")


def _check_unit(trace: Any, unit: Any) -> tuple[str, int]:
    """A unit name's quantity and index, checked against the trace (one-line errors)."""
    if not isinstance(unit, str):
        raise GatescopeError(f"show: expected a unit name such as 'rnn.l0.fwd.h:3', got {unit!r}")
    name, index = parse_unit(unit)
    width = int(trace[name].shape[1])  # an unknown quantity is a GatescopeError naming those recorded
    if index >= width:
        raise GatescopeError(f"unit {unit.strip()}: index {index} is out of range ({name} has {width} units)")
    return name, index


def _layer_kinds(trace: Any, name: str) -> list[str]:
    """The kinds recorded for the layer of quantity ``name``, in the trace's order."""
    layer = name[: -len(parse_name(name).kind)]
    return [n[len(layer):] for n in trace.names if n.startswith(layer) and len(n) == len(layer) + 1]


def _check_kinds(kinds: str | Iterable[str], recorded: list[str], name: str) -> list[str]:
    """``kinds`` ("g,i,f" or a list) as a list, each recorded for the layer of ``name``."""
    asked = [k.strip() for k in (kinds.split(",") if isinstance(kinds, str) else kinds)]
    asked = [k for k in asked if k]
    missing = [k for k in asked if k not in recorded]
    if missing or not asked:
        layer = name[: -len(parse_name(name).kind) - 1]
        raise GatescopeError(f"kinds {','.join(missing) or '(none)'} not recorded for {layer}; "
                             f"it has: {','.join(recorded)}")
    return asked
