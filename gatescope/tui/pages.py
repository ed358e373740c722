"""Give back the pages of a memory-mapped trace once the browser has copied the rows it read.

A trace file is a copy-on-write file mapping (gatescope.traces.file.read_trace_file). Every page
the browser touches stays in its resident set until the kernel needs the memory, so browsing
or ranking across a 15 GB trace would show gigabytes of RSS that are only cache. After
a block of rows has been copied out, `release` tells the kernel (madvise MADV_DONTNEED,
Linux) that this process is done with those pages: they leave its resident set and stay
in the page cache, so reading them again is still fast. Only file-backed mappings are
released (on anonymous memory MADV_DONTNEED would zero the data); elsewhere it does nothing.
"""
from __future__ import annotations

import ctypes
import mmap
import sys

import numpy as np

from gatescope.traces.file import TraceFile

MADV_DONTNEED = 4
_LIBC = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None


def _span(array: np.ndarray) -> tuple[int, int]:
    """The addresses of the first byte and one past the last of a C-contiguous array."""
    start = array.__array_interface__["data"][0]
    return start, start + array.nbytes


def file_backed(array: np.ndarray) -> bool:
    """Whether ``array``'s memory lies in a mapping of a file (per /proc/self/maps; Linux only)."""
    if not isinstance(array, np.ndarray):  # a sharded trace's rows (gatescope.traces.file.RowConcat)
        return all(file_backed(part) for part in array.parts)
    if _LIBC is None or array.size == 0:
        return False
    start, end = _span(array)
    with open("/proc/self/maps") as maps:
        for line in maps:
            fields = line.split()
            low, high = (int(v, 16) for v in fields[0].split("-"))
            if low <= start and end <= high:
                return len(fields) >= 6 and fields[4] != "0" and fields[5].startswith("/")
    return False


def release(view: np.ndarray) -> None:
    """Drop the whole pages under ``view`` (rows of a file-backed array) from this process."""
    if _LIBC is None or view.size == 0:
        return
    start, end = _span(view)
    first = -(-start // mmap.PAGESIZE) * mmap.PAGESIZE  # whole pages only: neighbours keep theirs
    last = end // mmap.PAGESIZE * mmap.PAGESIZE
    if last > first:
        _LIBC.madvise(ctypes.c_void_p(first), ctypes.c_size_t(last - first), MADV_DONTNEED)


def copy_rows(data: TraceFile, name: str, start: int, stop: int, mapped: bool) -> np.ndarray:
    """Rows start:stop of ``name`` as float32 (`TraceFile.rows`), their pages released when ``mapped``."""
    rows = data.rows(name, start, stop)  # (stop-start, H)
    if mapped:
        release(data.arrays[name][start:stop])
    return rows
