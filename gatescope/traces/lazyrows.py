"""A sharded trace's quantity as torch sees it: rows read from the shards when indexed.

`gatescope.traces.file.RowConcat` joins the shards' memory maps without torch; `LazyRows` wraps it
for `gatescope.traces.trace.Trace`, so ``trace[name][a:b]``, ``trace[name][a:b, cols]`` and
``trace[name][:, units]`` give tensors as they do for one file, reading only the rows asked for.
``trace[name][:]`` reads the whole quantity.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from gatescope.traces.file import RowConcat


def _numpy_key(key: Any) -> Any:
    if isinstance(key, tuple):
        return tuple(_numpy_key(k) for k in key)
    return key.cpu().numpy() if isinstance(key, torch.Tensor) else key


class LazyRows:
    """[N, H] rows of a sharded trace, a tensor when indexed (bfloat16 kept as bfloat16)."""

    def __init__(self, rows: RowConcat, safetensors_dtype: str) -> None:
        self.rows = rows
        self.bfloat16 = safetensors_dtype == "BF16"
        self.shape = torch.Size(rows.shape)
        self.dtype = torch.bfloat16 if self.bfloat16 else torch.from_numpy(np.zeros(0, rows.dtype)).dtype

    def __getitem__(self, key: Any) -> torch.Tensor:
        t = torch.from_numpy(np.ascontiguousarray(self.rows[_numpy_key(key)]))
        return t.view(torch.bfloat16) if self.bfloat16 else t

    def __len__(self) -> int:
        return self.shape[0]

    def dim(self) -> int:
        return len(self.shape)

    def size(self, dim: int | None = None) -> torch.Size | int:
        return self.shape if dim is None else self.shape[dim]

    def numel(self) -> int:
        return self.shape.numel()

    def to(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        """The whole quantity, read and converted (as ``tensor.to``)."""
        return self[:].to(*args, **kwargs)

    def __repr__(self) -> str:
        return f"LazyRows({list(self.shape)}, {self.dtype}, {len(self.rows.parts)} shards)"
