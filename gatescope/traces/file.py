"""The trace file, read without torch: a safetensors header, memory-mapped numpy arrays, metadata.

The format is in docs/trace-format.md. This module is what `gatescope.traces.trace.load_trace` builds
on, and what the terminal browser reads directly, so that it opens a trace without paying for
importing torch. Arrays are copy-on-write memory maps: a page is read from disk only when a
row on it is touched. Every check of a file's contents is made once, before anything is mapped,
by the validation layer (gatescope.validation.trace); what this module maps it trusts.

Sharded traces: a folder of trace files read as one trace, without torch.

A corpus too long for one file is traced into a folder (the layout of Hugging Face's sharded
safetensors checkpoints, ``model-00001-of-00003.safetensors`` + ``model.safetensors.index.json``)::

    DIR/trace-00000-of-00003.safetensors   each a complete trace file (docs/trace-format.md)
    DIR/trace-00001-of-00003.safetensors   holding whole sequences, in corpus order
    DIR/trace-00002-of-00003.safetensors
    DIR/index.json                         {"metadata": {...}, "shards": [{"file", "sequences", "tokens"}]}

`read_sharded` validates every shard (`gatescope.traces.file.read_trace_file`) and the index (each a
file of the folder: a link leading out of it is refused, gatescope.files.inside), and
gives one `TraceFile` whose quantities are `RowConcat`s: lazy row concatenations of the shards'
memory maps, so ``arrays[name][a:b]`` reads only the shards and rows it touches. Token ids,
offsets and features (a few bytes a token) are concatenated when the folder is opened.
A folder is written as a set: into a temporary folder beside it, renamed into place when complete.
"""
from __future__ import annotations

import json
import os
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from gatescope.errors import GatescopeError
from gatescope.files import inside
from gatescope.validation.limits import MAX_JSON_BYTES
from gatescope.validation.text import read_json
from gatescope.validation.trace import FEATURE_PREFIX, FORMAT, FORMAT_VERSION, META_KEY

if TYPE_CHECKING:
    from gatescope.validation.safetensors import TensorEntry

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


def read_trace_file(path: str | os.PathLike) -> TraceFile:
    """Validate and memory-map a trace file, or a sharded trace's folder (gatescope.traces.file), as one
    trace; every problem is a one-line GatescopeError."""
    from gatescope.validation.trace import validate_trace  # the door; it imports this module's format names

    path = Path(path)
    if path.is_dir() and (path / "index.json").is_file():
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
        dtype: str | Mapping[str, str],
        offsets: np.ndarray,
        token_ids: bool,
        meta: Mapping[str, Any],
        features: Mapping[str, str] | None = None,
    ) -> None:
        """widths: quantity name -> hidden size; dtype: F32, F16, BF16 or F64, one for all quantities or
        one per name; offsets: (S+1,) int; features: per-token feature name -> dtype (F32, F16, F64),
        written as ``feature.{name}``. ``meta`` gains the format's name and version."""
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
            place(name, dtype if isinstance(dtype, str) else dtype[name], [n, width])
        place("offsets", "I64", [len(offsets)])
        if token_ids:
            place("token_ids", "I64", [n])
        for name, feature_dtype in (features or {}).items():
            place(FEATURE_PREFIX + name, feature_dtype, [n])
        header["__metadata__"] = {META_KEY: json.dumps({**meta, "format": FORMAT, "format_version": FORMAT_VERSION})}
        raw = json.dumps(header, separators=(",", ":")).encode()
        raw += b" " * (-len(raw) % 8)  # safetensors pads its header to 8 bytes
        self._file = open(path, "wb", buffering=0)  # positioned writes only (os.pwrite): no seek, no buffer
        _put(self._file.fileno(), memoryview(struct.pack("<Q", len(raw)) + raw), 0)
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
        _put(self._file.fileno(), data, self._data_start + at)

    def close(self) -> None:
        self._file.close()


def _put(fd: int, data: memoryview, at: int) -> None:
    """Write all of ``data`` at byte ``at`` of the file (pwrite may write part of a large block)."""
    while data:
        done = os.pwrite(fd, data, at)
        data, at = data[done:], at + done


