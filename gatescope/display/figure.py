"""A display object: an SVG figure that shows itself in a notebook and saves itself as HTML or SVG.

Jupyter (and VS Code's notebooks) call ``_repr_html_`` (IPython's rich display protocol); the HTML is
the inline SVG itself, so what a notebook shows and what ``save`` writes are the same drawing.
"""
from __future__ import annotations

import os
from html import escape
from pathlib import Path

from gatescope.errors import GatescopeError
from gatescope.files import atomic_write


class Figure:
    """A drawing (``svg``), its title, and the one-line notes on what it left out (``notes``)."""

    def __init__(self, svg: str, title: str, notes: list[str]) -> None:
        self.svg = svg
        self.title = title
        self.notes = notes

    @property
    def cut(self) -> bool:
        """Whether part of what was asked for is not drawn (each such part has a note)."""
        return any(note.startswith("cut:") for note in self.notes)

    def _repr_html_(self) -> str:
        return f'<div class="gatescope-figure" style="overflow-x:auto">{self.svg}</div>'

    def html(self) -> str:
        """A standalone HTML page holding the figure."""
        return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{escape(self.title)}</title>'
                f"</head><body>{self._repr_html_()}</body></html>\n")

    def save(self, path: str | os.PathLike) -> Path:
        """Write the figure to ``path`` (``.html`` or ``.svg``), all or nothing (gatescope.files.atomic_write)."""
        path = Path(path)
        suffix = path.suffix.lower()
        if suffix in (".html", ".htm"):
            content = self.html()
        elif suffix == ".svg":
            content = '<?xml version="1.0" encoding="UTF-8"?>\n' + self.svg + "\n"
        else:
            raise GatescopeError(f"cannot save a figure as {path.name!r}: the name must end in .html or .svg")
        return atomic_write(path, lambda tmp: Path(tmp).write_text(content, encoding="utf-8"))

    def __repr__(self) -> str:
        notes = f"; {len(self.notes)} notes" if self.notes else ""
        return f"{type(self).__name__}({self.title}{notes})"
