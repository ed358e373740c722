"""Errors and warnings that gatescope reports to its users, and the rule that keeps each one on one line.

Every problem with a user's input (a file, a name, a shape) is raised as a
`GatescopeError`; the command line prints its message on one line and exits
non-zero, never a traceback. A message may quote what the user gave (a file name
with a newline in it, a header value of a megabyte), so the message is made one
printable line when the error is built (`one_line`), and quoted values are
shortened where they are put into a message (`shown`). Something gatescope did but the user
should know about (a tensor it did not use, a word it mapped to the unknown token) is a
`GatescopeWarning` (the command line prints ``gatescope: warning: ...`` on stderr).
"""
from __future__ import annotations

import unicodedata
import warnings
from typing import Any

MESSAGE_LIMIT = 2000  # characters of a message; the rest is cut
VALUE_LIMIT = 60  # characters of a quoted value
_ESCAPED = {"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"}  # controls, format marks, surrogates, line breaks
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def one_line(text: str, limit: int = MESSAGE_LIMIT) -> str:
    """``text`` as one printable line: control characters, line breaks and undecodable bytes of a
    file name (surrogates) escaped as Python writes them, and at most ``limit`` characters."""
    if not text.isprintable():
        text = "".join(
            _NAMED.get(c) or (c.encode("unicode_escape", "backslashreplace").decode("ascii")
                              if unicodedata.category(c) in _ESCAPED else c)
            for c in text
        )
    if len(text) > limit:
        text = f"{text[: limit - 40]}... ({len(text) - limit + 40} more characters)"
    return text


def shown(value: Any, limit: int = VALUE_LIMIT) -> str:
    """A short, printable rendering of a value quoted in a message (repr, cut at ``limit``)."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 64:
        return f"an integer of {len(str(abs(value))) if value.bit_length() < 14000 else 'over 4000'} digits"
    if isinstance(value, str) and len(value) > limit:
        return f"{value[:limit]!r}... ({len(value)} characters)"
    try:
        text = repr(value)
    except (ValueError, RecursionError):
        text = f"a {type(value).__name__}"
    if len(text) > limit:
        text = f"{text[:limit]}... ({type(value).__name__} of {len(value) if hasattr(value, '__len__') else '?'})"
    return one_line(text)


class GatescopeError(Exception):
    """A problem with the user's input, stated in one line (made so here, whatever the caller wrote)."""

    def __init__(self, message: object = "", *args: object) -> None:
        super().__init__(one_line(str(message)), *args)


class UnknownNameError(GatescopeError, KeyError):
    """A name that is not there (``trace["rnn.l9.fwd.h"]``): a GatescopeError, and a KeyError so that
    mappings' ``in`` and ``get`` work; its text is the one-line message, not KeyError's quoted repr."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class GatescopeWarning(UserWarning):
    """Something the user asked for was done, but not exactly as given: said in one line."""


def warn(message: str) -> None:
    """Issue a GatescopeWarning (one line) from library code."""
    warnings.warn(message, GatescopeWarning, stacklevel=3)
