"""The trace browser: a Textual app over one trace (`gatescope browse TRACE`).

The app owns the selection (module/layer/direction, kind, unit, token row, and a
select-and-match span) and moves every view to it; widgets report the user's picks with
messages (gatescope.tui.messages). The views: the heatmap (units x tokens, Line API), the
meta tracks (the trace's features under it), the unit detail (every kind of the cursor's
unit), the selection plot and the match panel (LSTMVis's select-and-match, Strobelt et al.
2018), the text view (Karpathy et al. 2015), the sequence list and the ranked units; `C`
opens two sequences side by side (gatescope.tui.compare). The trace is read lazily
(gatescope.tui.source) as numpy arrays (gatescope.tui.arrays): a file is memory-mapped
without importing torch, so a million-token file opens at once; the analysis layer (and
torch) is loaded in a worker when the first span is selected.
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

import numpy as np
from rich.text import Text
from textual import on, work
from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.widgets import Footer, Label, Static
from textual.worker import get_current_worker

from gatescope.errors import GatescopeError
from gatescope.tui.colors import contribution_styles
from gatescope.kinds import ALL_KINDS
from gatescope.names import parse_unit
from gatescope.numbers import whole_number
from gatescope.tui import export, features, matching
from gatescope.tui.arrays import trace_file
from gatescope.tui.commands import BrowserCommands
from gatescope.tui.compare import CompareScreen, PairView
from gatescope.tui.explain_panel import ExplainModel, ExplainScreen
from gatescope.tui.heatmap import Heatmap
from gatescope.tui.help_screen import HelpScreen
from gatescope.tui.match_panel import MatchPanel
from gatescope.tui.matching import MatchResult, SpanSelection
from gatescope.tui.messages import MatchChosen, RowChosen, SequenceChosen, SpanChosen, UnitChosen
from gatescope.tui.meta_tracks import MetaTracks
from gatescope.tui.prompt import Prompt
from gatescope.tui.ranked_units import RankedUnits
from gatescope.tui.ranking_file import FileRanking, read_ranking
from gatescope.tui.selection_plot import SelectionPlot
from gatescope.tui.sequence_list import SequenceList
from gatescope.tui.source import Block, Layer, TraceSource
from gatescope.tui.text_view import TextView
from gatescope.tui.unit_detail import UnitDetail

if TYPE_CHECKING:
    from gatescope.traces.file import TraceFile
    from gatescope.traces.trace import Trace

OPENING_KINDS = ("c", "h")  # what a browser opens on: the LSTM's cell state, else the hidden state
MATCH_LEAD = 4  # tokens shown before a match the views move to
# the app's actions that still act over the split view
COMPARE_ACTIONS = frozenset({"quit", "help", "export_svg", "command_palette", "pop_screen"})


class GatescopeApp(App[None]):
    """Browse one trace: heatmap, unit detail, text view, sequences and ranked units."""

    CSS_PATH = "app.tcss"
    TITLE = "gatescope"
    COMMANDS = App.COMMANDS | {BrowserCommands}
    HORIZONTAL_BREAKPOINTS: ClassVar[list[tuple[int, str]]] = [(0, "-narrow"), (100, "-wide")]
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("question_mark", "help", "help"),
        Binding("slash", "search", "search"),
        Binding("N", "search_next", "next match", show=False),
        Binding("u", "goto_unit", "unit"),
        Binding("number_sign", "goto_sequence", "sequence"),
        Binding("k", "next_kind", "kind"),
        Binding("L", "next_layer", "layer"),
        Binding("D", "toggle_direction", "direction"),
        Binding("M", "next_module", "module"),
        Binding("left_square_bracket", "threshold(-1)", "thr -", show=False),
        Binding("right_square_bracket", "threshold(1)", "thr +", show=False),
        Binding("a", "toggle_unit", "add/remove unit", show=False),
        Binding("A", "only_unit", "only this unit", show=False),
        Binding("R", "restrict", "selected units"),
        Binding("escape", "clear_selection", "clear selection", show=False),
        Binding("C", "compare", "compare"),
        Binding("x", "explain", "explain"),
        Binding("W", "toggle_contributions", "contributions"),
        Binding("e", "export_svg", "svg"),
        Binding("E", "export_png", "png"),
        Binding("q", "quit", "quit"),
        *(Binding(k, f"kind('{k}')", f"kind {k}", show=False) for k in ALL_KINDS),
    ]

    def __init__(
        self,
        trace: Trace | TraceFile | str | os.PathLike,
        *,
        title: str = "",
        export_dir: str | os.PathLike | None = None,
        ranking: str | os.PathLike | None = None,
        start: str | None = None,
        model: str | os.PathLike | None = None,
    ) -> None:
        """ranking: a `gatescope analyze units --json` file for the ranked panel (checked now, one-line errors).

        start: open on this quantity or unit (``rnn.l0.fwd.i`` or ``rnn.l0.fwd.i:3``) instead of the defaults
        (the cell state c, else h; with features, the unit that tracks one best).
        model: the checkpoint the explain panel runs (default: the one the trace's metadata names).
        """
        self.source = TraceSource(trace_file(trace))  # GatescopeError on an unusable trace, before the UI starts
        self.file_ranking: FileRanking | None = None if ranking is None else read_ranking(ranking, self.source.data)
        super().__init__()
        self.sub_title = title
        self.export_dir = Path(export_dir) if export_dir is not None else Path.cwd()
        self.layer: Layer = self.source.layers[0]
        self.kind = next((k for k in OPENING_KINDS if k in self.layer.kinds), self.layer.kinds[0])
        self.start_unit: int | None = None
        if start is None and self.file_ranking is not None:
            start = "{}:{}".format(*self.file_ranking.best)
        if start is not None:
            self._open_on(start)
        self.last_search = ""
        self.selection: SpanSelection | None = None
        self.result: MatchResult | None = None
        self.tracks: list[features.Track] = []
        self.explainer = ExplainModel(model if model is not None else self.source.data.meta.get("model"))
        self.contributing = False  # the text coloured by each token's contribution to the cursor's unit (w)

    def _open_on(self, where: str) -> None:
        """Start on a quantity or unit, given by name; GatescopeError when the trace has no such thing."""
        name, unit = parse_unit(where) if ":" in where else (where, None)
        if name not in self.source.data.arrays:
            raise GatescopeError(f"the trace has no quantity {name}")
        label, self.kind = name.rsplit(".", 1)
        self.layer = next(l for l in self.source.layers if l.label == label and self.kind in l.kinds)
        self.start_unit = unit

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """Over the split view, only the actions that make sense there (not the main screen's moves)."""
        if isinstance(self.screen, CompareScreen):
            return action in COMPARE_ACTIONS
        return True

    @property
    def name_shown(self) -> str:
        """The quantity in the heatmap, e.g. ``rnn.l0.fwd.f``."""
        return self.layer.name(self.kind)

    def compose(self) -> ComposeResult:
        yield Static(id="status")
        with Horizontal(id="main"):
            with Vertical(id="views"):
                yield Heatmap(self.source, id="heatmap")
                yield MetaTracks(id="tracks")
                yield UnitDetail(self.source, id="detail")
                yield SelectionPlot(self.source, id="plot")
                yield TextView(self.source, id="text")
            with Vertical(id="side"):
                yield Label(f"sequences ({self.source.num_sequences})", classes="title")
                yield SequenceList(self.source, id="sequences")
                yield Label("ranked units", classes="title")
                yield RankedUnits(self.source, self.file_ranking, id="ranked")
                yield Label("matches", classes="title", id="matches-title")
                yield MatchPanel(self.source, id="matches")
        yield Footer()

    @property
    def heatmap(self) -> Heatmap:
        return self.query_one(Heatmap)

    def on_mount(self) -> None:
        self.watch(self.heatmap, "cursor", self._update_views, init=False)
        self.watch(self.heatmap, "scroll_x", self._window_moved, init=False)
        self._show_selection_views(False)
        self.query_one(MetaTracks).display = False
        self.heatmap.focus()
        self.heatmap.show(self.layer, self.kind)
        ranked = self.query_one(RankedUnits)
        best_feature = self.start_unit is None and self.file_ranking is None
        ranked.show(self.name_shown, rank=not best_feature)
        if self.start_unit is not None:
            self.heatmap.move_to(self.start_unit, 0)  # the cursor at once, then in view once the heatmap has a size
            self.call_after_refresh(lambda: self.heatmap.move_to(self.heatmap.unit, self.heatmap.row))
        if best_feature:
            ranked.rank_best_feature()
        if self.source.data.features or self.source.data.meta.get("lexicon"):
            self._classify_tracks()
        self.call_after_refresh(self._update_views)  # once the heatmap knows its size

    @work(thread=True, group="tracks")
    def _classify_tracks(self) -> None:
        """Classify the features for drawing (one pass over each), off the first screen's path."""
        found = features.tracks(self.source.data)
        self.call_from_thread(self._tracks_ready, found)

    def _tracks_ready(self, found: list[features.Track]) -> None:
        self.tracks = found
        self.query_one(MetaTracks).set_tracks(found)
        self._update_views()

    def _show_selection_views(self, shown: bool) -> None:
        for selector in ("#matches", "#matches-title"):
            widget = self.query_one(selector)
            if widget.display != shown:
                widget.display = shown

    def on_resize(self) -> None:
        self.call_after_refresh(self._update_views)

    # -- keeping the views together ------------------------------------------------------------
    def _window_moved(self) -> None:
        """The heatmap scrolled (mouse, scrollbar): realign the unit detail once it has settled."""

        def realign() -> None:
            detail = self.query_one(UnitDetail)
            if (detail.start, detail.stop) != self.heatmap.visible_rows():
                self._update_views()

        self.call_after_refresh(realign)

    def _update_views(self) -> None:
        heatmap = self.heatmap
        unit, row = heatmap.unit, heatmap.row
        window, columns, indent = heatmap.visible_rows(), heatmap.columns, heatmap.gutter_width
        self.query_one(UnitDetail).show(self.layer, unit, row, window, columns, indent)
        self.query_one(MetaTracks).show(window, columns, indent)
        chosen = self.selection
        plot = self.query_one(SelectionPlot)
        shown = chosen is not None and bool(chosen.units) and chosen.name == self.name_shown
        if plot.display != shown:
            plot.display = shown
        if shown and chosen.threshold is not None:
            plot.show(self.name_shown, chosen.units, chosen.threshold,
                      (chosen.start, chosen.stop), window, columns, indent)
        span = None if chosen is None else (chosen.start, chosen.stop)
        self.query_one(TextView).show(self.name_shown, unit, row, span)
        if self.contributing:
            self._colour_by_contributions(unit, row)
        sequence = self.source.sequence_of(row)
        self.query_one(SequenceList).highlight(sequence)
        self.query_one("#status", Static).update(self._status(unit, row, sequence), layout=False)
        self._prefetch()

    def _prefetch(self) -> None:
        """Read what the unit detail lacks (every kind, visible rows), then the pages around, in a thread."""
        start, stop = self.heatmap.visible_rows()
        page = stop - start
        names = [self.layer.name(k) for k in self.layer.kinds]
        row = self.heatmap.row
        now = list(dict.fromkeys(self.source.missing(names, start, stop) + self.source.missing(names, row, row + 1)))
        later = [key for key in self.source.missing(names, start - page, stop + page) if key not in now]
        if now or later:
            self._read_blocks(now, later)

    @work(thread=True, exclusive=True, group="read")
    def _read_blocks(self, now: list[tuple[str, int]], later: list[tuple[str, int]]) -> None:
        """One reader, so blocks are read once and the visible ones first; a newer request cancels it."""
        worker = get_current_worker()
        for keys in (now, later):
            blocks = self.source.read_blocks(keys, lambda: worker.is_cancelled)
            if blocks is None:
                return
            if keys:
                self.call_from_thread(self._stored, keys, blocks)

    def _stored(self, keys: list[tuple[str, int]], blocks: list[Block]) -> None:
        self.source.store(keys, blocks)
        self.query_one(UnitDetail).refresh()

    def _status(self, unit: int, row: int, sequence: int) -> Text:
        start, _ = self.source.sequence_rows(sequence)
        token = self.source.tokens(row, row + 1)[0]
        value = self.source.value(self.name_shown, row, unit)
        text = Text.assemble(
            (f"{self.name_shown}:{unit}", "bold"),
            f"  row {row}  seq {sequence} pos {row - start}  token {token!r}  ",
            ("value ", "dim"), ("nan" if math.isnan(value) else f"{value:+.4f}", "bold"), "   ",
        )
        chosen = self.selection
        if chosen is not None:  # before the colour scale, which a narrow line cuts first
            threshold = "…" if chosen.threshold is None else f"{chosen.threshold:g}"
            units = "…" if chosen.found is None else str(len(chosen.units))
            text.append(f"span {chosen.start}:{chosen.stop}  threshold {threshold}  units {units}   ", "bold")
        scale = self.source.scale(self.name_shown)
        text.append(f"{'' if scale.range.bounded else f'tanh {self.kind} '}{scale.low:g} ", "dim")
        for style in scale.text_styles[:-1]:
            text.append(" ", style)
        text.append(f" {scale.high:g}", "dim")
        return text

    @on(SequenceChosen)
    def _sequence_chosen(self, event: SequenceChosen) -> None:
        self.heatmap.move_to(self.heatmap.unit, self.source.sequence_rows(event.index)[0], align_left=True)
        self.heatmap.focus()

    # -- select and match ----------------------------------------------------------------------
    @on(SpanChosen)
    def _span_chosen(self, event: SpanChosen) -> None:
        old = self.selection
        keep = old is not None and old.name == self.name_shown
        self.select(SpanSelection(self.name_shown, *event.span, old.threshold if keep else None,
                                  None, old.added if keep else frozenset(), old.removed if keep else frozenset()))

    def select(self, chosen: SpanSelection | None) -> None:
        """Make ``chosen`` the selection (None: none) and match it over the trace in a worker."""
        self.selection = chosen
        self._show_selection_views(chosen is not None)
        panel = self.query_one(MatchPanel)
        if chosen is None:
            self.result = None
            panel.clear()
            self.heatmap.mark(None, frozenset())
            if self.heatmap.restricted:
                self.heatmap.show_units(None)
            self.workers.cancel_group(self, "match")
            self._update_views()
            return
        self.heatmap.mark((chosen.start, chosen.stop), frozenset(chosen.units))
        panel.say(f"matching rows {chosen.start}:{chosen.stop} of {chosen.name} …", layout=False)
        self._update_views()
        self._match(chosen)

    @work(thread=True, exclusive=True, group="match")
    def _match(self, chosen: SpanSelection) -> None:
        worker = get_current_worker()
        shown = [0.0]

        def progress(done: float) -> bool:
            if done - shown[0] >= 0.1:  # every tenth of the trace
                shown[0] = done
                self.call_from_thread(self.query_one(MatchPanel).say, f"matching … {done:.0%}", False)
            return not worker.is_cancelled

        result = matching.run(self.source, chosen, self.tracks, progress)
        if result is not None and not worker.is_cancelled:
            self.call_from_thread(self._matched, chosen, result)

    def _matched(self, asked: SpanSelection, result: MatchResult) -> None:
        if self.selection != asked:  # a newer selection is on its way
            return
        self.selection, self.result = result.selection, result
        self.query_one(MatchPanel).show(result)
        self.heatmap.mark((result.selection.start, result.selection.stop), frozenset(result.selection.units))
        if self.heatmap.restricted:
            self.heatmap.show_units(list(result.selection.units) or None)
        self._update_views()

    def _resolved(self) -> SpanSelection | None:
        """The selection once its threshold and units are known (the worker has answered), else None with a note."""
        chosen = self.selection
        if chosen is None:
            self.notify("select a span first: v, shift+arrows or a mouse drag", severity="warning")
            return None
        if chosen.found is None or chosen.threshold is None:
            self.notify("the selection is still being matched", severity="warning")
            return None
        return chosen

    def action_threshold(self, direction: int) -> None:
        chosen = self._resolved()
        if chosen is not None:
            self.select(chosen.at_threshold(chosen.threshold + direction * matching.STEP))

    def action_toggle_unit(self) -> None:
        chosen = self._resolved()
        if chosen is not None:
            self.select(chosen.toggled(self.heatmap.unit))

    def action_only_unit(self) -> None:
        chosen = self._resolved()
        if chosen is not None:
            self.select(chosen.only(self.heatmap.unit))

    def action_restrict(self) -> None:
        """Show only the selected units in the heatmap, or every unit again."""
        if self.heatmap.restricted:
            self.heatmap.show_units(None)
            return
        chosen = self._resolved()
        if chosen is None:
            return
        if not chosen.units:
            self.notify("the selection has no units: lower the threshold ([) or add units (a)", severity="warning")
            return
        self.heatmap.show_units(list(chosen.units))

    def action_clear_selection(self) -> None:
        if self.selection is not None:
            self.select(None)

    @on(MatchChosen)
    def _match_chosen(self, event: MatchChosen) -> None:
        """Move every view to a match: its first token a few columns from the left, the cursor on it."""
        heatmap = self.heatmap
        start, stop = event.span
        lead = min(MATCH_LEAD, max(heatmap.data_width // heatmap.cell_width - (stop - start), 0) // 2)
        heatmap.move_to(heatmap.unit, max(start - lead, 0), align_left=True)
        heatmap.move_to(heatmap.unit, start)
        heatmap.focus()

    def action_compare(self) -> None:
        self.push_screen(Prompt("Compare this sequence with sequence",
                                f"0..{self.source.num_sequences - 1} (this one is {self._sequence()})"),
                         self._compare)

    def _sequence(self) -> int:
        return self.source.sequence_of(self.heatmap.row)

    def _compare(self, answer: str | None) -> None:
        if not answer:
            return
        other = self._sequence_number(answer)
        if other is not None:
            self.push_screen(CompareScreen(self.source, self.name_shown, self._sequence(), other, self.heatmap.unit))

    def _sequence_number(self, answer: str) -> int | None:
        """The sequence a prompt's answer names, or None (and the reason shown)."""
        number = whole_number(answer)
        if number is None:
            self.notify(f"not a sequence number: {answer!r} (a whole number, "
                        f"0..{self.source.num_sequences - 1})", severity="error")
        elif not 0 <= number < self.source.num_sequences:
            self.notify(f"no sequence {number}: the trace has {self.source.num_sequences}", severity="error")
        else:
            return number
        return None

    @on(UnitChosen)
    def _unit_chosen(self, event: UnitChosen) -> None:
        self.heatmap.move_to(event.unit, self.heatmap.row)

    @on(RowChosen)
    def _row_chosen(self, event: RowChosen) -> None:
        self.heatmap.move_to(self.heatmap.unit, event.row)

    # -- switching what is shown ---------------------------------------------------------------
    def select_layer(self, layer: Layer, kind: str | None = None) -> None:
        """Show ``layer`` (a module, layer and direction), keeping the kind where it exists."""
        kind = kind or self.kind
        self.layer = layer
        self.kind = kind if kind in layer.kinds else layer.kinds[0]
        self.heatmap.show(self.layer, self.kind)
        self.query_one(RankedUnits).show(self.name_shown)

    def action_kind(self, kind: str) -> None:
        # a layer whose kinds differ in width (an mLSTM's per-head gates) is one Layer per width: any of them
        layer = next((l for l in self.source.layers if l.label == self.layer.label and kind in l.kinds), None)
        if layer is None:
            kinds = [k for l in self.source.layers if l.label == self.layer.label for k in l.kinds]
            self.notify(f"{self.layer.label} has no kind {kind!r} (it has {' '.join(kinds)})", severity="warning")
            return
        self.select_layer(layer, kind)

    def action_next_kind(self) -> None:
        kinds = self.layer.kinds
        self.select_layer(self.layer, kinds[(kinds.index(self.kind) + 1) % len(kinds)])

    def _cycle(self, candidates: list[Layer]) -> None:
        if len(candidates) < 2:
            self.notify("nothing else to switch to", severity="warning")
            return
        self.select_layer(candidates[(candidates.index(self.layer) + 1) % len(candidates)])

    def action_next_layer(self) -> None:
        here = self.layer
        self._cycle([l for l in self.source.layers if (l.path, l.direction) == (here.path, here.direction)])

    def action_toggle_direction(self) -> None:
        here = self.layer
        self._cycle([l for l in self.source.layers if (l.path, l.layer) == (here.path, here.layer)])

    def action_next_module(self) -> None:
        firsts: dict[str, Layer] = {}
        for layer in self.source.layers:
            firsts.setdefault(layer.path, layer)
        modules = list(firsts)
        if len(modules) < 2:
            self.notify("the trace records one module", severity="warning")
            return
        self.select_layer(firsts[modules[(modules.index(self.layer.path) + 1) % len(modules)]])

    # -- go to, search -----------------------------------------------------------------------------
    def action_search(self) -> None:
        hint = "token ids, e.g. 12 7" if self.source.vocab is None else (
            "characters" if self.source.tokenizer == "char" else "words")
        self.push_screen(Prompt("Search the tokens", hint), self._search)

    def action_search_next(self) -> None:
        if self.last_search:
            self._search(self.last_search)
        else:
            self.action_search()

    def _search(self, query: str | None) -> None:
        if not query:
            return
        self.last_search = query
        try:
            row = self.source.search(query, after=self.heatmap.row)
        except GatescopeError as exc:
            self.notify(str(exc), severity="error")
            return
        if row is None:
            self.notify(f"not found: {query}", severity="warning")
            return
        self.heatmap.move_to(self.heatmap.unit, row)

    def action_goto_unit(self) -> None:
        self.push_screen(Prompt("Go to unit", f"0..{self.layer.hidden - 1}, or {self.name_shown}:37"), self._goto_unit)

    def _goto_unit(self, answer: str | None) -> None:
        if not answer:
            return
        layer, kind = self.layer, self.kind
        try:
            unit = whole_number(answer)
            if unit is None:
                name, unit = parse_unit(answer)
                if name not in self.source.data.arrays:
                    raise GatescopeError(f"the trace has no quantity {name}")
                label, kind = name.rsplit(".", 1)
                layer = next(l for l in self.source.layers if l.label == label and kind in l.kinds)
            if not 0 <= unit < layer.hidden:
                raise GatescopeError(f"no unit {unit}: {layer.name(kind)} has {layer.hidden} units")
        except GatescopeError as exc:
            self.notify(str(exc), severity="error")
            return
        if (layer, kind) != (self.layer, self.kind):
            self.select_layer(layer, kind)
        self.heatmap.move_to(unit, self.heatmap.row)

    def action_explain(self) -> None:
        """The unit and token at the cursor, term by term (the explain panel; needs the model)."""
        row = self.heatmap.row
        first, stop = self.source.sequence_rows(self.source.sequence_of(row))
        ids = self.source.data.token_ids
        self.push_screen(ExplainScreen(self.explainer, None if ids is None else ids[first:stop],
                                       f"{self.name_shown}:{self.heatmap.unit}", row - first, first), self._explained)

    def action_toggle_contributions(self) -> None:
        """Colour the text by each token's contribution to the cursor's unit and step (needs the model)."""
        self.contributing = not self.contributing
        if not self.contributing:
            self.query_one(TextView).colour_by(None)
        self._update_views()

    def _colour_by_contributions(self, unit: int, row: int) -> None:
        first, stop = self.source.sequence_rows(self.source.sequence_of(row))
        ids = self.source.data.token_ids
        try:
            values = self.explainer.contributions(None if ids is None else ids[first:stop],
                                                  f"{self.name_shown}:{unit}", row - first)
        except GatescopeError as exc:
            self.contributing = False
            self.notify(f"cannot colour by contribution: {exc}", severity="error")
            return
        styles = contribution_styles(values)
        self.query_one(TextView).colour_by({first + t: style for t, style in enumerate(styles)})

    def _explained(self, choice: tuple[str, int] | None) -> None:
        if choice is not None:
            unit, row = choice
            self._goto_unit(unit)
            self.heatmap.move_to(self.heatmap.unit, row)

    def action_goto_sequence(self) -> None:
        self.push_screen(Prompt("Go to sequence", f"0..{self.source.num_sequences - 1}"), self._goto_sequence)

    def _goto_sequence(self, answer: str | None) -> None:
        if not answer:
            return
        number = self._sequence_number(answer)
        if number is not None:
            self.post_message(SequenceChosen(number))

    def action_rank(self, criterion: str) -> None:
        self.query_one(RankedUnits).choose(criterion)

    def action_help(self) -> None:
        self.push_screen(HelpScreen())

    # -- export ------------------------------------------------------------------------------------
    def action_export_svg(self) -> None:
        screen = self.screen
        if isinstance(screen, CompareScreen):
            name = export.screenshot_name(screen.quantity, screen.query_one(PairView).unit, pair=screen.pair)
        else:
            name = export.screenshot_name(self.name_shown, self.heatmap.unit, self.heatmap.row)
        path = self.export_dir / name
        try:
            export.save_svg(self.export_screenshot(simplify=True), path)
        except (GatescopeError, OSError) as exc:
            self.notify(f"cannot save the screenshot: {exc}", severity="error")
            return
        self.notify(f"saved {path}")

    def action_export_png(self) -> None:
        start, stop = self.heatmap.visible_rows()
        units = self.heatmap.visible_units()
        values = self.source.window(self.name_shown, start, stop)[:, units]  # (T, U)
        figure = export.HeatmapFigure(self.name_shown, self.kind, units, start, self.source.tokens(start, stop),
                                      [int(b) - start for b in self.source.offsets if start < b < stop],
                                      self.heatmap.unit, self.heatmap.row)
        self._export_png(self.export_dir / figure.file_name, values.copy(), figure)

    @work(thread=True, group="export")
    def _export_png(self, path: Path, values: np.ndarray, figure: export.HeatmapFigure) -> None:
        try:
            export.save_heatmap_png(path, values, figure)
        except (GatescopeError, OSError) as exc:
            self.call_from_thread(self.notify, f"cannot save the figure: {exc}", severity="error")
            return
        self.call_from_thread(self.notify, f"saved {path}")


def run_browser(
    trace_or_path: Trace | str | os.PathLike,
    export_dir: str | os.PathLike | None = None,
    ranking: str | os.PathLike | None = None,
    model: str | os.PathLike | None = None,
) -> None:
    """Open the browser on a Trace or a trace file (read lazily, without torch; GatescopeError if it cannot be read)."""
    title = str(trace_or_path) if isinstance(trace_or_path, (str, os.PathLike)) else ""
    GatescopeApp(trace_or_path, title=title, export_dir=export_dir, ranking=ranking, model=model).run()
