"""Errors and warnings that gatescope reports to its users.

Every problem with a user's input (a file, a name, a shape) is raised as a
`GatescopeError`; the command line prints its message on one line and exits
non-zero, never a traceback. Something gatescope did but the user should know about
(a tensor it did not use, a word it mapped to the unknown token) is a `GatescopeWarning`
(Python's warnings machinery; the command line prints ``gatescope: warning: ...`` on stderr).
"""
from __future__ import annotations

import warnings


class GatescopeError(Exception):
    """A problem with the user's input, stated in one line."""


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
