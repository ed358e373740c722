"""The browser's actions in Textual's command palette (Ctrl+P): kinds, layers, modules, go-tos, ranking, exports."""
from __future__ import annotations

from collections.abc import Callable
from functools import partial

from textual.command import DiscoveryHit, Hit, Hits, Provider

from gatescope.kinds import KINDS



class BrowserCommands(Provider):
    """Every browser action, searchable by name."""

    def _commands(self) -> list[tuple[str, Callable[[], object], str]]:
        app = self.app  # the GatescopeApp
        layer = app.layer
        found = [
            (f"Show {k}: {KINDS[k].title}", partial(app.action_kind, k), f"heatmap of {layer.name(k)}")
            for k in layer.kinds
        ]
        found += [
            (f"Show {other.path} layer {other.layer} {other.direction}", partial(app.select_layer, other),
             f"{len(other.kinds)} kinds, {other.hidden} units")
            for other in app.source.layers if other != layer
        ]
        found += [
            ("Search tokens", app.action_search, "find a word, characters or token ids"),
            ("Go to unit", app.action_goto_unit, "by index or full name, e.g. rnn.l1.fwd.h:37"),
            ("Go to sequence", app.action_goto_sequence, "by number"),
            ("Select the cursor's token", app.heatmap.action_mark, "start a span; shift+arrows extend it"),
            ("Raise the threshold", partial(app.action_threshold, 1), "units on above it over the span"),
            ("Lower the threshold", partial(app.action_threshold, -1), "units on above it over the span"),
            ("Add or remove the cursor's unit", app.action_toggle_unit, "in the selection"),
            ("Match on the cursor's unit alone", app.action_only_unit, "remove every other unit of the selection"),
            ("Show only the selected units", app.action_restrict, "or every unit again"),
            ("Clear the selection", app.action_clear_selection, "and the matches"),
            ("Compare two sequences", app.action_compare, "side by side, with their difference"),
            ("Export screen as SVG", app.action_export_svg, "a screenshot of the current view"),
            ("Export heatmap as PNG", app.action_export_png, "the visible units x tokens, with matplotlib"),
            ("Help", app.action_help, "keys and colours"),
        ]
        found += [
            (f"Rank units by {criterion}", partial(app.action_rank, criterion), f"ranked units of {app.name_shown}")
            for criterion in [*(["file"] if app.file_ranking else []), *app.source.data.features, "saturation"]
        ]
        return found

    async def discover(self) -> Hits:
        for title, callback, help_text in self._commands():
            yield DiscoveryHit(title, callback, help=help_text)

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for title, callback, help_text in self._commands():
            score = matcher.match(title)
            if score > 0:
                yield Hit(score, matcher.highlight(title), callback, help=help_text)
