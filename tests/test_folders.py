"""Folders written all or nothing (gatescope.folders): replacing an output, a replace that fails, what a killed
writer leaves."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from gatescope.errors import GatescopeError
from gatescope.files import hold, remove_stale_temporaries, temporaries
from gatescope.folders import publish, temporary_folder

pytest.importorskip("fcntl", reason="without file locks (Windows) no leftover is judged stale")


def _output(tmp_path: Path, text: str) -> Path:
    out = tmp_path / "out"
    out.mkdir()
    (out / "index.json").write_text(text)
    return out


def test_publish_replaces_an_older_folder_and_leaves_nothing_beside_it(tmp_path):
    out = _output(tmp_path, "old")
    with temporary_folder(out) as tmp:
        (tmp / "index.json").write_text("new")
        publish(tmp, out)
    assert (out / "index.json").read_text() == "new" and os.listdir(tmp_path) == ["out"]


def test_a_publish_whose_move_fails_puts_the_old_folder_back(tmp_path, monkeypatch):
    out = _output(tmp_path, "old")
    moves = []

    def replace(source, destination):
        moves.append(source)
        if len(moves) == 2:  # the new folder into place
            raise PermissionError(13, "Permission denied")
        real_replace(source, destination)

    real_replace = os.replace
    with pytest.raises(GatescopeError, match=r"^cannot write .*out: Permission denied$"):
        with temporary_folder(out) as tmp:
            (tmp / "index.json").write_text("new")
            monkeypatch.setattr(os, "replace", replace)
            publish(tmp, out)
    assert len(moves) == 3 and (out / "index.json").read_text() == "old" and os.listdir(tmp_path) == ["out"]


def test_a_killed_publish_is_undone_by_the_next_write(tmp_path):
    # killed between its two moves: the old output in an unlocked .old folder, the destination empty
    killed = tmp_path / ".out.abc123.old"
    (killed / "replaced").mkdir(parents=True)
    (killed / "replaced" / "index.json").write_text("old")
    with temporary_folder(tmp_path / "out"):
        assert (tmp_path / "out" / "index.json").read_text() == "old" and not killed.exists()
    # killed after them: the new output in place, the old one left in the .old folder
    (killed / "replaced").mkdir(parents=True)
    assert remove_stale_temporaries(tmp_path / "out") == [killed]
    assert not killed.exists() and (tmp_path / "out" / "index.json").read_text() == "old"


def test_a_live_publishs_old_folder_is_kept(tmp_path):
    live = tmp_path / ".out.abc123.old"
    (live / "replaced").mkdir(parents=True)
    with hold(live):
        assert remove_stale_temporaries(tmp_path / "out") == []
    assert (live / "replaced").is_dir() and not (tmp_path / "out").exists()


def test_only_the_destinations_own_temporaries_are_its_own(tmp_path):
    for name in (".out.abc123.tmp", ".out.abc123.old", ".out.more.abc123.tmp", ".out.more.abc123.old", ".out.tmp"):
        (tmp_path / name).mkdir()
    assert temporaries(tmp_path / "out") == [tmp_path / ".out.abc123.tmp"]
    assert temporaries(tmp_path / "out", ".old") == [tmp_path / ".out.abc123.old"]
    assert temporaries(tmp_path / "out.more", ".old") == [tmp_path / ".out.more.abc123.old"]
