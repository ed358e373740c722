"""Ranked units: the units of the current quantity ordered by a score, in a table.

Scores come from gatescope.tui.ranking (correlation with a trace feature, or saturation),
computed in a thread worker that streams the trace, so the app stays responsive on a
million-token trace; a new request cancels the running one. Selecting a row sends
`UnitChosen`, and the app moves the heatmap and the text view to that unit.
"""
from __future__ import annotations

import math

import numpy as np
from textual import on, work
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import Button, DataTable, Label, Select
from textual.worker import get_current_worker

from gatescope.tui import ranking
from gatescope.tui.messages import UnitChosen
from gatescope.tui.source import TraceSource

SATURATION = "saturation"
TOP = 100  # rows shown
AUTO_LIMIT = 2**25  # values (rows x units): rank larger quantities only when asked (it streams the whole quantity)


class RankedUnits(Vertical):
    """A chooser (features, saturation), a status line and the table of the top units."""

    def __init__(self, source: TraceSource, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.source = source
        self.quantity = ""
        self.scores: np.ndarray | None = None
        self.order: list[int] = []

    def compose(self) -> ComposeResult:
        options = [(f"feature: {f}", f) for f in self.source.data.features] + [("saturation", SATURATION)]
        yield Select(options, value=options[0][1], allow_blank=False, id="rank-by")
        yield Label("", id="rank-status")
        yield Button("rank", id="rank-now", compact=True)
        table = DataTable(cursor_type="row", zebra_stripes=True, id="rank-table")
        table.add_columns("#", "unit", "score")
        yield table

    @property
    def criterion(self) -> str:
        return str(self.query_one("#rank-by", Select).value)

    def choose(self, criterion: str) -> None:
        """Rank by ``criterion`` (a feature name or "saturation"), now."""
        select = self.query_one("#rank-by", Select)
        if select.value == criterion:
            self.rank()
        else:
            select.value = criterion  # -> Select.Changed -> rank()

    def show(self, name: str) -> None:
        """Show quantity ``name``: rank its units now if it is small, else offer the rank button."""
        if name == self.quantity:
            return
        self.quantity = name
        if self.source.num_tokens * int(self.source.data.arrays[name].shape[1]) <= AUTO_LIMIT:
            self.rank()
            return
        self.scores = None
        self.query_one("#rank-table", DataTable).clear()
        gigabytes = self.source.data.arrays[name].nbytes / 1e9
        self.query_one("#rank-status", Label).update(f"{name}: {gigabytes:.1f} GB to read; press rank")
        self.query_one("#rank-now", Button).display = True

    @on(Select.Changed, "#rank-by")
    @on(Button.Pressed, "#rank-now")
    def _asked(self) -> None:
        if self.quantity:
            self.rank()

    def rank(self) -> None:
        """Rank the units of the current quantity by the chosen criterion, in a worker."""
        self.query_one("#rank-now", Button).display = False
        self.scores = None
        self.query_one("#rank-table", DataTable).clear()
        self.query_one("#rank-status", Label).update(f"ranking {self.quantity} by {self.criterion} …")
        self._rank(self.quantity, self.criterion)

    @work(thread=True, exclusive=True, group="rank")
    def _rank(self, name: str, criterion: str) -> None:
        worker = get_current_worker()
        data = self.source.data

        def progress(done: float) -> bool:
            return not worker.is_cancelled

        if criterion == SATURATION:
            scores = ranking.saturation(data, name, progress)
            key = scores
        else:
            scores = ranking.correlation(data, name, data.features[criterion], progress)
            key = np.abs(scores)
        if worker.is_cancelled:
            return
        order = np.argsort(-np.nan_to_num(key, nan=-1.0), kind="stable")[:TOP].tolist()
        self.app.call_from_thread(self._fill, name, criterion, scores, order)

    def _fill(self, name: str, criterion: str, scores: np.ndarray, order: list[int]) -> None:
        self.scores, self.order = scores, order
        label = "saturated fraction" if criterion == SATURATION else f"Pearson r with {criterion}"
        self.query_one("#rank-status", Label).update(f"{name}: {label}")
        table = self.query_one("#rank-table", DataTable)
        table.clear()
        for rank, unit in enumerate(order, 1):
            score = float(scores[unit])
            table.add_row(str(rank), str(unit), "nan" if math.isnan(score) else f"{score:+.3f}", key=str(unit))

    @on(DataTable.RowSelected, "#rank-table")
    def _selected(self, event: DataTable.RowSelected) -> None:
        self.post_message(UnitChosen(int(event.row_key.value)))
