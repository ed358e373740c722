"""Checkpoints in other formats, read as torch-named tensors plus gatescope metadata.

Every reader here returns the same thing, a `Converted`: the tensors under the names torch.nn
gives them (``rnn.weight_ih_l0``, ``decoder.weight``; docs/architecture.md), the gatescope metadata
(docs/architecture.md "Checkpoint metadata": ``roles``, and ``reset_before``, which names the GRUs
that need gatescope.recorder.rnn.ResetBeforeGRU rather than torch's class), and notes on what was
changed on the way. So the loader
(gatescope.checkpoints.loader, through `open_checkpoint`) and `gatescope convert` treat every format alike.

One module per format:

- `torch_state`: ``.pt`` / ``.pth`` / ``.bin`` state dicts, read with ``torch.load(weights_only=True)``
  (torch's restricted unpickler, which builds only tensors and plain containers, never user code);
  fastai's AWD-LSTM layout is recognised there (`awd_lstm`).
- `keras`: Keras 3 ``.keras`` archives and ``.weights.h5`` files, read with h5py.
- `onnx`: ONNX graphs with LSTM / GRU nodes, read with the onnx package.

A safetensors file is not converted: `read` returns None for it and the loader reads it lazily.
"""
from __future__ import annotations

import functools
import json
import os
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gatescope.errors import GatescopeError
from gatescope.files import reading

if TYPE_CHECKING:
    from torch import Tensor

META_KEY = "gatescope"  # the safetensors metadata key (gatescope.checkpoints.loader.META_KEY)
CONVERTED_KEY = "converted"  # metadata: {"from": format, "file": name, "notes": [...]}, as the loader saw it
TORCH_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt")
KERAS_SUFFIXES = (".keras", ".h5", ".hdf5")
ONNX_SUFFIXES = (".onnx",)
_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"


class ErrorWithFix(GatescopeError):
    """A one-line error, and the lines of code that fix it in the user's own environment (``fix``),
    which the command line prints below the error."""

    def __init__(self, message: str, fix: list[str]) -> None:
        super().__init__(message)
        self.fix = fix


@dataclass
class Converted:
    """A checkpoint as torch-named tensors, its gatescope metadata, and what the reading changed."""

    tensors: dict[str, Tensor]  # torch names -> tensors (each its own storage, contiguous)
    metadata: dict[str, Any]  # the gatescope metadata JSON object (roles, reset_before, vocab, ...)
    source: str  # the format read, e.g. "torch state dict", "Keras 3 (.keras)"
    notes: list[str] = field(default_factory=list)  # what was renamed, dropped or assumed, one line each

    def open(self) -> TensorSource:
        return TensorSource(self)

    def header(self) -> dict[str, tuple[str, tuple[int, ...]]]:
        """name -> (safetensors dtype, shape), as a safetensors header would give them (for validation)."""
        return {k: (_safetensors_dtype(v), tuple(v.shape)) for k, v in self.tensors.items()}


def _safetensors_dtype(tensor: Tensor) -> str:
    """safetensors' name of a tensor's dtype (F32, BF16, I64, ...; its format's dtype list)."""
    import torch

    names = {torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
             torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8", torch.uint8: "U8",
             torch.bool: "BOOL", torch.float8_e4m3fn: "F8_E4M3", torch.float8_e5m2: "F8_E5M2"}
    return names.get(tensor.dtype, str(tensor.dtype).removeprefix("torch.").upper())


class _Slice:
    def __init__(self, shape: tuple[int, ...]) -> None:
        self._shape = shape

    def get_shape(self) -> list[int]:
        return list(self._shape)


class TensorSource:
    """A `Converted` behind the part of safetensors' ``safe_open`` interface the loader uses."""

    def __init__(self, converted: Converted) -> None:
        self._converted = converted

    def __enter__(self) -> TensorSource:
        return self

    def __exit__(self, *exc) -> None:
        return None

    def keys(self) -> list[str]:
        return list(self._converted.tensors)

    def get_slice(self, key: str) -> _Slice:
        return _Slice(tuple(self._converted.tensors[key].shape))

    def get_tensor(self, key: str) -> Tensor:
        return self._converted.tensors[key].clone()  # the caller's own: the cached conversion stays as read

    def metadata(self) -> dict[str, str]:
        return {META_KEY: json.dumps(self._converted.metadata)}


