"""Reading and writing users' files: one-line errors, and writes that are all or nothing.

Every file gatescope writes (traces, checkpoints, tables, figures) goes to a temporary file in
the destination's folder and is renamed into place only once complete, so an error or an
interrupt never leaves a half-written file behind. Reading errors from the operating system
become one-line GatescopeErrors naming the file.
"""
from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from gatescope.errors import GatescopeError

# Read once, at import: os.umask can only be read by setting it, which is not thread-safe, and
# exports are written from worker threads. Saved files get the usual 0o666 & ~umask.
_UMASK = os.umask(0)
os.umask(_UMASK)


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
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp creates 0600
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


@contextmanager
def reading(path: str | os.PathLike, what: str = "file") -> Iterator[None]:
    """Turn the operating system's errors on reading ``path`` (a ``what``) into one-line errors."""
    try:
        yield
    except FileNotFoundError:
        raise GatescopeError(f"no such file: {path}") from None
    except IsADirectoryError:
        raise GatescopeError(f"{path} is a folder, not a {what}") from None
    except PermissionError:
        raise GatescopeError(f"cannot read {path}: permission denied") from None
    except UnicodeDecodeError:
        raise GatescopeError(f"{path} is not UTF-8 text") from None
    except OSError as exc:
        raise GatescopeError(f"cannot read {path}: {exc.strerror or exc}") from None
