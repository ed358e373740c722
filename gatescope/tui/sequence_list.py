"""The sequence list: one line per sequence (its number and the start of its text), virtual.

A trace may hold a hundred thousand sentences, so this is a Line API `ScrollView`, not a
list of widgets: a line is built only when it scrolls into view, from the few tokens that
fit the width, and kept in a small strip cache. Enter or a click picks a sequence.
"""
from __future__ import annotations

from typing import ClassVar

from rich.segment import Segment
from rich.style import Style
from textual import events
from textual.binding import Binding, BindingType
from textual.cache import LRUCache
from textual.geometry import Size
from textual.scroll_view import ScrollView
from textual.strip import Strip

from gatescope.tui.clip import clip
from gatescope.tui.messages import SequenceChosen
from gatescope.tui.source import TraceSource

NUMBER = Style(color="#8a8a8a")
TEXT = Style(color="#d0d0d0")
HIGHLIGHT = Style(bgcolor="#005f87", color="white", bold=True)


class SequenceList(ScrollView, can_focus=True):
    """All sequences of the trace; the highlighted one follows the heatmap cursor."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("up", "move(-1)", show=False),
        Binding("down", "move(1)", show=False),
        Binding("pageup", "move(-10)", show=False),
        Binding("pagedown", "move(10)", show=False),
        Binding("enter", "choose", "open sequence"),
    ]

    def __init__(self, source: TraceSource, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.source = source
        self.highlighted = 0
        self._digits = len(str(source.num_sequences - 1))
        self._strips: LRUCache[tuple, Strip] = LRUCache(512)
        self.virtual_size = Size(0, source.num_sequences)

    def highlight(self, index: int) -> None:
        """Highlight sequence ``index`` and scroll it into view (the app calls this as the cursor moves)."""
        index = min(max(index, 0), self.source.num_sequences - 1)
        if index == self.highlighted:
            return
        old, self.highlighted = self.highlighted, index
        self.refresh_line(old)
        self.refresh_line(index)
        self.scroll_to_region_of(index)

    def scroll_to_region_of(self, index: int) -> None:
        top, height = self.scroll_offset.y, self.scrollable_content_region.height
        if index < top:
            self.scroll_to(y=index, animate=False)
        elif index >= top + height:
            self.scroll_to(y=index - height + 1, animate=False)

    def action_move(self, step: int) -> None:
        self.highlight(self.highlighted + step)

    def action_choose(self) -> None:
        self.post_message(SequenceChosen(self.highlighted))

    def on_click(self, event: events.Click) -> None:
        offset = event.get_content_offset(self)
        if offset is None:
            return
        index = self.scroll_offset.y + offset.y
        if index < self.source.num_sequences:
            self.highlight(index)
            self.post_message(SequenceChosen(index))

    def render_line(self, y: int) -> Strip:
        width = self.size.width
        index = self.scroll_offset.y + y
        if index >= self.source.num_sequences:
            return Strip.blank(width)
        key = (index, width, index == self.highlighted)
        strip = self._strips.get(key)
        if strip is None:
            start, stop = self.source.sequence_rows(index)
            text = self.source.join(self.source.tokens(start, min(stop, start + width + 1)))  # "…" if more
            number = f"{index:>{self._digits}} "
            if index == self.highlighted:
                segments = [Segment(number + text, HIGHLIGHT)]
            else:
                segments = [Segment(number, NUMBER), Segment(text, TEXT)]
            strip = clip(segments, width, HIGHLIGHT if index == self.highlighted else None)
            self._strips.set(key, strip)
        return strip