INDEX = "index.json"
SHARDED_FORMAT = "gatescope.trace.sharded"
SHARDED_VERSION = 1


def shard_name(index: int, count: int) -> str:
    """``trace-00000-of-00003.safetensors``: 0-based index, 5 digits."""
    return f"trace-{index:05d}-of-{count:05d}.safetensors"


def is_sharded(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a folder holding a sharded trace's index."""
    return Path(path).is_dir() and (Path(path) / INDEX).is_file()


def plan_shards(lengths: Sequence[int], shard_tokens: int) -> list[range]:
    """Consecutive ranges of sequences, each of at most ``shard_tokens`` tokens (a longer sequence alone)."""
    if shard_tokens < 1:
        raise GatescopeError(f"--shard-tokens must be at least 1, not {shard_tokens}")
    shards, first, tokens = [], 0, 0
    for s, length in enumerate(lengths):
        if s > first and tokens + length > shard_tokens:
            shards.append(range(first, s))
            first, tokens = s, 0
        tokens += length
    if len(lengths) > first:
        shards.append(range(first, len(lengths)))
    return shards


def write_index(folder: Path, shards: Sequence[dict[str, Any]], meta: dict[str, Any]) -> None:
    """Write ``folder/index.json`` for shards [{"file", "sequences", "tokens"}] in order."""
    total_size = sum((folder / s["file"]).stat().st_size for s in shards)
    index = {"metadata": {"format": SHARDED_FORMAT, "format_version": SHARDED_VERSION, "total_size": total_size,
                          "total_sequences": sum(s["sequences"] for s in shards),
                          "total_tokens": sum(s["tokens"] for s in shards), **meta},
             "shards": list(shards)}
    (folder / INDEX).write_text(json.dumps(index, indent=1), encoding="utf-8")


def check_destination(output: str | os.PathLike) -> None:
    """Refuse to write a sharded trace to ``output`` unless it is new, an empty folder or an older sharded trace."""
    output = Path(output)
    if output.exists() and not (output.is_dir() and (not any(output.iterdir()) or is_sharded(output))):
        raise GatescopeError(f"cannot write a sharded trace to {output}: it exists and is not an empty folder "
                             f"or a sharded trace")


class RowConcat:
    """Rows of several arrays [n_i, H] (or [n_i]) read as one [sum n_i, H], lazily.

    ``x[a:b]``, ``x[a:b, cols]``, ``x[i]``, ``x[rows]`` (an index or mask array) read only the parts
    they touch; a slice inside one part is that part's own view (a memory map stays one).
    """

    def __init__(self, parts: Sequence[np.ndarray]) -> None:
        self.parts = list(parts)
        lengths = [len(p) for p in self.parts]
        self.starts = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)  # (P+1,)
        self.shape = (int(self.starts[-1]), *self.parts[0].shape[1:])
        self.dtype = self.parts[0].dtype

    ndim = property(lambda self: len(self.shape))
    size = property(lambda self: int(np.prod(self.shape)))
    nbytes = property(lambda self: self.size * self.dtype.itemsize)

    def __len__(self) -> int:
        return self.shape[0]

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        out = np.concatenate(self.parts)
        return out if dtype is None else out.astype(dtype)

    def __getitem__(self, key: Any) -> np.ndarray:
        rows, cols = (key[0], key[1:]) if isinstance(key, tuple) else (key, ())
        n = self.shape[0]
        if isinstance(rows, (int, np.integer)):
            r = int(rows) + n if rows < 0 else int(rows)
            if not 0 <= r < n:
                raise IndexError(f"row {rows} of {n}")
            p = int(np.searchsorted(self.starts, r, side="right")) - 1
            return self.parts[p][(r - self.starts[p], *cols)]
        if isinstance(rows, slice) and rows.step in (None, 1):
            a, b, _ = rows.indices(n)
            pieces = [part[(slice(max(a, s0) - s0, min(b, s1) - s0), *cols)]
                      for part, s0, s1 in zip(self.parts, self.starts[:-1], self.starts[1:]) if s0 < b and s1 > a]
            if not pieces:
                return self.parts[0][(slice(0, 0), *cols)]
            return pieces[0] if len(pieces) == 1 else np.concatenate(pieces)
        index = np.arange(n)[rows]  # masks, index arrays, strided slices -> row numbers, in order
        which = np.searchsorted(self.starts, index, side="right") - 1
        first = self.parts[0][(slice(0, 0), *cols)]
        out = np.empty((len(index), *first.shape[1:]), dtype=self.dtype)
        for p in np.unique(which):
            at = which == p
            out[at] = self.parts[p][(index[at] - self.starts[p], *cols)]
        return out


