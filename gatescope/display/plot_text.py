"""Text drawn on matplotlib figures (the gate profiles of `analyze profile`, the browser's PNG export) shown
as written, whatever a vocabulary holds.

Matplotlib reads a string with two unescaped ``$`` as mathtext, so a token such as ``$x^$`` or ``$\\frac{$`` in a
title, a tick label or a legend entry fails to parse and ends the command; a lone surrogate (valid JSON,
``"\\ud800"``) cannot be drawn at all, and a line break or a control character makes a label of several lines
or of nothing. Every string a figure draws from data goes through `plain`: each ``$`` escaped as ``\\$``, which
matplotlib draws as a plain dollar (and is never math), and what cannot be drawn written as Python writes it
(gatescope.errors.one_line). A function of strings, not a change of matplotlib's global settings, so that
figures drawn in the browser's worker threads do not race.
"""
from __future__ import annotations

from gatescope.errors import one_line

LIMIT = 200  # characters of one drawn string


def plain(text: str, limit: int = LIMIT) -> str:
    """``text`` as matplotlib draws it literally: one printable line of at most ``limit`` characters, no math."""
    return one_line(str(text), limit).replace("$", "\\$")
