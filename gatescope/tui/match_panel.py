"""The match panel: the spans that match the selection, best first, as LSTMVis's match view lists them.

Each match shows its text in context (a few tokens either side, the matched span highlighted),
its sequence and position, and its score (the fraction of the selected step x unit cells that
are on, as gatescope.analysis.patterns ranks them); the header says how many candidate spans
there were and what the features of the trace look like over the matches. Selecting a row
sends `MatchChosen`, and the app moves every view there.
"""
from __future__ import annotations

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import DataTable, Label

from gatescope.tui.matching import MatchResult
from gatescope.tui.messages import MatchChosen
from gatescope.tui.source import TraceSource

SPAN = "bold black on #ffd75f"
CONTEXT = "#b0b0b0"


class MatchPanel(Vertical):
    """A status line, the feature summaries and the table of matches."""

    def __init__(self, source: TraceSource, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.source = source
        self.result: MatchResult | None = None
        self.context = 8 if source.tokenizer == "char" else 3  # tokens shown either side

    def compose(self) -> ComposeResult:
        yield Label("", id="match-status")
        yield Label("", id="match-features")
        table = DataTable(cursor_type="row", zebra_stripes=True, id="match-table")
        table.add_columns("#", "seq:pos", "score", "text")
        yield table

    def say(self, text: str, layout: bool = True) -> None:
        """Put a message in the status line (working, or why there is nothing); layout=False: a one-liner
        that does not change the panel's layout (progress)."""
        self.query_one("#match-status", Label).update(text, layout=layout)

    def clear(self) -> None:
        self.result = None
        self.say("")
        self.query_one("#match-features", Label).update("")
        self.query_one("#match-table", DataTable).clear()

    def show(self, result: MatchResult) -> None:
        """Fill the table with ``result``'s matches."""
        self.result = result
        chosen = result.selection
        table = self.query_one("#match-table", DataTable)
        table.clear()
        features = self.query_one("#match-features", Label)
        if not chosen.units:
            self.say(f"no unit of {chosen.name} is above {chosen.threshold:g} over all of rows "
                     f"{chosen.start}:{chosen.stop}: lower the threshold ([) or add units (a)")
            features.update("")
            return
        units = len(chosen.units)
        self.say(f"{len(result.starts):,} of {result.candidates:,} candidate spans · {units} unit{'s' * (units != 1)} "
                 f"> {chosen.threshold:g} over {chosen.length} tokens")
        features.update("\n".join(result.summaries))
        features.display = bool(result.summaries)
        rows = []
        for rank, (start, matched) in enumerate(zip(result.starts, result.matched), 1):
            sequence = self.source.sequence_of(start)
            position = start - self.source.sequence_rows(sequence)[0]
            rows.append((str(rank), f"{sequence}:{position}", f"{matched / result.cells:.2f}", start))
        # the text gets what the other columns leave of the panel (each column is padded by a cell either side,
        # one cell for the scrollbar), cut with an ellipsis rather than by the panel's edge
        fixed = sum(max([len(header)] + [len(row[i]) for row in rows]) + 2
                    for i, header in enumerate(("#", "seq:pos", "score")))
        room = max(self.size.width - fixed - 3, 8)
        for rank, where, score, start in rows:
            table.add_row(rank, where, score, self.in_context(start, start + chosen.length, room), key=str(start))

    def in_context(self, start: int, stop: int, width: int | None = None) -> Text:
        """The span's tokens, highlighted, with ``context`` tokens of its sequence either side; in ``width``
        cells, the context before is cut first (from its start, with "…"), so the span itself stays in view."""
        first, last = self.source.sequence_rows(self.source.sequence_of(start))
        before = self.source.tokens(max(first, start - self.context), start)
        after = self.source.tokens(stop, min(last, stop + self.context))
        join = self.source.join
        gap = "" if self.source.tokenizer == "char" else " "
        left, span = join(before) + (gap if before else ""), join(self.source.tokens(start, stop))
        if width is not None and len(left) + len(span) > width:
            keep = width - len(span) - 1 - bool(after)  # the cells for the context before: one "…" each end
            left = "…" + left[len(left) - keep:] if keep > 0 else ""
        text = Text(left, style=CONTEXT)
        text.append(span, style=SPAN)
        text.append((gap if after else "") + join(after), style=CONTEXT)
        if width is not None:
            text.truncate(width, overflow="ellipsis")
        return text

    @on(DataTable.RowSelected, "#match-table")
    def _selected(self, event: DataTable.RowSelected) -> None:
        if self.result is not None:
            start = int(event.row_key.value)
            self.post_message(MatchChosen((start, start + self.result.selection.length)))
