"""Writing a folder all or nothing, as gatescope.files writes a file: a sharded trace, `gatescope findings --out`.

The files go into a temporary folder ``.{name}.XXXX.tmp`` beside the destination, which the writer holds a
lock on while it writes, and the folder is moved into place only once complete (`publish`). An error,
Ctrl+C or SIGTERM (which the command line turns into an exit that unwinds) removes it; one left by a
killed writer (SIGKILL, a power cut) is held by nobody, and the next write to the same destination
removes it (gatescope.files.remove_stale_temporaries, the same rule as for files). One that a live writer
holds means another command is writing the same destination: an ``exclusive`` writer is refused then,
in one line, rather than both writing one folder.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from gatescope.errors import GatescopeError
from gatescope.files import _UMASK, fcntl, remove_stale_temporaries


@contextmanager
def temporary_folder(output: str | os.PathLike, exclusive: bool = False) -> Iterator[Path]:
    """A new temporary folder beside ``output``, locked while the block runs and removed when it ends,
    unless `publish` moved it into place. ``exclusive``: refuse if another writer holds one for ``output``."""
    output = Path(output)
    if not output.parent.is_dir():
        raise GatescopeError(f"cannot write {output}: folder {output.parent} does not exist")
    remove_stale_temporaries(output)
    if exclusive and (held := sorted(p for p in output.parent.glob(f".{output.name}.*.tmp")
                                     if p.is_dir() and not p.is_symlink())):
        raise GatescopeError(f"another gatescope command is writing {output} (its temporary folder {held[0].name} "
                             "is in use): wait for it to finish, or write to another folder")
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{output.name}.", suffix=".tmp", dir=output.parent))
    except OSError as exc:
        raise GatescopeError(f"cannot write {output}: {exc.strerror}") from None
    fd = os.open(tmp, os.O_RDONLY)
    try:
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # "in use" for remove_stale_temporaries
        yield tmp
    finally:
        os.close(fd)
        shutil.rmtree(tmp, ignore_errors=True)  # nothing there once published


def publish(tmp: Path, output: str | os.PathLike) -> None:
    """Move the complete folder ``tmp`` to ``output``, replacing an empty folder or an older one of the same kind
    (the caller checked which ``output`` may be)."""
    output = Path(output)
    os.chmod(tmp, 0o777 & ~_UMASK)  # mkdtemp creates 0700
    old = None
    if output.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{output.name}.", suffix=".old", dir=output.parent))
        os.replace(output, old / "replaced")
    os.replace(tmp, output)
    if old is not None:
        shutil.rmtree(old)
