"""Result tables as HTML (notebooks) and as plain text (``print``): a ranking `Table`, an agreement result,
a trace's summary rows.

Numbers are shown to 4 significant digits, with the exact value in the cell's hover title; a long
table shows its first rows and says how many it left out (as pandas does, but in words).
"""
from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from html import escape
from typing import Any

MAX_ROWS = 50
STYLE = "border-collapse:collapse;font-family:monospace;font-size:12px"
CELL = "padding:2px 8px;border-bottom:1px solid #ddd;text-align:right"


def shown(value: Any) -> tuple[str, str]:
    """(what a cell shows, the full text): numbers to 4 significant digits, text cut at 80 characters."""
    if isinstance(value, bool) or value is None:
        return ("" if value is None else str(value)), ""
    if isinstance(value, float):
        return ("nan" if math.isnan(value) else f"{value:.4g}"), repr(value)
    if isinstance(value, int):
        return str(value), ""
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return (text if len(text) <= 80 else text[:79] + "…"), text


def cell(value: Any) -> str:
    """One ``<td>``: numbers rounded, with their exact value as a hover title; text escaped."""
    short, full = shown(value)
    if isinstance(value, (bool, int, float)) or value is None:
        title = f' title="{full}"' if isinstance(value, float) else ""
        return f'<td style="{CELL}"{title}>{short}</td>'
    title = "" if short == full else f' title="{escape(full)}"'
    return f'<td style="{CELL};text-align:left"{title}>{escape(short)}</td>'


def table_html(columns: Sequence[str], rows: Sequence[Mapping[str, Any]], caption: str,
               max_rows: int = MAX_ROWS) -> str:
    """An HTML table of ``rows`` (dicts) under ``columns``; at most ``max_rows`` rows, saying so when cut."""
    shown = rows[:max_rows]
    if len(rows) > max_rows:
        caption += f" (cut: the first {max_rows} of {len(rows)} rows shown; to_pandas() has them all)"
    head = "".join(f'<th style="{CELL}">{escape(str(c))}</th>' for c in columns)
    body = "".join("<tr>" + "".join(cell(row.get(c)) for c in columns) + "</tr>" for row in shown)
    return (f'<table class="gatescope-table" style="{STYLE}"><caption style="text-align:left">{escape(caption)}'
            f"</caption><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")


def table_text(columns: Sequence[str], rows: Sequence[Mapping[str, Any]], max_rows: int = MAX_ROWS) -> str:
    """``rows`` under ``columns`` as aligned plain text (numbers right, text left); at most ``max_rows`` rows,
    saying so when cut."""
    cells = [[shown(row.get(c))[0] for c in columns] for row in rows[:max_rows]]
    widths = [max([len(str(c))] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]
    numeric = [all(isinstance(row.get(c), (int, float)) for row in rows[:max_rows]) for c in columns]

    def line(values: Sequence[str]) -> str:
        return "  ".join(v.rjust(w) if n else v.ljust(w) for v, w, n in zip(values, widths, numeric)).rstrip()

    lines = [line([str(c) for c in columns]), *(line(r) for r in cells)]
    if len(rows) > max_rows:
        lines.append(f"… {len(rows) - max_rows} more rows (to_pandas() has them all)")
    return "\n".join(lines)


def agreement_rows(result: Mapping[str, Any]) -> list[dict[str, Any]]:
    """An `evaluate_agreement` result as rows: every item ("all"), then each condition."""
    def row(name: str, summary: Mapping[str, Any]) -> dict[str, Any]:
        low, high = summary.get("ci95", (float("nan"), float("nan")))
        return {"condition": name, "accuracy": summary["accuracy"], "n": summary["n"],
                "mean_logit_diff": summary["mean_logit_diff"], "95% interval": f"{low:.3f}..{high:.3f}"}

    return [row("all", result), *(row(name, by) for name, by in result["by_condition"].items())]


def agreement_html(result: Mapping[str, Any]) -> str:
    """An agreement result as an HTML table, one row per condition."""
    rows = agreement_rows(result)
    return table_html(list(rows[0]), rows, f"agreement accuracy over {result['n']} items", max_rows=len(rows))
