"""Writing a folder all or nothing, as gatescope.files writes a file: a sharded trace, `gatescope findings --out`.

The files go into a temporary folder ``.{name}.XXXX.tmp`` beside the destination, which the writer holds a
lock on while it writes, and the folder is moved into place only once complete (`publish`). An error,
Ctrl+C or SIGTERM (which the command line turns into an exit that unwinds) removes it; one left by a
killed writer (SIGKILL, a power cut) is held by nobody, and the next write to the same destination
removes it (gatescope.files.remove_stale_temporaries, the same rule as for files). One that a live writer
holds means another command is writing the same destination: an ``exclusive`` writer is refused then,
in one line, rather than both writing one folder.

A folder cannot be renamed over one that holds files, so `publish` first moves the output it replaces
into a locked folder ``.{name}.XXXX.old``, and puts it back if the new one cannot be moved in. A writer
killed between the two moves leaves that folder unlocked; the next write to the destination puts the old
output back, or removes it if the new one arrived.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from gatescope.errors import GatescopeError
from gatescope.files import hold, remove_stale_temporaries, temporaries, usual_mode


@contextmanager
def temporary_folder(output: str | os.PathLike, exclusive: bool = False) -> Iterator[Path]:
    """A new temporary folder beside ``output``, locked while the block runs and removed when it ends,
    unless `publish` moved it into place. ``exclusive``: refuse if another writer holds one for ``output``."""
    output = Path(output)
    if not output.parent.is_dir():
        raise GatescopeError(f"cannot write {output}: folder {output.parent} does not exist")
    remove_stale_temporaries(output)
    if exclusive and (held := [p for p in temporaries(output) if p.is_dir() and not p.is_symlink()]):
        raise GatescopeError(f"another gatescope command is writing {output} (its temporary folder {held[0].name} "
                             "is in use): wait for it to finish, or write to another folder")
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{output.name}.", suffix=".tmp", dir=output.parent))
    except OSError as exc:
        raise GatescopeError(f"cannot write {output}: {exc.strerror}") from None
    try:
        with hold(tmp):
            yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # nothing there once published


def publish(tmp: Path, output: str | os.PathLike) -> None:
    """Move the complete folder ``tmp`` to ``output``, replacing an empty folder or an older one of the same kind
    (the caller checked which ``output`` may be); if it cannot, ``output`` is left as it was."""
    output = Path(output)
    os.chmod(tmp, usual_mode(folder=True))  # mkdtemp creates 0700
    try:
        if os.path.lexists(output):
            _replace(tmp, output)
        else:
            os.replace(tmp, output)
    except OSError as exc:
        raise GatescopeError(f"cannot write {output}: {exc.strerror or exc}") from None


def _replace(tmp: Path, output: Path) -> None:
    """Move ``tmp`` over the existing ``output`` by way of a locked ``.old`` folder, putting ``output`` back if
    ``tmp`` cannot be moved in."""
    old = Path(tempfile.mkdtemp(prefix=f".{output.name}.", suffix=".old", dir=output.parent))
    replaced = old / "replaced"
    with hold(old):
        try:
            os.replace(output, replaced)
            os.replace(tmp, output)
        except BaseException:
            if os.path.lexists(replaced):
                os.replace(replaced, output)  # should this fail, the .old folder stays for the next write to restore
            old.rmdir()
            raise
        shutil.rmtree(old)
