"""The trace file, read without torch: a safetensors header, memory-mapped numpy arrays, metadata.

The format is in docs/trace-format.md. This module is what `gatescope.trace.load_trace` builds
on, and what the terminal browser reads directly, so that it opens a trace without paying for
importing torch. Arrays are copy-on-write memory maps: a page is read from disk only when a
row on it is touched.
"""
from __future__ import annotations

import json
import os
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from gatescope.errors import GatescopeError
from gatescope.files import reading
from gatescope.names import canonical_order, parse_name

FORMAT = "gatescope.trace"
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
        if len(shape) != 2 or shape[0] != n:
            raise GatescopeError(f"trace tensor {name} has shape {tuple(shape)}; expected [{n}, hidden]")
    if token_ids is not None and token_ids != n:
        raise GatescopeError(f"token_ids has {token_ids} entries for {n} tokens")
    for name, count in (features or {}).items():
        if count != n:
            raise GatescopeError(f"feature {name!r} has {count} values; the trace has {n} tokens")
    return n


def read_trace_file(path: str | os.PathLike) -> TraceFile:
    """Validate and memory-map a trace file, or a sharded trace's folder (gatescope.shardfile), as one
    trace; every problem is a one-line GatescopeError."""
    path = Path(path)
    if path.is_dir() and (path / "index.json").is_file():
        from gatescope.shardfile import read_sharded

        return read_sharded(path)
    header, data_start = _read_header(path)
    meta_json = (header.pop("__metadata__", None) or {}).get(META_KEY)
    if meta_json is None:
        raise GatescopeError(f"{path} is a safetensors file but not a gatescope trace (no '{META_KEY}' metadata)")
    try:
        meta = json.loads(meta_json)
    except json.JSONDecodeError:
        raise GatescopeError(f"{path}: the '{META_KEY}' metadata is not valid JSON") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise GatescopeError(f"{path} is not a gatescope trace (format {meta.get('format') if isinstance(meta, dict) else None!r})")
    if meta.get("format_version", 0) > FORMAT_VERSION:
        raise GatescopeError(
            f"{path} is trace format version {meta['format_version']}; this gatescope reads up to {FORMAT_VERSION}"
        )
    if "offsets" not in header:
        raise GatescopeError(f"{path} is not a gatescope trace: it has no 'offsets' tensor")
    arrays = {name: _map(path, info, data_start) for name, info in header.items()}
    dtypes = {name: info["dtype"] for name, info in header.items()}
    offsets = np.array(arrays.pop("offsets"), dtype=np.int64)
    token_ids = arrays.pop("token_ids", None)
    features = {k[len(FEATURE_PREFIX):]: arrays.pop(k) for k in list(arrays) if k.startswith(FEATURE_PREFIX)}
    # safetensors stores tensors in its own order; give them back in the recorded one
    paths = [m.get("name") for m in meta.get("modules", []) if isinstance(m, dict)]
    arrays = {name: arrays[name] for name in canonical_order(arrays, paths)}
    try:
        check_layout(
            offsets,
            {name: a.shape for name, a in arrays.items()},
            None if token_ids is None else int(np.prod(token_ids.shape)),
            {name: int(np.prod(v.shape)) for name, v in features.items()},
        )
    except GatescopeError as exc:
        raise GatescopeError(f"{path} is not a valid trace: {exc}") from None
    return TraceFile(path, arrays, dtypes, offsets, token_ids, features, meta)


def _read_header(path: Path) -> tuple[dict[str, Any], int]:
    """The safetensors JSON header of ``path`` and where its data section starts, validated."""
    with reading(path, "trace file"), open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        prefix = f.read(8)
        if len(prefix) < 8:
            raise GatescopeError(f"{path} is not a safetensors file (too short)")
        (header_len,) = struct.unpack("<Q", prefix)
        if header_len > min(size - 8, 100_000_000):
            raise GatescopeError(f"{path} is not a safetensors file, or its header is truncated")
        raw = f.read(header_len)
    try:
        header = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise GatescopeError(f"{path} is not a safetensors file (corrupt header)") from None
    if not isinstance(header, dict):
        raise GatescopeError(f"{path} is not a safetensors file (corrupt header)")
    data_start = 8 + header_len
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            begin, end = info["data_offsets"]
            shape, dtype = info["shape"], info["dtype"]
        except (TypeError, KeyError, ValueError):
            raise GatescopeError(f"{path}: corrupt entry for tensor {name!r} in the header") from None
        if dtype not in STORAGE:
            raise GatescopeError(f"{path}: tensor {name!r} has dtype {dtype}, which traces do not use")
        itemsize = np.dtype(STORAGE[dtype]).itemsize
        if end - begin != itemsize * int(np.prod(shape)) or data_start + end > size:
            raise GatescopeError(f"{path} is truncated or corrupt (tensor {name!r} lies outside the file)")
    return header, data_start


def _map(path: Path, info: dict[str, Any], data_start: int) -> np.ndarray:
    shape = tuple(info["shape"])
    dtype = STORAGE[info["dtype"]]
    if 0 in shape:
        return np.empty(shape, dtype=dtype)
    # copy-on-write: pages are read only when touched, and the array is writable (torch wants that)
    return np.memmap(path, dtype=dtype, mode="c", offset=data_start + info["data_offsets"][0], shape=shape)


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
        data = np.ascontiguousarray(rows).tobytes()
        at = begin + start * row_bytes
        if len(data) % row_bytes or at + len(data) > end:
            raise ValueError(f"{name}: {len(data)} bytes at row {start} do not fit the tensor")
        self._file.seek(self._data_start + at)
        self._file.write(data)

    def close(self) -> None:
        self._file.close()
