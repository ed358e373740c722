"""Reading and writing users' files: bounded reads of regular files, one-line errors, writes that are
all or nothing.

Reading: every reader opens a user's file through `open_regular` (or checks a path it hands to
another library with `check_regular`): a FIFO, a device such as /dev/zero, a socket or a folder
is refused before a byte is read (a FIFO is opened without blocking, so one with no writer cannot
hang the reader), a whole file is read only up to a limit (`read_limited`), and text is read a
bounded line at a time (`text_lines`: no line longer than `MAX_LINE_BYTES`). A file that a folder
or another file names (a sharded trace's shards, an ONNX model's external data) is read only when it
lies inside that folder (`inside`: no absolute path, no ``..``, no link leading out). Errors from
the operating system become one-line GatescopeErrors naming the file. tests/test_files_door.py
fails when a module reads a path another way.

Writing: every file gatescope writes (traces, checkpoints, tables, figures) goes to a temporary
file ``.{name}.XXXX.tmp`` in the destination's folder and is renamed into place only once
complete, so an error or an interrupt never leaves a half-written file behind. The writer holds a
lock on its temporary file (`hold`); a temporary file of that naming that nobody holds a lock on was
left by a killed writer, and the next write to the same path removes it (`remove_stale_temporaries`;
and so for the temporary folders of gatescope.folders, and for the ``.{name}.XXXX.old`` folder that
holds the output a folder replaces while the new one is moved in).
"""
from __future__ import annotations

import glob
import os
import shutil
import stat
import tempfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from gatescope.errors import GatescopeError
from gatescope.validation.limits import MAX_LINE_BYTES

try:
    import fcntl  # POSIX: temporary files are locked while written
except ImportError:  # pragma: no cover (Windows: no locks, so no temporary file is ever judged stale)
    fcntl = None
_NONBLOCK = getattr(os, "O_NONBLOCK", 0)

# Read once, at import: os.umask can only be read by setting it, which is not thread-safe, and
# exports are written from worker threads.
_UMASK = os.umask(0)
os.umask(_UMASK)


def usual_mode(folder: bool = False) -> int:
    """The mode a file (or folder) the user creates gets: 0o666 (0o777) less the umask; gatescope's temporary
    files and folders are created private and get this as they are moved into place."""
    return (0o777 if folder else 0o666) & ~_UMASK


