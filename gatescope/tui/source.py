"""What the browser reads from a trace: the quantity tree, and cached blocks of rows.

The trace comes as numpy arrays (gatescope.tui.arrays; a file is memory-mapped by
gatescope.traces.file, without torch), so the browser never materialises a quantity: it
reads aligned blocks of rows around the visible window (the idea of Toolong's line index:
read only what is on screen) and keeps the last few blocks, as float32 and as colour
levels, in an LRU cache. The cache belongs to the app's thread; workers read blocks with
`read_block` and hand them back through `store`.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
from textual.cache import LRUCache

from gatescope.errors import GatescopeError
from gatescope.kinds import ALL_KINDS, described_range
from gatescope.names import QuantityName, format_name, parse_name
from gatescope.numbers import whole_numbers
from gatescope.traces.file import TraceFile
from gatescope.tui.colors import Scale
from gatescope.tui.pages import copy_rows, file_backed, release
from gatescope.validation.trace import check_layout

BLOCK = 256  # rows per cached block


class Block(NamedTuple):
    values: np.ndarray  # (BLOCK, H) float32
    levels: np.ndarray  # (BLOCK, H) uint8 colour levels


@dataclass(frozen=True)
class Layer:
    """One module, layer and direction: the kinds recorded for it and its hidden size."""

    path: str
    layer: int
    direction: str
    kinds: tuple[str, ...]
    hidden: int

    def name(self, kind: str) -> str:
        return format_name(self.path, self.layer, self.direction, kind)

    @property
    def label(self) -> str:
        """``rnn.l0.fwd``: the quantity names without the kind."""
        return self.name("")[:-1]


class TraceSource:
    """A trace seen by the browser: its layers, token strings and cached row blocks."""

    def __init__(self, data: TraceFile, cache_blocks: int = 96) -> None:
        self.data = data
        _check(data)
        self.offsets = data.offsets  # (S+1,)
        self.num_tokens = int(self.offsets[-1])
        # in module, layer, direction order (the model's module order); a layer whose kinds differ in width
        # (an mLSTM's per-head gates beside its per-unit states) is shown as one layer per width
        kinds: dict[tuple[str, int, str, int], list[str]] = {}
        for name in data.names:
            q: QuantityName = parse_name(name)
            kinds.setdefault((q.path, q.layer, q.direction, int(data.arrays[name].shape[1])), []).append(q.kind)
        self.layers = [
            Layer(path, layer, direction, tuple(sorted(ks, key=ALL_KINDS.index)), width)
            for (path, layer, direction, width), ks in kinds.items()
        ]
        self.vocab: list[str] | None = data.meta.get("vocab")
        self.tokenizer = data.meta.get("tokenizer", "word")
        self._scales: dict[str, Scale] = {}
        self._blocks: LRUCache[tuple[str, int], Block] = LRUCache(cache_blocks)
        self._mapped = {name: file_backed(array) for name, array in data.arrays.items()}  # release pages once read

    def scale(self, name: str) -> Scale:
        """The colour scale of quantity ``name``: its kind's, over the kind's range in its module's cell type
        (the trace's metadata ``modules``; gatescope.kinds.described_range)."""
        if name not in self._scales:
            q = parse_name(name)
            self._scales[name] = Scale(q.kind, described_range(self.data.meta.get("modules"), q.path, q.kind))
        return self._scales[name]

    # -- rows --------------------------------------------------------------------------
    def block(self, name: str, index: int) -> Block:
        """Rows ``index*BLOCK`` up to ``(index+1)*BLOCK`` of quantity ``name``, from the cache or the trace."""
        key = (name, index)
        cached = self._blocks.get(key)
        if cached is None:
            cached = self.read_block(key)
            self._blocks.set(key, cached)
        return cached

    def read_block(self, key: tuple[str, int]) -> Block:
        """Read one block from the trace, bypassing the cache (safe in a worker thread).

        The last block is padded with NaN to BLOCK rows.
        """
        name, index = key
        start = index * BLOCK
        rows = copy_rows(self.data, name, start, start + BLOCK, self._mapped[name])  # (<=BLOCK, H)
        if rows.shape[0] < BLOCK:
            pad = np.full((BLOCK - rows.shape[0], rows.shape[1]), np.nan, dtype=np.float32)
            rows = np.concatenate([rows, pad])
        return Block(rows, self.scale(name).levels(rows))

    def read_blocks(self, keys: list[tuple[str, int]], cancelled: Callable[[], bool]) -> list[Block] | None:
        """`read_block` for each key (in a worker thread); None as soon as ``cancelled()``."""
        blocks = []
        for key in keys:
            if cancelled():
                return None
            blocks.append(self.read_block(key))
        return blocks

    def missing(self, names: list[str], start: int, stop: int) -> list[tuple[str, int]]:
        """The blocks of ``names`` over rows start:stop that are not cached yet."""
        start, stop = max(start, 0), min(stop, self.num_tokens)
        indices = range(start // BLOCK, (stop - 1) // BLOCK + 1) if stop > start else range(0)
        return [(name, i) for name in names for i in indices if (name, i) not in self._blocks]

    def store(self, keys: list[tuple[str, int]], blocks: list[Block]) -> None:
        """Put blocks read by `read_block` (in a worker) into the cache (on the app's thread)."""
        for key, block in zip(keys, blocks):
            self._blocks.set(key, block)

    def window(
        self, name: str, start: int, stop: int, levels: bool = False, units: slice | int = slice(None)
    ) -> np.ndarray:
        """Rows start:stop (clipped to the trace) of some units, as float32 values or uint8 levels.

        (stop-start, U) for a slice of units, (stop-start,) for one unit.
        """
        start, stop = max(start, 0), min(stop, self.num_tokens)
        if stop <= start:
            hidden = int(self.data.arrays[name].shape[1])
            return np.empty((0, hidden), dtype=np.uint8 if levels else np.float32)[:, units]
        first, last = start // BLOCK, (stop - 1) // BLOCK
        parts = [self.block(name, b)[1 if levels else 0][:, units] for b in range(first, last + 1)]
        joined = parts[0] if len(parts) == 1 else np.concatenate(parts)
        base = first * BLOCK
        return joined[start - base:stop - base]

    def unit_rows(self, name: str, units: list[int] | slice, start: int, stop: int) -> np.ndarray:
        """Rows start:stop of some units read from the trace, bypassing the cache: (stop-start, k) float32.

        For one pass over a whole quantity (a match) in a worker thread; mapped pages are released as read.
        """
        array = self.data.arrays[name]
        block = array[start:stop][:, units]  # (rows, k), a copy of those columns only
        if self._mapped[name]:
            release(array[start:stop])
        if self.data.dtypes[name] == "BF16":  # bfloat16 kept as its 16 bits: widen exactly, as TraceFile.rows does
            return (block.astype(np.uint32) << 16).view(np.float32)
        return block.astype(np.float32)

    def column(self, name: str, start: int, stop: int, unit: int) -> np.ndarray:
        """One unit's values over rows start:stop: (stop-start,) float32."""
        return self.window(name, start, stop, units=unit)

    def value(self, name: str, row: int, unit: int) -> float:
        """The exact recorded value of one unit at one row."""
        return float(self.block(name, row // BLOCK).values[row % BLOCK, unit])

    # -- tokens and sequences ----------------------------------------------------------
    @property
    def num_sequences(self) -> int:
        return len(self.offsets) - 1

    def sequence_of(self, row: int) -> int:
        return int(np.searchsorted(self.offsets, row, side="right")) - 1

    def sequence_rows(self, s: int) -> tuple[int, int]:
        return int(self.offsets[s]), int(self.offsets[s + 1])

    def tokens(self, start: int, stop: int) -> list[str]:
        """Token strings of rows start:stop (ids as text when the trace has no vocabulary)."""
        start, stop = max(start, 0), min(stop, self.num_tokens)
        if stop <= start:
            return []
        if self.data.token_ids is None:  # no tokens recorded: positions in the sequence
            rows = np.arange(start, stop)
            starts = self.offsets[np.searchsorted(self.offsets, rows, side="right") - 1]  # (stop-start,)
            return [str(p) for p in (rows - starts).tolist()]
        ids = self.data.token_ids[start:stop].tolist()
        if self.vocab is None:
            return [str(i) for i in ids]
        return [self.vocab[i] if 0 <= i < len(self.vocab) else f"<{i}>" for i in ids]

    def join(self, tokens: list[str]) -> str:
        """Tokens as running text: characters joined, words separated by spaces; newlines shown as ↵."""
        text = "".join(tokens) if self.tokenizer == "char" else " ".join(tokens)
        return text.replace("\n", "↵")

    def search(self, query: str, after: int) -> int | None:
        """The first row > ``after`` (wrapping around) where the tokens of ``query`` start, or None."""
        pattern = self._query_ids(query)
        if pattern is None or self.data.token_ids is None:
            return None
        ids = self.data.token_ids
        n = len(pattern)
        if n > len(ids):
            return None
        hits = np.flatnonzero(ids[: len(ids) - n + 1] == pattern[0])
        for k in range(1, n):
            hits = hits[ids[hits + k] == pattern[k]]
        if hits.size == 0:
            return None
        later = hits[hits > after]
        return int(later[0] if later.size else hits[0])

    def _query_ids(self, query: str) -> np.ndarray | None:
        """Token ids of a query: vocabulary entries (words, or characters for a char model), else integers."""
        vocab = self.vocab
        if vocab is None:
            ids = whole_numbers(query)
            if not ids:
                raise GatescopeError("this trace has no vocabulary: search for token ids, e.g. 12 7")
            return np.array(ids)
        index = {token: i for i, token in enumerate(vocab)}
        pieces = list(query) if self.tokenizer == "char" else query.split()
        if not pieces:
            return None
        if self.tokenizer != "char" and all(t == t.lower() for t in vocab):
            pieces = [p.lower() for p in pieces]
        missing = [p for p in pieces if p not in index]
        if missing:
            raise GatescopeError(f"not in the vocabulary: {' '.join(missing)}")
        return np.array([index[p] for p in pieces])


def _check(data: TraceFile) -> None:
    """Refuse a trace the browser cannot show, in one line (also one built by hand, unchecked)."""
    num_tokens = check_layout(
        data.offsets,
        {name: array.shape for name, array in data.arrays.items()},
        None if data.token_ids is None else len(data.token_ids),
        {name: len(values) for name, values in data.features.items()},
    )
    if num_tokens == 0:
        raise GatescopeError("the trace is empty: it has no tokens")
    if not data.arrays:
        raise GatescopeError("the trace records no quantities")
