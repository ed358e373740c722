"""The trace file, read without torch: a safetensors header, memory-mapped numpy arrays, metadata.

The format is in docs/trace-format.md. This module is what `gatescope.traces.trace.load_trace` builds
on, and what the terminal browser reads directly, so that it opens a trace without paying for
importing torch. Arrays are copy-on-write memory maps: a page is read from disk only when a
row on it is touched. Every check of a file's contents is made once, before anything is mapped,
by the validation layer (gatescope.validation.trace); what this module maps it trusts.
"""
from __future__ import annotations

import json
import os
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from gatescope.errors import GatescopeError
from gatescope.names import parse_name

if TYPE_CHECKING:
    from gatescope.validation.safetensors import TensorEntry

FORMAT = "gatescope.traces.trace"
FORMAT_VERSION = 1
META_KEY = "gatescope"
FEATURE_PREFIX = "feature."

# safetensors dtype -> numpy storage dtype (bfloat16 has none: its 16 bits are kept as uint16)
STORAGE = {"F64": np.float64, "F32": np.float32, "F16": np.float16, "BF16": np.uint16, "I64": np.int64, "I32": np.int32}


@dataclass
class TraceFile:
    """A trace file's contents as numpy arrays (memory maps), in the recorded order."""

    path: Path | None  # None for a trace held in memory (the browser's view of a Trace)
    arrays: dict[str, np.ndarray]  # name -> (N, H) (a shardfile.RowConcat when sharded), in recorded order
    dtypes: dict[str, str]  # tensor name -> safetensors dtype (F32, F16, BF16, ...)
    offsets: np.ndarray  # (S+1,) int64
    token_ids: np.ndarray | None  # (N,) int64
    features: dict[str, np.ndarray]  # name -> (N,) float32
    meta: dict[str, Any]

    @property
    def names(self) -> list[str]:
        return list(self.arrays)

    def rows(self, name: str, start: int, stop: int) -> np.ndarray:
        """Rows start:stop of quantity ``name`` as float32 (a copy; bfloat16 widened exactly)."""
        block = self.arrays[name][start:stop]
        if self.dtypes[name] == "BF16":
            return (block.astype(np.uint32) << 16).view(np.float32)
        return block.astype(np.float32)


def check_layout(
    offsets: np.ndarray,
    shapes: Mapping[str, tuple[int, ...]],
    token_ids: int | None = None,
    features: Mapping[str, int] | None = None,
) -> int:
    """Check that quantities, token ids and features all have one row per token -> that count.

    offsets (S+1,) must start at 0 and never decrease; shapes: quantity name -> shape, each
    [N, hidden]; token_ids / features: their lengths. Anything else is a one-line GatescopeError.
    """
    if offsets.ndim != 1 or len(offsets) < 1 or offsets[0] != 0 or (np.diff(offsets) < 0).any():
        raise GatescopeError("trace offsets must start at 0 and never decrease")
    n = int(offsets[-1])
    for name, shape in shapes.items():
        parse_name(name)
        if len(shape) != 2 or shape[0] != n or shape[1] < 1:
            raise GatescopeError(f"trace tensor {name} has shape {tuple(shape)}; expected [{n}, hidden]")
    if token_ids is not None and token_ids != n:
        raise GatescopeError(f"token_ids has {token_ids} entries for {n} tokens")
    for name, count in (features or {}).items():
        if count != n:
            raise GatescopeError(f"feature {name!r} has {count} values; the trace has {n} tokens")
    return n


def read_trace_file(path: str | os.PathLike) -> TraceFile:
    """Validate and memory-map a trace file, or a sharded trace's folder (gatescope.traces.shards), as one
    trace; every problem is a one-line GatescopeError."""
    from gatescope.validation.trace import validate_trace  # the door; it imports this module's format names

    path = Path(path)
    if path.is_dir() and (path / "index.json").is_file():
        from gatescope.traces.shards import read_sharded

        return read_sharded(path)
    layout = validate_trace(path)
    start = layout.header.data_start
    arrays = {e.name: _map(path, e, start) for e in layout.quantities}
    dtypes = {name: e.dtype for name, e in layout.header.tensors.items()}
    token_ids = None if layout.token_ids is None else _map(path, layout.token_ids, start)
    features = {name: _map(path, e, start) for name, e in layout.features.items()}
    return TraceFile(path, arrays, dtypes, layout.offsets, token_ids, features, layout.meta)


def _map(path: Path, entry: TensorEntry, data_start: int) -> np.ndarray:
    dtype = STORAGE[entry.dtype]
    if 0 in entry.shape:
        return np.empty(entry.shape, dtype=dtype)
    # copy-on-write: pages are read only when touched, and the array is writable (torch wants that)
    return np.memmap(path, dtype=dtype, mode="c", offset=data_start + entry.begin, shape=entry.shape)


class TraceWriter:
    """Writes a trace file whose size is known in advance, a block of rows at a time.

    The header (every tensor's dtype, shape and place) is written first and the data section is
    filled in as rows arrive, so a corpus of any length is traced in bounded memory. Write to a
    temporary path inside `gatescope.files.atomic_write`, which renames it only once complete.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        widths: Mapping[str, int],
        dtype: str,
        offsets: np.ndarray,
        token_ids: bool,
        meta: Mapping[str, Any],
        features: tuple[str, ...] = (),
    ) -> None:
        """widths: quantity name -> hidden size; dtype: F32, F16 or BF16; offsets: (S+1,) int;
        features: names of per-token features (float32, written as ``feature.{name}``)."""
        n = int(offsets[-1])
        header: dict[str, Any] = {}
        self._places: dict[str, tuple[int, int, int]] = {}  # tensor -> (start, end in the data, bytes per row)
        cursor = 0

        def place(name: str, dtype: str, shape: list[int]) -> None:
            nonlocal cursor
            row_bytes = np.dtype(STORAGE[dtype]).itemsize * (shape[1] if len(shape) == 2 else 1)
            header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [cursor, cursor + row_bytes * shape[0]]}
            self._places[name] = (cursor, cursor + row_bytes * shape[0], row_bytes)
            cursor += row_bytes * shape[0]

        for name, width in widths.items():
            place(name, dtype, [n, width])
        place("offsets", "I64", [len(offsets)])
        if token_ids:
            place("token_ids", "I64", [n])
        for name in features:
            place(FEATURE_PREFIX + name, "F32", [n])
        header["__metadata__"] = {META_KEY: json.dumps({**meta, "format": FORMAT, "format_version": FORMAT_VERSION})}
        raw = json.dumps(header, separators=(",", ":")).encode()
        raw += b" " * (-len(raw) % 8)  # safetensors pads its header to 8 bytes
        self._file = open(path, "wb")
        self._file.write(struct.pack("<Q", len(raw)) + raw)
        self._data_start = 8 + len(raw)
        self._file.truncate(self._data_start + cursor)
        self.write("offsets", 0, np.asarray(offsets, dtype="<i8"))

    def write(self, name: str, start: int, rows: np.ndarray) -> None:
        """Put ``rows`` (in the tensor's storage dtype) at row ``start`` of tensor ``name``."""
        begin, end, row_bytes = self._places[name]
        data = memoryview(np.ascontiguousarray(rows).reshape(-1)).cast("B")  # the rows' own bytes, no copy
        at = begin + start * row_bytes
        if data.nbytes % row_bytes or at + data.nbytes > end:
            raise ValueError(f"{name}: {data.nbytes} bytes at row {start} do not fit the tensor")
        self._file.seek(self._data_start + at)
        self._file.write(data)

    def close(self) -> None:
        self._file.close()
