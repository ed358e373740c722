"""The safetensors header of a file, read within bounds and checked entry by entry.

Format: https://github.com/huggingface/safetensors (8 bytes little-endian header length N, N bytes
of JSON, then the data section). The JSON maps each tensor name to ``{"dtype", "shape",
"data_offsets": [begin, end]}`` (offsets into the data section) and may hold ``__metadata__``, an
object of strings. Checked here, before anything is allocated: the header's length against the
file's size and `MAX_HEADER_BYTES`, what parsing it may build (`MAX_HEADER_CONTAINERS`,
`MAX_HEADER_ITEMS`, counted before parsing); the JSON (no duplicate keys, no nesting beyond Python's
stack, no integer beyond Python's int-string limit); every entry's dtype (a safetensors name),
shape (at most `MAX_DIMS` non-negative integers, each at most `MAX_DIM`) and offsets (inside
the file, exactly as many bytes as dtype x shape, no two tensors overlapping). Readers of
checkpoints and traces build on `read_header`; nothing behind it re-checks these.
"""
from __future__ import annotations

import json
import math
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gatescope.errors import GatescopeError, shown
from gatescope.files import file_size, open_regular
from gatescope.validation.limits import (
    MAX_DIM,
    MAX_DIMS,
    MAX_HEADER_BYTES,
    MAX_HEADER_CONTAINERS,
    MAX_HEADER_ITEMS,
    MAX_JSON_DEPTH,
    MAX_NAME_CHARS,
)
from gatescope.validation.schema import invalid, one_of, parse, sized

# safetensors dtype -> bits per element (safetensors/src/tensor.rs, Dtype::bitsize)
META_KEY = "gatescope"  # the one safetensors metadata key of gatescope's files (models and traces), holding JSON

DTYPE_BITS = {
    "BOOL": 8, "U8": 8, "I8": 8, "F8_E5M2": 8, "F8_E4M3": 8, "F8_E8M0": 8, "F4": 4, "F6_E2M3": 6, "F6_E3M2": 6,
    "I16": 16, "U16": 16, "F16": 16, "BF16": 16, "I32": 32, "U32": 32, "F32": 32, "C64": 64,
    "I64": 64, "U64": 64, "F64": 64,
}
FLOATS = ("F64", "F32", "F16", "BF16")  # the floating-point dtypes gatescope computes with
LOW_PRECISION = {"F8_E5M2": "float8", "F8_E4M3": "float8", "F8_E8M0": "float8", "F4": "float4",
                 "F6_E2M3": "float6", "F6_E3M2": "float6"}
INTEGERS = {"BOOL": "torch.bool", "U8": "torch.uint8", "I8": "torch.int8", "I16": "torch.int16",
            "U16": "torch.uint16", "I32": "torch.int32", "U32": "torch.uint32", "I64": "torch.int64",
            "U64": "torch.uint64"}  # safetensors dtype -> the torch dtype it loads as


@dataclass(frozen=True)
class _Entry:
    """One tensor's entry in the header, as the JSON holds it."""

    dtype: str = one_of(tuple(DTYPE_BITS))
    shape: list[int] = sized(max_items=MAX_DIMS)
    data_offsets: list[int] = sized(max_items=2)


@dataclass(frozen=True)
class TensorEntry:
    """One tensor of the file: dtype, shape and where its bytes lie in the data section."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    begin: int
    end: int

    @property
    def numel(self) -> int:
        return math.prod(self.shape)


@dataclass(frozen=True)
class Header:
    """A checked safetensors header: tensors in file order, the metadata strings, the data's place."""

    path: Path
    tensors: dict[str, TensorEntry]
    metadata: dict[str, str]
    data_start: int  # byte offset of the data section in the file
    size: int  # the file's size in bytes


def _unreadable(path: Path, why: str) -> GatescopeError:
    return GatescopeError(f"{path} is not a readable safetensors file ({why})")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):
        seen: set[str] = set()
        dup = next(k for k, _ in pairs if k in seen or seen.add(k))
        raise ValueError(f"the key {shown(dup)} appears twice")
    return out


def json_depth(raw: bytes) -> int:
    """The deepest nesting of objects and lists in JSON text (brackets inside strings not counted)."""
    if raw.count(b"[") + raw.count(b"{") <= MAX_JSON_DEPTH:  # cannot nest deeper: skip the scan
        return 0
    import numpy as np

    text = np.frombuffer(raw, dtype=np.uint8)
    step = np.zeros(256, dtype=np.int32)  # byte -> change of depth
    step[[ord("["), ord("{")]], step[[ord("]"), ord("}")]] = 1, -1
    steps = step[text]
    quote = text == ord('"')
    backslash = text == ord("\\")
    if backslash.any():  # a quote after an odd run of backslashes is inside its string
        at = np.arange(len(text))
        last_other = np.maximum.accumulate(np.where(backslash, -1, at))  # the last non-backslash at or before i
        run = np.concatenate([[0], at[:-1] - last_other[:-1]])  # backslashes just before i
        quote &= run % 2 == 0
    steps[np.cumsum(quote) % 2 == 1] = 0  # inside a string (from its opening quote)
    return int(np.cumsum(steps).max(initial=0))


