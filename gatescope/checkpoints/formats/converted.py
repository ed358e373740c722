"""What every checkpoint reader returns: torch-named tensors with the metadata gatescope's loader reads
(`Converted`), and the helpers the readers share (an optional dependency asked for by name, numpy to torch).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from gatescope.errors import GatescopeError
from gatescope.validation.safetensors import META_KEY

if TYPE_CHECKING:
    from torch import Tensor




CONVERTED_KEY = "converted"  # metadata: {"from": format, "file": name, "notes": [...]}, as the loader saw it


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
