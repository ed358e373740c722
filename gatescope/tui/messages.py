"""Messages the browser's widgets send up to the app (Textual's "attributes down, messages up").

The app owns the selection (quantity, unit, token row); widgets report what the user
picked with these messages and the app moves every view to it. (The heatmap's own cursor
is a reactive the app watches, so all views follow it within the same frame.)
"""
from __future__ import annotations

from dataclasses import dataclass

from textual.message import Message


@dataclass
class SequenceChosen(Message):
    """The user picked sequence ``index`` in the sequence list."""

    index: int


@dataclass
class UnitChosen(Message):
    """The user picked ``unit`` (of the current quantity) in the ranked-units table."""

    unit: int


@dataclass
class RowChosen(Message):
    """The user clicked the token at ``row`` in the text view."""

    row: int


@dataclass
class SpanChosen(Message):
    """The user selected token rows ``span = (start, stop)`` (keys or a mouse drag in the heatmap or text view).

    (One field: a Message's ``stop`` is its method.)
    """

    span: tuple[int, int]


@dataclass
class MatchChosen(Message):
    """The user picked the match at rows ``span = (start, stop)`` in the match panel."""

    span: tuple[int, int]
