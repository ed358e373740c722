"""Running the gatescope command line in-process in the tests, and the shape of its errors.

An error is one line, ``gatescope: error: ...``, and exit status 1; warnings (``gatescope: warning: ...``)
may stand before it only where a test says they may.
"""
from __future__ import annotations

import pytest

from gatescope.cli import main


def cli(capsys, *argv):
    """Run ``gatescope ARGV`` (any objects, as strings); return what it printed (capsys's out and err)."""
    main([str(a) for a in argv])
    return capsys.readouterr()


def fails(capsys, *argv, match: str, after_warnings: bool = False) -> str:
    """Run ``gatescope ARGV``, expect exit status 1 and a one-line error containing ``match``; return the line.

    With ``after_warnings``, lines of ``gatescope: warning:`` may come first; otherwise stderr is that line."""
    with pytest.raises(SystemExit) as exit_info:
        main([str(a) for a in argv])
    err = capsys.readouterr().err
    assert exit_info.value.code == 1
    *before, last = err.splitlines() or [""]
    assert last.startswith("gatescope: error: ") and err.endswith("\n"), err
    if after_warnings:
        assert all(line.startswith("gatescope: warning: ") for line in before), err
    else:
        assert not before, err
    assert match in last, last
    return last
