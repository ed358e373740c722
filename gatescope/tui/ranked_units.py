"""Ranked units: the units of the current quantity ordered by a score, in a table.

Scores come from gatescope.tui.ranking (correlation with a trace feature, or saturation),
computed in a thread worker that streams the trace, so the app stays responsive on a
million-token trace; a new request cancels the running one; or from a ranking file
(gatescope.tui.ranking_file, `gatescope analyze units --json`). The status line names where
the scores came from. Selecting a row sends `UnitChosen`, and the app moves the heatmap and
the text view to that unit. On opening, `rank_best_feature` ranks by every feature and keeps
the one whose best unit scores highest, with the cursor on that unit.
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
from gatescope.tui.ranking_file import FileRanking
from gatescope.tui.source import TraceSource

SATURATION = "saturation"
FILE = "file"
TOP = 100  # rows shown
AUTO_LIMIT = 2**25  # values (rows x units): rank larger quantities only when asked (it streams the whole quantity)


class RankedUnits(Vertical):
    """A chooser (features, saturation), a status line and the table of the top units."""

    def __init__(self, source: TraceSource, file_ranking: FileRanking | None = None, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.source = source
        self.file_ranking = file_ranking
        self.quantity = ""
        self.scores: np.ndarray | None = None
        self.order: list[int] = []
        self._ranked: tuple[str, str] | None = None  # (quantity, criterion) of the running or shown ranking

    def compose(self) -> ComposeResult:
        options = [(f"file: {self.file_ranking.path.name}", FILE)] if self.file_ranking else []
        options += [(f"feature: {f}", f) for f in self.source.data.features] + [("saturation", SATURATION)]
        yield Select(options, value=options[0][1], allow_blank=False, id="rank-by")
        yield Label("", id="rank-status")
        button = Button("rank", id="rank-now", compact=True)
        button.display = False  # shown only when a large quantity waits to be ranked
        yield button
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

    def small(self, name: str) -> bool:
        """Whether ranking ``name`` is cheap enough to do without being asked."""
        return self.source.num_tokens * int(self.source.data.arrays[name].shape[1]) <= AUTO_LIMIT

    def show(self, name: str, rank: bool = True) -> None:
        """Show quantity ``name``: rank its units now if it is small (or ranked by a file), else offer the button.

        rank: False to leave the ranking to the caller (`rank_best_feature`).
        """
        if name == self.quantity:
            return
        self.quantity = name
        if not rank:
            return
        if self.criterion == FILE or self.small(name):
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
        if self.quantity and self._ranked != (self.quantity, self.criterion):
            self.rank()

    def rank(self) -> None:
        """Rank the units of the current quantity by the chosen criterion, in a worker (a file: at once)."""
        self.query_one("#rank-now", Button).display = False
        self.scores = None
        self._ranked = (self.quantity, self.criterion)
        self.query_one("#rank-table", DataTable).clear()
        if self.criterion == FILE:
            self._from_file(self.quantity)
            return
        self.query_one("#rank-status", Label).update(f"ranking {self.quantity} by {self.criterion} …")
        self._rank(self.quantity, self.criterion)

    def _from_file(self, name: str) -> None:
        ranking = self.file_ranking
        ranked = ranking.units.get(name, [])
        if not ranked:
            self.query_one("#rank-status", Label).update(
                f"{ranking.path.name} ranks no unit of {name} (it ranks {', '.join(ranking.units)})")
            return
        scores = np.full(int(self.source.data.arrays[name].shape[1]), np.nan)
        for unit, score in ranked:
            scores[unit] = score
        self._fill(name, FILE, scores, [unit for unit, _ in ranked][:TOP])

    def rank_best_feature(self) -> None:
        """Rank by each feature, keep the one whose best unit scores highest, and put the cursor on that unit."""
        if not (self.source.data.features and self.small(self.quantity)):
            self.quantity, name = "", self.quantity
            self.show(name)  # the first criterion, or the rank button
            return
        self._ranked = (self.quantity, "best feature")
        self.query_one("#rank-status", Label).update(f"ranking {self.quantity} by every feature …")
        self._rank_best(self.quantity)

    @work(thread=True, exclusive=True, group="rank")
    def _rank_best(self, name: str) -> None:
        worker = get_current_worker()
        data = self.source.data
        best: tuple[float, str, np.ndarray] | None = None
        for feature, values in data.features.items():
            scores = ranking.correlation(data, name, values, lambda done: not worker.is_cancelled)
            if worker.is_cancelled:
                return
            top = float(np.nanmax(np.abs(scores))) if np.isfinite(scores).any() else -1.0
            if best is None or top > best[0]:
                best = (top, feature, scores)
        _, feature, scores = best
        order = np.argsort(-np.nan_to_num(np.abs(scores), nan=-1.0), kind="stable")[:TOP].tolist()
        self.app.call_from_thread(self._fill_best, name, feature, scores, order)

    def _fill_best(self, name: str, feature: str, scores: np.ndarray, order: list[int]) -> None:
        if name != self.quantity:  # the user switched quantity meanwhile: that ranking stands
            return
        self._ranked = (name, feature)
        self.query_one("#rank-by", Select).value = feature  # Changed: already ranked, nothing to do
        self._fill(name, feature, scores, order)
        self.post_message(UnitChosen(order[0]))

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
        label = {SATURATION: "saturated fraction", FILE: self.file_ranking.label if self.file_ranking else ""}.get(
            criterion, f"Pearson r with {criterion}")
        self.query_one("#rank-status", Label).update(f"{name}: {label}")
        table = self.query_one("#rank-table", DataTable)
        table.clear()
        for rank, unit in enumerate(order, 1):
            score = float(scores[unit])
            table.add_row(str(rank), str(unit), "nan" if math.isnan(score) else f"{score:+.3f}", key=str(unit))

    @on(DataTable.RowSelected, "#rank-table")
    def _selected(self, event: DataTable.RowSelected) -> None:
        self.post_message(UnitChosen(int(event.row_key.value)))
