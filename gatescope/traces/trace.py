"""Trace: every recorded gate and state of a run, one row per token, and its file.

A trace holds 2-D tensors named ``"{path}.l{layer}.{dir}.{kind}"`` (see gatescope.names),
each [N, H] with one row per token: sequences in batch order, each sequence's tokens in
time order, ``offsets`` [S+1] marking where each sequence starts (the flat token stream of
LSTMVis's states.h5, plus the sequence boundaries its users missed: LSTMVis #62).

On disk a trace is one safetensors file (format in docs/trace-format.md). `load_trace`
memory-maps it, so ``trace[name][a:b]`` reads only those rows and a trace larger than RAM
can be browsed and analysed.
"""
from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
import torch

from gatescope.errors import GatescopeError, UnknownNameError
from gatescope.files import atomic_write
from gatescope.traces.file import read_trace_file
from gatescope.validation.trace import FEATURE_PREFIX, FORMAT, FORMAT_VERSION, check_layout


class Trace(Mapping[str, torch.Tensor]):
    """Recorded quantities of a run: a read-only mapping from quantity name to a [N, H] tensor."""

    def __init__(
        self,
        tensors: Mapping[str, torch.Tensor],
        offsets: torch.Tensor | list[int],
        token_ids: torch.Tensor | None = None,
        features: Mapping[str, Any] | None = None,
        meta: Mapping[str, Any] | None = None,
    ) -> None:
        self.offsets = torch.as_tensor(offsets, dtype=torch.int64).reshape(-1)  # (S+1,)
        if token_ids is not None:
            token_ids = torch.as_tensor(token_ids, dtype=torch.int64).reshape(-1)
        check_layout(
            self.offsets.numpy(),
            {name: tuple(t.shape) for name, t in tensors.items()},
            None if token_ids is None else token_ids.numel(),
        )
        # detached: the trace is data (gradients come from Recording.gradients), so every consumer can
        # call .numpy() on what it reads, whether or not the values were recorded with grad enabled
        # (a sharded trace's quantities are LazyRows, read from the shards: never in a graph)
        self._tensors: dict[str, torch.Tensor] = {
            name: t.detach() if isinstance(t, torch.Tensor) else t for name, t in tensors.items()
        }
        self.token_ids = token_ids
        self.features: dict[str, torch.Tensor] = {}
        for fname, values in (features or {}).items():
            self.add_feature(fname, values)
        self.meta: dict[str, Any] = dict(meta or {})
        self.meta.setdefault("format", FORMAT)
        self.meta.setdefault("format_version", FORMAT_VERSION)

    # -- the mapping -------------------------------------------------------------------
    def __getitem__(self, name: str) -> torch.Tensor:
        try:
            return self._tensors[name]
        except KeyError:
            raise UnknownNameError(f"no quantity {name!r} in this trace; it has: {', '.join(self.names)}") from None

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name in self._tensors

    # a trace is one run's record: equal to itself only (Mapping's == would compare tensors with ==,
    # which raises), and hashable, so traces can be dict keys and set members
    __eq__ = object.__eq__
    __hash__ = object.__hash__

    def __iter__(self) -> Iterator[str]:
        return iter(self._tensors)

    def __len__(self) -> int:
        return len(self._tensors)

    @property
    def names(self) -> list[str]:
        """Recorded quantity names, in module, layer, direction and kind order."""
        return list(self._tensors)

    @property
    def num_tokens(self) -> int:
        return int(self.offsets[-1])

    @property
    def num_sequences(self) -> int:
        return self.offsets.numel() - 1

    @property
    def vocab(self) -> list[str] | None:
        return self.meta.get("vocab")

    def sequence(self, s: int) -> slice:
        """Rows of sequence ``s`` (negative indices count from the end)."""
        if not -self.num_sequences <= s < self.num_sequences:
            raise GatescopeError(f"no sequence {s}: the trace has {self.num_sequences}")
        s %= self.num_sequences
        return slice(int(self.offsets[s]), int(self.offsets[s + 1]))

    @property
    def lengths(self) -> torch.Tensor:
        """Tokens of each sequence, LongTensor [S]."""
        return self.offsets.diff()

    def padded(self, name: str | torch.Tensor, fill: float = float("nan")) -> torch.Tensor:
        """Quantity ``name`` (or rows [N, H] laid out like this trace's) as one row per sequence: Tensor
        [S, T_max, H], sequence s's token t at ``[s, t]``, the positions past a sequence's end set to
        ``fill`` (NaN by default, so that padding can never pass for a value). Batch-first, as a patch
        Intervention's value is: the trace of one run is directly a patch source for another
        (`unpadded` is the inverse)."""
        values = self[name] if isinstance(name, str) else name  # (N, H)
        if not isinstance(values, torch.Tensor):  # a sharded trace's LazyRows: padding reads every row
            values = values[:]
        if values.dim() != 2 or values.shape[0] != self.num_tokens:
            raise GatescopeError(f"padded takes rows [tokens={self.num_tokens}, units], got shape {list(values.shape)}")
        lengths = self.lengths
        steps = int(lengths.max()) if lengths.numel() else 0
        out = values.new_full((self.num_sequences, steps, values.shape[1]), fill)  # (S, T_max, H)
        valid = torch.arange(steps).unsqueeze(0) < lengths.unsqueeze(1)  # (S, T_max)
        out[valid.to(out.device)] = values[:]
        return out

    def unpadded(self, values: torch.Tensor) -> torch.Tensor:
        """The inverse of `padded`: values [S, T, H] (T at least each sequence's length) -> rows [N, H]
        laid out like this trace's quantities (the positions past each sequence's end are dropped)."""
        lengths = self.lengths
        steps = int(lengths.max()) if lengths.numel() else 0
        if values.dim() != 3 or values.shape[0] != self.num_sequences or values.shape[1] < steps:
            raise GatescopeError(f"unpadded takes values [sequences={self.num_sequences}, time>={steps}, units], "
                                 f"got shape {list(values.shape)}")
        valid = torch.arange(values.shape[1]).unsqueeze(0) < lengths.unsqueeze(1)  # (S, T)
        return values[valid.to(values.device)]

    def sequence_of(self, row: int) -> int:
        """The sequence that token row ``row`` belongs to."""
        return int(torch.searchsorted(self.offsets, torch.tensor(row), right=True)) - 1

    def tokens(self, start: int = 0, stop: int | None = None) -> list[str]:
        """Token strings of rows start:stop: vocabulary entries, else ids, else positions."""
        stop = self.num_tokens if stop is None else stop
        if self.token_ids is None:
            return [str(r - int(self.offsets[self.sequence_of(r)])) for r in range(start, stop)]
        ids = self.token_ids[start:stop].tolist()
        vocab = self.vocab
        if vocab is None:
            return [str(i) for i in ids]
        return [vocab[i] if 0 <= i < len(vocab) else f"<{i}>" for i in ids]

    def add_feature(self, name: str, values: Any) -> None:
        """Attach a per-token label ``feature.{name}`` (float [N], NaN where not applicable)."""
        tensor = torch.as_tensor(np.asarray(values, dtype=np.float32)).reshape(-1)
        if tensor.numel() != self.num_tokens:
            raise GatescopeError(
                f"feature {name!r} has {tensor.numel()} values; the trace has {self.num_tokens} tokens"
            )
        self.features[name] = tensor

    def __repr__(self) -> str:
        return f"Trace({self.num_sequences} sequences, {self.num_tokens} tokens, {len(self)} quantities)"

    def _repr_html_(self) -> str:
        """A notebook's view of the trace (gatescope.display.summary)."""
        from gatescope.display.summary import trace_html

        return trace_html(self)

    # -- the file ------------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> None:
        """Write the trace to ``path`` atomically (a temporary file in the same folder, then rename), by the
        writer `gatescope trace` streams with (gatescope.traces.file.TraceWriter), a block of rows at a time.
        A trace without a token (a block in which no forward ran, or a batch of empty sequences) is refused:
        the file format holds at least one, so such a file could not be read back."""
        from gatescope.traces.file import TraceWriter

        if self.num_tokens == 0:
            raise GatescopeError(f"{path}: the trace holds no tokens ({self.num_sequences} sequences; did a forward "
                                 "run inside the record block?); a trace file holds at least one; nothing written")
        widths = {name: int(t.shape[1]) for name, t in self._tensors.items()}
        dtypes = {name: _storage_name(t.dtype, name) for name, t in self._tensors.items()}
        features = {name: _storage_name(values.dtype, name) for name, values in self.features.items()}
        meta = {k: v for k, v in self.meta.items() if k not in ("format", "format_version")}

        def write(tmp: str) -> None:
            writer = TraceWriter(tmp, widths, dtypes, self.offsets.numpy(), self.token_ids is not None, meta, features)
            try:
                for name, t in self._tensors.items():
                    for start in range(0, self.num_tokens, SAVE_BLOCK_ROWS):
                        writer.write(name, start, storage_rows(t[start:start + SAVE_BLOCK_ROWS]))  # (rows, H)
                if self.token_ids is not None:
                    writer.write("token_ids", 0, self.token_ids.cpu().numpy())
                for fname, values in self.features.items():
                    writer.write(FEATURE_PREFIX + fname, 0, storage_rows(values))
            finally:
                writer.close()

        atomic_write(path, write)


