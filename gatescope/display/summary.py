"""A trace's summary for a notebook: its modules, kinds, sequences, tokens and features, and a small heatmap.

What ``Trace._repr_html_`` shows (IPython's rich display). The heatmap is the first units of the first
layer's last recorded quantity (h, when recorded) over the first tokens of the first sequence, drawn
by the same code as `gatescope.show(trace, units=...)`; only those rows are read.
"""
from __future__ import annotations

from html import escape
from typing import Any

from gatescope.display.heatmap import Heatmap
from gatescope.display.selection import spans
from gatescope.display.tables import table_html
from gatescope.names import parse_name

HEATMAP_UNITS = 16
HEATMAP_TOKENS = 48


def layer_rows(trace: Any) -> list[dict[str, Any]]:
    """One row per module, layer and direction: its cell type, hidden size, kinds and dtype."""
    cells = {m.get("name"): m.get("cell") for m in trace.meta.get("modules", [])}
    rows: dict[str, dict[str, Any]] = {}
    for name in trace.names:
        q = parse_name(name)
        layer = name[: -len(q.kind) - 1]
        row = rows.setdefault(layer, {"layer": layer, "cell": cells.get(q.path, "?"), "hidden": 0, "kinds": "",
                                      "dtype": str(trace[name].dtype).replace("torch.", "")})
        row["hidden"] = int(trace[name].shape[1])
        row["kinds"] += q.kind
    return list(rows.values())


def trace_html(trace: Any) -> str:
    """The summary of ``trace`` as self-contained HTML (tables and an inline SVG heatmap)."""
    vocab = trace.vocab
    facts = [f"{trace.num_sequences} sequences", f"{trace.num_tokens} tokens", f"{len(trace)} quantities"]
    if vocab is not None:
        facts.append(f"vocabulary of {len(vocab)} ({trace.meta.get('tokenizer', 'word')})")
    parts = [f"<div class=\"gatescope-trace\"><p><b>Trace</b>: {escape(', '.join(facts))}</p>"]
    layers = layer_rows(trace)
    if layers:
        parts.append(table_html(list(layers[0]), layers, "recorded quantities (names: LAYER.KIND, e.g. "
                                f"{trace.names[0]})"))
    if trace.features:
        features = [{"feature": name, "labelled tokens": int((values == values).sum())}  # not NaN
                    for name, values in trace.features.items()]
        parts.append(table_html(["feature", "labelled tokens"], features, "features (per-token labels)"))
    else:
        parts.append("<p>no features</p>")
    if trace.names and trace.num_tokens:
        first_layer = layers[0]
        name = f"{first_layer['layer']}.{first_layer['kinds'][-1]}"
        units = [(name, i) for i in range(min(HEATMAP_UNITS, first_layer["hidden"]))]
        notes = [f"cut: units 0-{len(units) - 1} of {first_layer['hidden']} shown"] \
            if len(units) < first_layer["hidden"] else []
        first = trace.sequence_of(0)  # the first sequence with tokens
        picked, cut = spans(trace.offsets.numpy(), [first], None, HEATMAP_TOKENS)
        heatmap = Heatmap(trace, units, picked, notes + cut, title=f"{name}, sequence {first}")
        parts.append(heatmap._repr_html_())
    parts.append("</div>")
    return "".join(parts)
