"""Writing output files safely: all or nothing, with the permissions a plain open() would give.

Every file gatescope writes (traces, checkpoints, tables, figures) goes to a temporary file in
the destination's folder and is renamed into place only once complete, so an error or an
interrupt never leaves a half-written file behind.
"""
from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

from gatescope.errors import GatescopeError


def check_writable(path: str | os.PathLike) -> Path:
    """Fail now, before any work, if ``path`` cannot be written (folder missing, read-only, a folder)."""
    path = Path(path)
    if path.is_dir():
        raise GatescopeError(f"cannot write {path}: it is a folder")
    folder = path.parent
    if not folder.is_dir():
        raise GatescopeError(f"cannot write {path}: folder {folder} does not exist")
    try:
        fd, probe = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".probe", dir=folder)
    except OSError as exc:
        raise GatescopeError(f"cannot write {path}: {exc.strerror}") from None
    os.close(fd)
    os.unlink(probe)
    return path


def atomic_write(path: str | os.PathLike, write: Callable[[str], None]) -> Path:
    """Call ``write(tmp_path)`` on a temporary file next to ``path``, then rename it into place."""
    path = check_writable(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; a saved file gets the usual mode
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