def parse_json(raw: bytes | str, where: str, wording: str = "is not valid JSON") -> Any:
    """JSON text -> value; invalid JSON, duplicate keys, nesting deeper than `MAX_JSON_DEPTH`, huge integers:
    one-line errors ``{where} {wording} ({why})``. Every JSON document of a user's goes through here."""
    depth = json_depth(raw.encode("utf-8", "surrogatepass") if isinstance(raw, str) else raw)
    if depth > MAX_JSON_DEPTH:
        raise GatescopeError(f"{where} {wording} (nested {depth} deep; the limit is {MAX_JSON_DEPTH})")
    try:
        return json.loads(raw, object_pairs_hook=_no_duplicates)
    except RecursionError:
        raise GatescopeError(f"{where} {wording} (nested too deeply)") from None
    except UnicodeDecodeError:
        raise GatescopeError(f"{where} is not UTF-8 text") from None
    except ValueError as exc:  # JSONDecodeError, duplicate keys, int-string limit
        raise GatescopeError(f"{where} {wording} ({str(exc).splitlines()[0][:120]})") from None


def read_header(path: str | os.PathLike, what: str) -> Header:
    """The checked header of the safetensors file ``path`` (a ``what``, e.g. "trace file")."""
    path = Path(path)
    with open_regular(path, what) as f:
        size = file_size(f)
        prefix = f.read(8)
        if len(prefix) < 8:
            raise _unreadable(path, f"{size} bytes, too short for a header")
        (length,) = struct.unpack("<Q", prefix)
        if length > MAX_HEADER_BYTES:
            raise _unreadable(path, f"its header claims {length} bytes; the limit is {MAX_HEADER_BYTES}")
        if 8 + length > size:
            raise _unreadable(path, f"truncated or corrupt: its header claims {length} bytes; the file has {size}")
        raw = f.read(length)
    if not raw.lstrip(b" ").startswith(b"{"):
        raise _unreadable(path, "its header is not a JSON object")
    containers, items = raw.count(b"{") + raw.count(b"["), raw.count(b",")
    if containers > MAX_HEADER_CONTAINERS or items > MAX_HEADER_ITEMS:
        raise _unreadable(path, f"its header holds {containers} objects and lists and {items} commas; the limits are "
                                f"{MAX_HEADER_CONTAINERS} and {MAX_HEADER_ITEMS}")
    header = parse_json(raw, f"{path} is not a readable safetensors file: its header")
    data_start = 8 + length
    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise invalid(f"{path} is not a readable safetensors file: the header's", "__metadata__",
                      "a JSON object of strings", metadata)
    tensors = {name: _entry(path, name, info, size - data_start) for name, info in header.items()}
    _check_no_overlap(path, tensors.values())
    return Header(path, tensors, metadata, data_start, size)


def _entry(path: Path, name: str, info: Any, data_size: int) -> TensorEntry:
    where = f"{path} is not a readable safetensors file: tensor {shown(name)} field"
    if not name or len(name) > MAX_NAME_CHARS:
        raise _unreadable(path, f"a tensor name must have 1 to {MAX_NAME_CHARS} characters; got {shown(name)}")
    entry = parse(_Entry, info, where)
    for i, dim in enumerate(entry.shape):
        if not isinstance(dim, int) or isinstance(dim, bool) or not 0 <= dim <= MAX_DIM:
            raise invalid(where, f"shape[{i}]", f"an integer from 0 to {MAX_DIM}", dim)
    offsets = entry.data_offsets
    if len(offsets) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) for v in offsets):
        raise invalid(where, "data_offsets", "two integers [begin, end]", offsets)
    begin, end = offsets
    if not 0 <= begin <= end:
        raise invalid(where, "data_offsets", "[begin, end] with 0 <= begin <= end", offsets)
    if end > data_size:
        raise _unreadable(path, f"truncated or corrupt: tensor {shown(name)} lies outside the file "
                                f"(bytes {begin}..{end} of a data section of {data_size})")
    nbytes = math.prod(entry.shape) * DTYPE_BITS[entry.dtype]
    if nbytes != (end - begin) * 8:
        raise _unreadable(path, f"tensor {shown(name)} of shape {shown(entry.shape)} and dtype {entry.dtype} "
                                f"needs {nbytes // 8} bytes, but its data_offsets give {end - begin}")
    return TensorEntry(name, entry.dtype, tuple(entry.shape), begin, end)


def _check_no_overlap(path: Path, entries) -> None:
    last: TensorEntry | None = None
    for entry in sorted((e for e in entries if e.end > e.begin), key=lambda e: e.begin):
        if last is not None and entry.begin < last.end:
            raise _unreadable(path, f"tensors {shown(last.name)} and {shown(entry.name)} overlap")
        last = entry


def check_dtype(path: Path, entry: TensorEntry, allowed: tuple[str, ...], role: str) -> None:
    """Refuse ``entry`` unless its dtype is in ``allowed``, naming float8 and integers as such."""
    if entry.dtype in allowed:
        return
    expected = ", ".join(allowed[:-1]) + f" or {allowed[-1]}" if len(allowed) > 1 else allowed[0]
    if entry.dtype in LOW_PRECISION:
        raise GatescopeError(
            f"{path}: {role} {shown(entry.name)} is stored as {entry.dtype} ({LOW_PRECISION[entry.dtype]}), which "
            f"gatescope does not compute with; convert it to {expected} first"
        )
    held = f"holds {INTEGERS[entry.dtype]} values ({entry.dtype})" if entry.dtype in INTEGERS else \
        f"has dtype {entry.dtype}"
    raise GatescopeError(f"{path}: {role} {shown(entry.name)} {held}; expected {expected}")
