"""A sharded trace's quantity as torch sees it: a tensor whose rows are read from the shards when needed.

`gatescope.traces.file.RowConcat` joins the shards' memory maps without torch; `LazyRows` wraps it
for `gatescope.traces.trace.Trace`, so a script written for a one-file trace works on the same trace
sharded. The rule:

- lazily, reading only what is asked for: indexing (``q[a:b]``, ``q[a:b, cols]``, ``q[:, units]``,
  ``q[mask]``), ``shape`` / ``dtype`` / ``len`` / ``dim()`` / ``size()`` / ``numel()``, and the
  reductions over rows or over everything, ``sum`` and ``mean`` (``q.mean(0)``, ``q.sum()``), computed a
  shard at a time in float64 and given in the quantity's dtype, as torch gives them;
- by reading the whole quantity: everything else a tensor does (``.float()``, ``.numpy()``,
  ``q * 2``, ``torch.sigmoid(q)``, ``np.asarray(q)``: tensor methods, operators, torch functions
  through ``__torch_function__``, numpy through ``__array__``), exactly as on the one-file trace's tensor.
  A quantity of more than `LazyRows.limit` bytes (default `WHOLE_LIMIT`) is not read whole: that is a
  one-line GatescopeError naming what to do instead (index rows, or raise the limit).
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from gatescope.errors import GatescopeError
from gatescope.traces.file import RowConcat

WHOLE_LIMIT = 4 * 2**30  # bytes of one quantity that an operation may read whole


def _numpy_key(key: Any) -> Any:
    if isinstance(key, tuple):
        return tuple(_numpy_key(k) for k in key)
    return key.cpu().numpy() if isinstance(key, torch.Tensor) else key


def _whole(value: Any) -> Any:
    """``value`` with every LazyRows in it (and in its lists, tuples and dicts) read whole."""
    if isinstance(value, LazyRows):
        return value.whole()
    if isinstance(value, (list, tuple)):
        return type(value)(_whole(v) for v in value)
    if isinstance(value, dict):
        return {k: _whole(v) for k, v in value.items()}
    return value


class LazyRows:
    """[N, H] rows of a sharded trace: a tensor when indexed, reduced or operated on (see the module's rule)."""

    limit = WHOLE_LIMIT

    def __init__(self, rows: RowConcat, safetensors_dtype: str) -> None:
        self.rows = rows
        self.bfloat16 = safetensors_dtype == "BF16"
        self.shape = torch.Size(rows.shape)
        self.dtype = torch.bfloat16 if self.bfloat16 else torch.from_numpy(np.zeros(0, rows.dtype)).dtype

    # -- what is known without reading -------------------------------------------------------------
    device = torch.device("cpu")
    requires_grad = False
    ndim = property(lambda self: len(self.shape))
    nbytes = property(lambda self: self.numel() * self.element_size())

    def __len__(self) -> int:
        return self.shape[0]

    def dim(self) -> int:
        return len(self.shape)

    def size(self, dim: int | None = None) -> torch.Size | int:
        return self.shape if dim is None else self.shape[dim]

    def numel(self) -> int:
        return self.shape.numel()

    def element_size(self) -> int:
        return self.dtype.itemsize

    def is_floating_point(self) -> bool:
        return self.dtype.is_floating_point

    def __repr__(self) -> str:
        return f"LazyRows({list(self.shape)}, {self.dtype}, {len(self.rows.parts)} shards)"

    # -- read lazily -------------------------------------------------------------------------------------
    def __getitem__(self, key: Any) -> torch.Tensor:
        return self._tensor(np.ascontiguousarray(self.rows[_numpy_key(key)]))

    def _tensor(self, array: np.ndarray) -> torch.Tensor:
        t = torch.from_numpy(array)
        return t.view(torch.bfloat16) if self.bfloat16 else t

    def sum(self, dim: int | None = None, keepdim: bool = False, *, dtype: torch.dtype | None = None) -> torch.Tensor:
        """As ``Tensor.sum``; over rows (dim 0) or everything, a shard at a time."""
        if not self._lazy(dim):
            return self.whole().sum(*(() if dim is None else (dim,)), keepdim=keepdim, dtype=dtype)
        total = self._row_sum()  # (H,) float64
        out = total if dim is not None else total.sum()
        out = out.unsqueeze(0) if keepdim and dim is not None else out.reshape([1] * self.ndim) if keepdim else out
        return out.to(dtype or self.dtype)

    def mean(self, dim: int | None = None, keepdim: bool = False, *, dtype: torch.dtype | None = None) -> torch.Tensor:
        """As ``Tensor.mean``; over rows (dim 0) or everything, a shard at a time."""
        if not self._lazy(dim):
            return self.whole().mean(*(() if dim is None else (dim,)), keepdim=keepdim, dtype=dtype)
        count = self.shape[0] if dim is not None else self.numel()
        total = self._row_sum()
        out = (total if dim is not None else total.sum()) / count if count else torch.full_like(
            total if dim is not None else total.sum(), math.nan)
        out = out.unsqueeze(0) if keepdim and dim is not None else out.reshape([1] * self.ndim) if keepdim else out
        return out.to(dtype or self.dtype)

    def _lazy(self, dim: int | None) -> bool:
        """Whether a sum or mean over ``dim`` is read a shard at a time (rows or everything, of floats)."""
        return self.dtype.is_floating_point and (dim is None or dim in (0, -self.ndim))

    def _row_sum(self) -> torch.Tensor:
        """The sum over rows, in float64, reading one shard at a time -> (H,) (or () for a 1-D quantity)."""
        total = torch.zeros(self.shape[1:], dtype=torch.float64)
        for part in self.rows.parts:
            total += self._tensor(np.asarray(part)).to(torch.float64).sum(0)
        return total

    # -- read whole ------------------------------------------------------------------------------------
    def whole(self) -> torch.Tensor:
        """The whole quantity as a tensor; more than `limit` bytes is a one-line error."""
        if self.nbytes > self.limit:
            raise GatescopeError(
                f"this sharded quantity {list(self.shape)} ({self.dtype}) holds {self.nbytes / 2**20:.1f} MB, "
                f"more than the {self.limit / 2**20:.1f} MB an operation reads whole; index the rows it needs "
                "(q[a:b], q[:, units]), use q.mean(0) / q.sum(0), which read a shard at a time, or raise "
                "gatescope.traces.lazyrows.LazyRows.limit"
            )
        return self[:]

    def to(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        """The whole quantity, read and converted (as ``tensor.to``)."""
        return self.whole().to(*args, **kwargs)

    def numpy(self, *, force: bool = False) -> np.ndarray:
        return self.whole().numpy(force=force)

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        out = self.whole().numpy()
        return out if dtype is None else out.astype(dtype)

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        """Any torch function given a LazyRows (``torch.sigmoid(q)``, ``t + q``) runs on the whole quantity."""
        return func(*_whole(args), **_whole(kwargs or {}))

    def __getattr__(self, name: str) -> Any:
        """A tensor's other methods and properties (``float``, ``abs``, ``max``, ``T``): on the whole quantity."""
        if name.startswith("_") or not hasattr(torch.Tensor, name):
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
        return getattr(self.whole(), name)

    __hash__ = object.__hash__


def _operator(name: str):
    def apply(self: LazyRows, *args: Any) -> Any:
        return getattr(self.whole(), name)(*_whole(args))

    apply.__name__ = name
    return apply


for _name in ("add", "radd", "sub", "rsub", "mul", "rmul", "truediv", "rtruediv", "floordiv", "rfloordiv", "mod",
              "pow", "rpow", "matmul", "rmatmul", "neg", "pos", "abs", "invert", "and", "or", "xor",
              "lt", "le", "gt", "ge", "eq", "ne", "iter"):
    setattr(LazyRows, f"__{_name}__", _operator(f"__{_name}__"))
