"""The trace browser: a Textual app over one trace (`gatescope browse TRACE`).

The app owns the selection (module/layer/direction, kind, unit, token row) and moves every
view to it; widgets report the user's picks with messages (gatescope.tui.messages). The
views: the heatmap (units x tokens, Line API), the unit detail (every kind of the cursor's
unit), the text view (Karpathy et al. 2015), the sequence list and the ranked units. The
trace is read lazily (gatescope.tui.source) as numpy arrays (gatescope.tui.arrays): a file is
memory-mapped without importing torch, so a million-token file opens at once.
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
from gatescope.names import parse_unit
from gatescope.tui import export
from gatescope.tui.arrays import trace_file
from gatescope.tui.commands import BrowserCommands
from gatescope.tui.heatmap import Heatmap
from gatescope.tui.help_screen import HelpScreen
from gatescope.tui.messages import RowChosen, SequenceChosen, UnitChosen
from gatescope.tui.prompt import Prompt
from gatescope.tui.ranked_units import RankedUnits
from gatescope.tui.sequence_list import SequenceList
from gatescope.tui.source import Block, Layer, TraceSource
from gatescope.tui.text_view import TextView
from gatescope.tui.unit_detail import UnitDetail

if TYPE_CHECKING:
    from gatescope.trace import Trace
    from gatescope.tracefile import TraceFile

KIND_KEYS = "ifgocmhrzn"


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
        Binding("e", "export_svg", "svg"),
        Binding("E", "export_png", "png"),
        Binding("q", "quit", "quit"),
        *(Binding(k, f"kind('{k}')", f"kind {k}", show=False) for k in KIND_KEYS),
    ]

    def __init__(
        self,
        trace: Trace | TraceFile | str | os.PathLike,
        *,
        title: str = "",
        export_dir: str | os.PathLike | None = None,
    ) -> None:
        self.source = TraceSource(trace_file(trace))  # GatescopeError on an unusable trace, before the UI starts
        super().__init__()
        self.sub_title = title
        self.export_dir = Path(export_dir) if export_dir is not None else Path.cwd()
        self.layer: Layer = self.source.layers[0]
        self.kind = self.layer.kinds[0]
        self.last_search = ""

    @property
    def name_shown(self) -> str:
        """The quantity in the heatmap, e.g. ``rnn.l0.fwd.f``."""
        return self.layer.name(self.kind)

    def compose(self) -> ComposeResult:
        yield Static(id="status")
        with Horizontal(id="main"):
            with Vertical(id="views"):
                yield Heatmap(self.source, id="heatmap")
                yield UnitDetail(self.source, id="detail")
                yield TextView(self.source, id="text")
            with Vertical(id="side"):
                yield Label(f"sequences ({self.source.num_sequences})", classes="title")
                yield SequenceList(self.source, id="sequences")
                yield Label("ranked units", classes="title")
                yield RankedUnits(self.source, id="ranked")
        yield Footer()

    @property
    def heatmap(self) -> Heatmap:
        return self.query_one(Heatmap)

    def on_mount(self) -> None:
        self.watch(self.heatmap, "cursor", self._update_views, init=False)
        self.watch(self.heatmap, "scroll_x", self._window_moved, init=False)
        self.heatmap.focus()
        self.heatmap.show(self.layer, self.kind)
        self.query_one(RankedUnits).show(self.name_shown)
        self.call_after_refresh(self._update_views)  # once the heatmap knows its size

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
        self.query_one(UnitDetail).show(
            self.layer, unit, row, heatmap.visible_rows(), heatmap.cell_width, heatmap.gutter_width
        )
        self.query_one(TextView).show(self.name_shown, unit, row)
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
        scale = self.source.scales[self.kind]
        text.append(f"{'tanh c ' if self.kind == 'c' else ''}{scale.low:g} ", "dim")
        for style in scale.text_styles[:-1]:
            text.append(" ", style)
        text.append(f" {scale.high:g}", "dim")
        return text

    @on(SequenceChosen)
    def _sequence_chosen(self, event: SequenceChosen) -> None:
        self.heatmap.move_to(self.heatmap.unit, self.source.sequence_rows(event.index)[0])
        self.heatmap.focus()

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
        if kind not in self.layer.kinds:
            self.notify(f"{self.layer.label} has no kind {kind!r} (it has {' '.join(self.layer.kinds)})",
                        severity="warning")
            return
        self.select_layer(self.layer, kind)

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
            if answer.isdigit():
                unit = int(answer)
            else:
                name, unit = parse_unit(answer)
                if name not in self.source.data.arrays:
                    raise GatescopeError(f"the trace has no quantity {name}")
                label, kind = name.rsplit(".", 1)
                layer = next(l for l in self.source.layers if l.label == label)
            if unit >= layer.hidden:
                raise GatescopeError(f"no unit {unit}: {layer.name(kind)} has {layer.hidden} units")
        except GatescopeError as exc:
            self.notify(str(exc), severity="error")
            return
        if (layer, kind) != (self.layer, self.kind):
            self.select_layer(layer, kind)
        self.heatmap.move_to(unit, self.heatmap.row)

    def action_goto_sequence(self) -> None:
        self.push_screen(Prompt("Go to sequence", f"0..{self.source.num_sequences - 1}"), self._goto_sequence)

    def _goto_sequence(self, answer: str | None) -> None:
        if not answer:
            return
        if not answer.isdigit() or int(answer) >= self.source.num_sequences:
            self.notify(f"no sequence {answer}: the trace has {self.source.num_sequences}", severity="error")
            return
        self.post_message(SequenceChosen(int(answer)))

    def action_rank(self, criterion: str) -> None:
        self.query_one(RankedUnits).choose(criterion)

    def action_help(self) -> None:
        self.push_screen(HelpScreen())

    # -- export ------------------------------------------------------------------------------------
    def action_export_svg(self) -> None:
        path = self.export_dir / f"gatescope-{self.name_shown}-u{self.heatmap.unit}-r{self.heatmap.row}.svg"
        try:
            export.save_svg(self.export_screenshot(simplify=True), path)
        except (GatescopeError, OSError) as exc:
            self.notify(f"cannot save the screenshot: {exc}", severity="error")
            return
        self.notify(f"saved {path}")

    def action_export_png(self) -> None:
        start, stop = self.heatmap.visible_rows()
        first, last = self.heatmap.visible_units()
        values = self.source.window(self.name_shown, start, stop)[:, first:last]  # (T, U)
        path = self.export_dir / f"gatescope-{self.name_shown}-r{start}-{stop}-u{first}-{last}.png"
        title = f"{self.name_shown}, units {first}..{last - 1}, rows {start}..{stop - 1}"
        self._export_png(path, values.copy(), first, self.source.tokens(start, stop), title)

    @work(thread=True, group="export")
    def _export_png(self, path: Path, values: np.ndarray, first: int, tokens: list[str], title: str) -> None:
        try:
            export.save_heatmap_png(path, values, self.kind, first, tokens, title)
        except (GatescopeError, OSError) as exc:
            self.call_from_thread(self.notify, f"cannot save the figure: {exc}", severity="error")
            return
        self.call_from_thread(self.notify, f"saved {path}")


def run_browser(trace_or_path: Trace | str | os.PathLike, export_dir: str | os.PathLike | None = None) -> None:
    """Open the browser on a Trace or a trace file (read lazily, without torch; GatescopeError if it cannot be read)."""
    title = str(trace_or_path) if isinstance(trace_or_path, (str, os.PathLike)) else ""
    GatescopeApp(trace_or_path, title=title, export_dir=export_dir).run()