def kind_of(path: Path) -> str | None:
    """``torch``, ``keras`` or ``onnx`` for a file in another format; None for safetensors (or no file).

    The first bytes decide where they can (safetensors' header length and ``{``, HDF5's signature, a
    zip archive: Keras' holds config.json, torch's does not; a pickle opcode: torch's legacy format),
    so a misnamed file is still read right; else the suffix (ONNX's protobuf has no signature)."""
    name = path.name.lower()
    if not path.is_file() or name.endswith(".safetensors"):  # safetensors' own reader says what is wrong
        return None
    with reading(path, "checkpoint file"), open(path, "rb") as f:
        head = f.read(9)
    if len(head) == 9 and head[8:] == b"{" and int.from_bytes(head[:8], "little") > 1:
        return None
    if head[:8] == _HDF5_MAGIC:
        return "keras"
    if head.startswith(b"PK") and zipfile.is_zipfile(path):
        try:
            with zipfile.ZipFile(path) as archive:
                return "keras" if "config.json" in archive.namelist() else "torch"
        except zipfile.BadZipFile:
            raise GatescopeError(f"{path} is a damaged zip archive (not a readable torch or Keras file)") from None
    if name.endswith(TORCH_SUFFIXES) or head[:1] == b"\x80":
        return "torch"
    if name.endswith(KERAS_SUFFIXES):
        return "keras"
    if name.endswith(ONNX_SUFFIXES):
        return "onnx"
    return None


def read(path: str | os.PathLike) -> Converted | None:
    """The checkpoint at ``path`` converted to torch names, or None when it is a safetensors file."""
    path = Path(path)
    kind = kind_of(path)
    if kind is None:
        return None
    with reading(path, "checkpoint file"):
        stat = path.stat()
    return _read_cached(str(path.resolve()), stat.st_mtime_ns, stat.st_size, kind, str(path))


@functools.lru_cache(maxsize=1)  # the loader reads a file's header, then its tensors: convert once
def _read_cached(resolved: str, mtime_ns: int, size: int, kind: str, path: str) -> Converted:
    if kind == "torch":
        from gatescope.checkpoints.formats import torch_state as reader
    elif kind == "keras":
        from gatescope.checkpoints.formats import keras as reader
    else:
        from gatescope.checkpoints.formats import onnx as reader
    with reading(path, "checkpoint file"):
        try:
            converted = reader.read(Path(path))
        except GatescopeError:
            raise
        except (KeyError, IndexError, ValueError, TypeError, AttributeError, EOFError, zipfile.BadZipFile,
                zlib.error) as exc:  # a damaged file's contents
            raise GatescopeError(f"{path} is not a {kind} checkpoint gatescope can read "
                                 f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})") from None
    converted.metadata[CONVERTED_KEY] = {"from": converted.source, "file": Path(path).name, "notes": converted.notes}
    return converted


def open_checkpoint(path: str | os.PathLike):
    """The one entry point of the loader: safetensors' ``safe_open`` for a safetensors file, else the
    converted tensors behind the same interface (keys, get_slice(k).get_shape(), get_tensor, metadata)."""
    from safetensors import safe_open

    converted = read(path)
    return safe_open(path, framework="pt") if converted is None else converted.open()


def need(module: str, what: str) -> Any:
    """Import an optional dependency of the ``formats`` extra, or say how to install it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise GatescopeError(
            f"reading {what} needs the {module} package: pip install 'gatescope[formats]' (or pip install {module})"
        ) from None


def from_numpy(arrays: dict[str, Any]) -> dict[str, Tensor]:
    """numpy arrays (views, read-only buffers) as torch tensors that own their data."""
    import numpy as np
    import torch

    return {k: torch.from_numpy(np.array(v, copy=True, order="C")) for k, v in arrays.items()}


def owned(tensors: dict[str, Tensor]) -> dict[str, Tensor]:
    """Each tensor contiguous and in its own storage (tied weights come apart, as safetensors requires);
    a tensor that already is one is kept, not copied."""
    import torch

    seen: set[int] = set()
    out = {}
    for key, value in tensors.items():
        value = value.detach()
        storage = value.untyped_storage().data_ptr()
        if storage in seen or not value.is_contiguous() or value.untyped_storage().nbytes() != value.nbytes:
            value = value.clone(memory_format=torch.contiguous_format)
        seen.add(value.untyped_storage().data_ptr())
        out[key] = value
    return out
