"""Result tables of the analyses: rows of named values, written to CSV or JSON, read into pandas.

Every analysis (unit ranking, saturation, probes, ablation sweeps) returns a `Table`: a list of
rows (dicts with the same keys, best first where there is an order). NaN becomes ``null`` in JSON.
pandas is not a dependency; `Table.to_pandas` imports it when asked.
"""
from __future__ import annotations

import csv
import io
import json
import math
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from gatescope.errors import GatescopeError
from gatescope.files import atomic_write


class Table(Sequence[dict[str, Any]]):
    """Rows of an analysis result; ``table[i]`` is a dict, ``table["score"]`` a column (a list)."""

    def __init__(self, rows: list[dict[str, Any]], columns: list[str] | None = None) -> None:
        self.rows = rows
        self.columns = columns if columns is not None else (list(rows[0]) if rows else [])

    def __len__(self) -> int:
        return len(self.rows)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(self.rows)

    def __getitem__(self, key: int | slice | str) -> Any:  # int -> row, slice -> Table, str -> column
        if isinstance(key, str):
            if key not in self.columns:
                raise GatescopeError(f"no column {key!r}; the table has: {', '.join(self.columns)}")
            return [row.get(key) for row in self.rows]
        if isinstance(key, slice):
            return Table(self.rows[key], self.columns)
        return self.rows[key]

    def head(self, k: int) -> Table:
        """The first ``k`` rows."""
        return Table(self.rows[:k], self.columns)

    def to_records(self) -> list[dict[str, Any]]:
        """The rows as a list of plain dicts (copies)."""
        return [{c: row.get(c) for c in self.columns} for row in self.rows]

    def to_json(self, path: str | os.PathLike | None = None, indent: int | None = None) -> str:
        """A JSON list of row objects (NaN -> null); also written atomically to ``path`` when given."""
        text = json_text(self.to_records(), indent)
        if path is not None:
            atomic_write(path, lambda tmp: Path(tmp).write_text(text))
        return text

    def to_csv(self, path: str | os.PathLike | None = None) -> str:
        """CSV with a header row; also written atomically to ``path`` when given."""
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=self.columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(self.to_records())
        text = buf.getvalue()
        if path is not None:
            atomic_write(path, lambda tmp: Path(tmp).write_text(text))
        return text

    def to_pandas(self) -> Any:
        """A pandas DataFrame of the rows (needs pandas, which gatescope does not depend on)."""
        try:
            import pandas as pd
        except ImportError:
            raise GatescopeError("to_pandas needs pandas: pip install pandas") from None
        return pd.DataFrame(self.to_records(), columns=self.columns)

    def __repr__(self) -> str:
        return f"Table({len(self)} rows: {', '.join(self.columns)})"

    def __str__(self) -> str:
        """The rows as aligned text (``print(table.head(3))``); the first 50 when there are more."""
        from gatescope.display.tables import table_text

        return table_text(self.columns, self.rows)

    def _repr_html_(self) -> str:
        """The rows as an HTML table in a notebook (gatescope.display.tables)."""
        from gatescope.display.tables import table_html

        return table_html(self.columns, self.rows, f"Table: {len(self)} rows")


def json_text(value: Any, indent: int | None = None) -> str:
    """``value`` as strict JSON: every non-finite float null (`jsonable`), never the ``NaN`` JSON parsers refuse."""
    return json.dumps(jsonable(value), indent=indent, allow_nan=False)


def jsonable(value: Any) -> Any:
    """``value`` with every non-finite float, at any depth of lists and dicts, replaced by None (JSON null)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    return value
