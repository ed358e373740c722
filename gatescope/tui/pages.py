"""Give back the pages of a memory-mapped trace once the browser has copied the rows it read.

A loaded trace is a copy-on-write file mapping (gatescope.trace.load_trace). Every page the
browser touches stays in its resident set until the kernel needs the memory, so browsing
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

import torch

MADV_DONTNEED = 4
_LIBC = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None


def file_backed(tensor: torch.Tensor) -> bool:
    """Whether ``tensor``'s memory lies in a mapping of a file (per /proc/self/maps; Linux only)."""
    if _LIBC is None or tensor.numel() == 0 or tensor.device.type != "cpu":
        return False
    start = tensor.data_ptr()
    end = start + tensor.numel() * tensor.element_size()
    with open("/proc/self/maps") as maps:
        for line in maps:
            fields = line.split()
            low, high = (int(v, 16) for v in fields[0].split("-"))
            if low <= start and end <= high:
                return len(fields) >= 6 and fields[4] != "0" and fields[5].startswith("/")
    return False


def release(view: torch.Tensor) -> None:
    """Drop the whole pages under ``view`` (a slice of a file-backed tensor) from this process."""
    if _LIBC is None or view.numel() == 0:
        return
    start = view.data_ptr()
    end = start + view.numel() * view.element_size()
    first = -(-start // mmap.PAGESIZE) * mmap.PAGESIZE  # whole pages only: neighbours keep theirs
    last = end // mmap.PAGESIZE * mmap.PAGESIZE
    if last > first:
        _LIBC.madvise(ctypes.c_void_p(first), ctypes.c_size_t(last - first), MADV_DONTNEED)