def read_sharded(folder: str | os.PathLike):
    """Validate and open a sharded trace folder -> one `TraceFile` (quantities as `RowConcat`)."""
    folder = Path(folder)
    index = read_json(inside(folder, INDEX, "sharded trace index"), "sharded trace index", MAX_JSON_BYTES,
                      "a sharded trace index: corrupt JSON")
    try:
        meta, shards = index["metadata"], index["shards"]
        files = [s["file"] for s in shards]
        counts = [(int(s["sequences"]), int(s["tokens"])) for s in shards]
    except (json.JSONDecodeError, KeyError, TypeError, ValueError):
        raise GatescopeError(f"{folder / INDEX} is not a sharded trace index (corrupt JSON)") from None
    if not isinstance(meta, dict) or meta.get("format") != SHARDED_FORMAT:
        raise GatescopeError(f"{folder / INDEX} is not a gatescope sharded trace index")
    version = meta.get("format_version", 0)
    if not isinstance(version, int) or isinstance(version, bool) or not all(isinstance(f, str) for f in files):
        raise GatescopeError(f"{folder / INDEX} is not a gatescope sharded trace index (format_version or file names)")
    if version > SHARDED_VERSION:
        raise GatescopeError(f"{folder} is sharded trace version {meta['format_version']}; this gatescope reads "
                             f"up to {SHARDED_VERSION}")
    if not files:
        raise GatescopeError(f"{folder / INDEX} lists no shards")
    for i, name in enumerate(files):
        if not isinstance(name, str) or name != shard_name(i, len(files)):
            raise GatescopeError(f"{folder / INDEX}: shard {i} is {name!r}; expected {shard_name(i, len(files))}")
    parts = [read_trace_file(inside(folder, name, "shard")) for name in files]
    first = parts[0]
    layout = {n: (a.shape[1], first.dtypes[n]) for n, a in first.arrays.items()}
    for name, part, (seqs, tokens) in zip(files, parts, counts):
        if {n: (a.shape[1], part.dtypes[n]) for n, a in part.arrays.items()} != layout \
                or set(part.features) != set(first.features) or (part.token_ids is None) != (first.token_ids is None):
            raise GatescopeError(f"{folder / name} does not hold the same quantities, dtypes and features as "
                                 f"{files[0]}")
        if (len(part.offsets) - 1, int(part.offsets[-1])) != (seqs, tokens):
            raise GatescopeError(f"{folder / name} has {len(part.offsets) - 1} sequences and {int(part.offsets[-1])} "
                                 f"tokens; the index says {seqs} and {tokens}")
    shift = np.cumsum([0] + [int(p.offsets[-1]) for p in parts[:-1]])
    offsets = np.concatenate([[0]] + [p.offsets[1:] + s for p, s in zip(parts, shift)]).astype(np.int64)
    arrays = {n: RowConcat([p.arrays[n] for p in parts]) for n in first.arrays}
    token_ids = None if first.token_ids is None else np.concatenate([p.token_ids for p in parts])
    features = {f: np.concatenate([p.features[f] for p in parts]) for f in first.features}
    info = {k: v for k, v in meta.items() if k not in ("format", "format_version")}
    return TraceFile(folder, arrays, dict(first.dtypes), offsets, token_ids, features,
                     {**first.meta, "shards": len(parts), "sharded": info})
