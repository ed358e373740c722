"""How a command prints its result: ``--json`` as strict JSON on stdout, and rows of values as a rich table.

Every command's ``--json`` goes through `print_json`: NaN and infinities print as null (never the ``NaN`` that
JSON parsers refuse), in the indentation that command has always used. `print_table` prints the analyses'
rows, one value a cell, on the report console (gatescope.cli.report_console).
"""
from __future__ import annotations

import math
from typing import Any

import click


def print_json(data: Any, indent: int | None = None) -> None:
    """Print ``data`` on stdout as strict JSON (gatescope.analysis.table.json_text)."""
    from gatescope.analysis.table import json_text

    click.echo(json_text(data, indent))


def _cell(value: Any) -> str:
    """A value as a table shows it: floats to 3 places (small ones in 2 significant digits), NaN as -."""
    if isinstance(value, float):
        if math.isnan(value):
            return "-"
        return f"{value:.2g}" if abs(value) < 1e-2 and value != 0 else f"{value:.3f}"
    if isinstance(value, list):
        return ", ".join(map(str, value))
    if isinstance(value, dict):
        return " ".join(f"{k}:{_cell(v)}" for k, v in value.items())
    return str(value).replace("\n", "\\n").replace("\t", "\\t")  # char traces: keep rows on one line


def print_table(rows: list[dict[str, Any]], columns: list[str], title: str) -> None:
    """Print ``columns`` of ``rows`` as a table under ``title`` (names kept on one line, other cells folded)."""
    from rich.table import Table

    from gatescope.cli import report_console

    table = Table(title=title, title_justify="left")
    for column in columns:
        table.add_column(column, overflow="fold", no_wrap=column in ("unit", "name", "token"))
    for row in rows:
        table.add_row(*(_cell(row.get(c)) for c in columns))
    report_console().print(table)