def _not_regular(mode: int) -> str | None:
    """What a file of this mode is, when it is not a regular file ("a FIFO", "a device", ...)."""
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def same_file(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """Whether two paths name the same file (an output that would overwrite an input): links followed as far
    as they lead, so a symlink loop is compared as the path it stops at, not an error (Path.resolve raises)."""
    return os.path.realpath(a) == os.path.realpath(b)


def check_writable(path: str | os.PathLike,
                   inputs: Iterable[tuple[str, str | os.PathLike | None]] = ()) -> Path:
    """Fail now, before any work, if ``path`` cannot be written (folder missing, read-only, a folder, a device)
    or is one of the command's ``inputs`` ((role, path) pairs such as ("--labels", "labels.txt"); a path of
    None is an input not given), which the write would replace."""
    path = Path(path)
    for role, given in inputs:
        if given is not None and same_file(given, path):
            raise GatescopeError(f"the output {path} is the {role} file; choose another path")
    if path.is_dir():
        raise GatescopeError(f"cannot write {path}: it is a folder")
    try:
        kind = _not_regular(path.stat().st_mode)
    except OSError:
        kind = None  # does not exist yet (or cannot be seen): the probe below says why not
    if kind:
        raise GatescopeError(f"cannot write {path}: it is {kind}, not a regular file")
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
    """Call ``write(tmp_path)`` on a temporary file next to ``path``, then rename it into place.

    Temporary files of earlier writes to ``path`` that were killed before they finished are removed.
    """
    path = check_writable(path)
    remove_stale_temporaries(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # "in use" for remove_stale_temporaries
        write(tmp)
        os.chmod(tmp, usual_mode())  # mkstemp creates 0600
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    finally:
        os.close(fd)
    return path


def temporaries(path: Path, suffix: str = ".tmp") -> list[Path]:
    """The files and folders ``.{name}.XXXX{suffix}`` next to ``path``, as tempfile names them for it (XXXX holds
    no dot, so those of ``{name}.more`` are not among them)."""
    start = f".{path.name}."
    try:
        found = path.parent.glob(f"{glob.escape(start)}*{suffix}")
        return sorted(p for p in found if "." not in p.name[len(start):-len(suffix)])
    except OSError:
        return []


@contextmanager
def hold(path: Path) -> Iterator[None]:
    """Lock the temporary file or folder ``path`` while the block runs: in use, for `remove_stale_temporaries`."""
    fd = os.open(path, os.O_RDONLY)
    try:
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        yield
    finally:
        os.close(fd)


def remove_stale_temporaries(path: Path) -> list[Path]:
    """Remove the temporary files and folders next to ``path`` that no writer holds (left by a killed one).

    ``.{name}.XXXX.tmp``: a file or folder being written, removed. ``.{name}.XXXX.old``: a folder holding, as
    ``replaced``, the output that gatescope.folders.publish was replacing when it was killed: put back at
    ``path`` if nothing is there (the new output never arrived), else removed.
    """
    removed: list[Path] = []
    if fcntl is None:
        return removed
    for candidate in temporaries(path) + temporaries(path, ".old"):
        try:
            fd = os.open(candidate, os.O_RDONLY | _NONBLOCK | getattr(os, "O_NOFOLLOW", 0))
        except OSError:
            continue
        try:
            mode = os.fstat(fd).st_mode
            old = candidate.suffix == ".old"
            if not (stat.S_ISDIR(mode) or (stat.S_ISREG(mode) and not old)):
                continue
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            continue  # a live writer holds it
        else:
            replaced = candidate / "replaced"
            if old and os.path.lexists(replaced) and not os.path.lexists(path):
                try:
                    os.replace(replaced, path)
                except OSError:
                    continue  # kept: the only copy of that output
            if stat.S_ISDIR(mode):
                shutil.rmtree(candidate, ignore_errors=True)
            else:
                candidate.unlink(missing_ok=True)
            removed.append(candidate)
        finally:
            os.close(fd)
    return removed


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


def check_regular(path: str | os.PathLike, what: str = "file") -> int:
    """Refuse ``path`` unless it is a regular file (not a folder, FIFO, device, socket) -> its size.

    For paths handed to another library's reader; gatescope's own readers use `open_regular`.
    """
    with reading(path, what):
        st = os.stat(path)
    if kind := _not_regular(st.st_mode):
        raise GatescopeError(f"{path} is {kind}, not a {what}")
    return st.st_size


@contextmanager
def open_regular(path: str | os.PathLike, what: str = "file") -> Iterator[BinaryIO]:
    """Open ``path`` for binary reading if it is a regular file; anything else is a one-line error.

    The file is opened without blocking (a FIFO with no writer would block ``open`` forever) and
    checked on the open descriptor, so what is checked is what is read.
    """
    with reading(path, what):
        fd = os.open(path, os.O_RDONLY | _NONBLOCK | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0))
        try:
            kind = _not_regular(os.fstat(fd).st_mode)
            if kind:
                raise GatescopeError(f"{path} is {kind}, not a {what}")
            if _NONBLOCK:
                os.set_blocking(fd, True)
            f = os.fdopen(fd, "rb")
        except BaseException:
            os.close(fd)
            raise
        with f:
            yield f


def read_limited(path: str | os.PathLike, what: str, limit: int, raise_with: str = "") -> bytes:
    """The whole of the regular file ``path`` (a ``what``) when it holds at most ``limit`` bytes; a larger
    one is refused before it is read (``raise_with``: the option that raises the limit, for the message)."""
    with open_regular(path, what) as f:
        size = file_size(f)
        if size > limit:
            raise GatescopeError(f"{path} is {_megabytes(size)}; a {what} is read whole up to {_megabytes(limit)}"
                                 + (f" ({raise_with} raises the limit)" if raise_with else ""))
        with reading(path, what):
            raw = f.read(limit + 1)
    if len(raw) > limit:  # grew while read
        raise GatescopeError(f"{path} grew past {_megabytes(limit)} while it was read")
    return raw


def _megabytes(size: int) -> str:
    return f"{size / 2**20:.1f} MB" if size < 2**30 else f"{size / 2**30:.1f} GB"


def inside(folder: str | os.PathLike, name: str, what: str) -> Path:
    """``folder/name`` when ``name`` is a plain file name and the path does not lead out of ``folder``
    (a symbolic link resolving elsewhere); anything else is a one-line error naming where it points."""
    folder = Path(folder)
    if not name or Path(name).name != name or name in (".", ".."):
        raise GatescopeError(f"{folder}: the {what} {name!r} is not a file of the folder (gatescope reads "
                             "only files inside it: no absolute path, no '..')")
    path = folder / name
    if path.is_symlink():
        target = os.path.realpath(path)
        if os.path.dirname(target) != os.path.realpath(folder):
            raise GatescopeError(f"{path}: the {what} is a symbolic link to {target}, outside the folder; "
                                 "gatescope reads no file the user did not name")
    return path


def file_size(f: BinaryIO) -> int:
    """The size in bytes of an open file."""
    return os.fstat(f.fileno()).st_size


def text_lines(path: str | os.PathLike, what: str = "text file") -> Iterator[tuple[int, str]]:
    """(line number from 1, line without its end) of a UTF-8 text file, read a bounded line at a time.

    A line longer than `MAX_LINE_BYTES`, one that is not UTF-8 or one holding NUL bytes (a binary
    file) is a one-line error naming it.
    """
    with open_regular(path, what) as f:
        for number in range(1, 2**63):
            with reading(path, what):
                raw = f.readline(MAX_LINE_BYTES + 1)
            if not raw:
                return
            if len(raw) > MAX_LINE_BYTES:
                raise GatescopeError(
                    f"{path}:{number}: the line is longer than {MAX_LINE_BYTES // 2**20} MB; is this a {what}?"
                )
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError:
                raise GatescopeError(f"{path} is not UTF-8 text (line {number})") from None
            if "\x00" in line:
                raise GatescopeError(f"{path}:{number}: the line holds NUL bytes; is this a {what}?")
            yield number, line.rstrip("\r\n")