SAVE_BLOCK_ROWS = 65536  # rows of each quantity converted and written at a time by Trace.save
STORAGE_NAMES = {torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16"}


def _storage_name(dtype: torch.dtype, name: str) -> str:
    try:
        return STORAGE_NAMES[dtype]
    except KeyError:
        raise GatescopeError(f"{name} is {dtype}: a trace file stores float32, float16, bfloat16 or float64") from None


def storage_rows(values: torch.Tensor) -> np.ndarray:
    """A recorded tensor's bytes as numpy, on the CPU (bfloat16 kept as its 16 raw bits)."""
    values = values.detach().cpu()
    return values.view(torch.int16).numpy() if values.dtype == torch.bfloat16 else values.numpy()


def load_trace(path: str | os.PathLike) -> Trace:
    """Open a trace file (or a sharded trace's folder) lazily: tensors are memory-mapped and read only where indexed.

    Args:
        path: a trace file written by `Trace.save` or ``gatescope trace``, or a sharded trace's folder.

    Returns:
        The Trace.

    Raises:
        GatescopeError: a file that is not a valid trace (every check of docs/trace-format.md).
    """
    file = read_trace_file(path)

    def tensor(array: np.ndarray, dtype: str) -> torch.Tensor:
        if not isinstance(array, np.ndarray):  # a sharded trace's folder: rows read from the shards on indexing
            from gatescope.traces.lazyrows import LazyRows

            return LazyRows(array, dtype)
        t = torch.from_numpy(array)
        return t.view(torch.bfloat16) if dtype == "BF16" else t

    tensors = {name: tensor(array, file.dtypes[name]) for name, array in file.arrays.items()}
    token_ids = None if file.token_ids is None else torch.from_numpy(file.token_ids)
    features = {name: torch.from_numpy(values) for name, values in file.features.items()}
    return Trace(tensors, torch.from_numpy(file.offsets), token_ids=token_ids, features=features, meta=file.meta)
