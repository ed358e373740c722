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

import json
import os
import struct
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gatescope.errors import GatescopeError
from gatescope.names import canonical_order, parse_name

FORMAT = "gatescope.trace"
FORMAT_VERSION = 1
META_KEY = "gatescope"
FEATURE_PREFIX = "feature."
RESERVED = ("offsets", "token_ids")

_NUMPY_DTYPES = {  # safetensors dtype -> (numpy storage dtype, torch dtype)
    "F64": (np.float64, torch.float64),
    "F32": (np.float32, torch.float32),
    "F16": (np.float16, torch.float16),
    "BF16": (np.uint16, torch.bfloat16),
    "I64": (np.int64, torch.int64),
    "I32": (np.int32, torch.int32),
}


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
        if self.offsets.numel() < 1 or int(self.offsets[0]) != 0 or bool((self.offsets.diff() < 0).any()):
            raise GatescopeError("trace offsets must start at 0 and never decrease")
        n = int(self.offsets[-1])
        self._tensors: dict[str, torch.Tensor] = {}
        for name, tensor in tensors.items():
            parse_name(name)
            if tensor.dim() != 2 or tensor.shape[0] != n:
                raise GatescopeError(
                    f"trace tensor {name} has shape {tuple(tensor.shape)}; expected [{n}, hidden]"
                )
            self._tensors[name] = tensor
        if token_ids is not None:
            token_ids = torch.as_tensor(token_ids, dtype=torch.int64).reshape(-1)
            if token_ids.numel() != n:
                raise GatescopeError(f"token_ids has {token_ids.numel()} entries for {n} tokens")
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
            raise GatescopeError(f"no quantity {name!r} in this trace; it has: {', '.join(self.names)}") from None

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

    # -- the file ------------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> None:
        """Write the trace to ``path`` atomically (a temporary file in the same folder, then rename)."""
        from safetensors.torch import save_file

        path = Path(path)
        tensors: dict[str, torch.Tensor] = {
            name: t.detach().to("cpu").contiguous() for name, t in self._tensors.items()
        }
        tensors["offsets"] = self.offsets.contiguous()
        if self.token_ids is not None:
            tensors["token_ids"] = self.token_ids.to("cpu").contiguous()
        for fname, values in self.features.items():
            tensors[FEATURE_PREFIX + fname] = values.to("cpu").contiguous()
        metadata = {META_KEY: json.dumps(self.meta)}
        _atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=metadata))


def _atomic_write(path: Path, write) -> None:
    """Call ``write(tmp_path)`` on a temporary file next to ``path``, then rename it into place."""
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise GatescopeError(f"cannot write {path}: folder {folder} does not exist")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
    except OSError as exc:
        raise GatescopeError(f"cannot write {path}: {exc.strerror}") from None
    os.close(fd)
    try:
        write(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; a saved file gets the usual mode
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_trace(path: str | os.PathLike) -> Trace:
    """Open a trace file lazily: tensors are memory-mapped and read only where indexed."""
    path = Path(path)
    header, data_start = _read_header(path)
    meta_json = (header.pop("__metadata__", None) or {}).get(META_KEY)
    if meta_json is None:
        raise GatescopeError(f"{path} is a safetensors file but not a gatescope trace (no '{META_KEY}' metadata)")
    try:
        meta = json.loads(meta_json)
    except json.JSONDecodeError:
        raise GatescopeError(f"{path}: the '{META_KEY}' metadata is not valid JSON") from None
    if meta.get("format") != FORMAT:
        raise GatescopeError(f"{path} is not a gatescope trace (format {meta.get('format')!r})")
    if meta.get("format_version", 0) > FORMAT_VERSION:
        raise GatescopeError(
            f"{path} is trace format version {meta['format_version']}; this gatescope reads up to {FORMAT_VERSION}"
        )
    if "offsets" not in header:
        raise GatescopeError(f"{path} is not a gatescope trace: it has no 'offsets' tensor")
    tensors = {name: _map_tensor(path, name, info, data_start) for name, info in header.items()}
    offsets = tensors.pop("offsets").clone()
    token_ids = tensors.pop("token_ids", None)
    features = {k[len(FEATURE_PREFIX):]: tensors.pop(k) for k in list(tensors) if k.startswith(FEATURE_PREFIX)}
    # safetensors stores tensors in its own order; give them back in the recorded one
    paths = [m.get("name") for m in meta.get("modules", []) if isinstance(m, dict)]
    tensors = {name: tensors[name] for name in canonical_order(tensors, paths)}
    return Trace(tensors, offsets, token_ids=token_ids, features=features, meta=meta)


def _read_header(path: Path) -> tuple[dict[str, Any], int]:
    """The safetensors JSON header of ``path`` and where its data section starts, validated."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            prefix = f.read(8)
            if len(prefix) < 8:
                raise GatescopeError(f"{path} is not a safetensors file (too short)")
            (header_len,) = struct.unpack("<Q", prefix)
            if header_len > min(size - 8, 100_000_000):
                raise GatescopeError(f"{path} is not a safetensors file, or its header is truncated")
            header = json.loads(f.read(header_len))
    except FileNotFoundError:
        raise GatescopeError(f"no such file: {path}") from None
    except IsADirectoryError:
        raise GatescopeError(f"{path} is a folder, not a trace file") from None
    except PermissionError:
        raise GatescopeError(f"cannot read {path}: permission denied") from None
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
        if dtype not in _NUMPY_DTYPES:
            raise GatescopeError(f"{path}: tensor {name!r} has dtype {dtype}, which traces do not use")
        itemsize = np.dtype(_NUMPY_DTYPES[dtype][0]).itemsize
        if end - begin != itemsize * int(np.prod(shape)) or data_start + end > size:
            raise GatescopeError(f"{path} is truncated or corrupt (tensor {name!r} lies outside the file)")
    return header, data_start


def _map_tensor(path: Path, name: str, info: dict[str, Any], data_start: int) -> torch.Tensor:
    np_dtype, torch_dtype = _NUMPY_DTYPES[info["dtype"]]
    shape = tuple(info["shape"])
    begin = info["data_offsets"][0]
    if 0 in shape:
        return torch.empty(shape, dtype=torch_dtype)
    # copy-on-write map: pages are read from disk only when touched, and the tensor is writable
    array = np.memmap(path, dtype=np_dtype, mode="c", offset=data_start + begin, shape=shape)
    tensor = torch.from_numpy(array)
    return tensor.view(torch_dtype) if torch_dtype == torch.bfloat16 else tensor
