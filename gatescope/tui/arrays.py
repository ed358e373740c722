"""Every trace the browser shows, as a `gatescope.traces.file.TraceFile`: numpy arrays, no torch.

The browser has one data path. A trace file is memory-mapped by `read_trace_file`, so
`gatescope browse FILE` never imports torch (it would cost most of the 2 s first-screen
budget of the browser). An in-memory `gatescope.Trace` (from `gatescope inspect`, where torch is
loaded anyway) is wrapped as the same numpy arrays, sharing its tensors' memory: the
inverse of what `gatescope.traces.trace.load_trace` does with a file (bfloat16 kept as its 16 bits,
safetensors dtype ``BF16``, and widened by `TraceFile.rows`).
"""
from __future__ import annotations

import os
from typing import TYPE_CHECKING

import numpy as np

from gatescope.errors import GatescopeError
from gatescope.traces.file import STORAGE, TraceFile, read_trace_file

if TYPE_CHECKING:
    import torch

    from gatescope.traces.trace import Trace

DTYPE_NAMES = {np.dtype(storage): name for name, storage in STORAGE.items()}  # uint16 -> BF16


def trace_file(trace: Trace | TraceFile | str | os.PathLike) -> TraceFile:
    """A path read as a memory-mapped TraceFile; a TraceFile as is; a Trace's tensors as numpy arrays."""
    if isinstance(trace, TraceFile):
        return trace
    if isinstance(trace, (str, os.PathLike)):
        return read_trace_file(trace)
    arrays = {name: _numpy(tensor) for name, tensor in trace.items()}
    dtypes = {}
    for name, array in arrays.items():
        if array.dtype not in DTYPE_NAMES:
            raise GatescopeError(f"trace tensor {name} has dtype {trace[name].dtype}, which the browser cannot show")
        dtypes[name] = DTYPE_NAMES[array.dtype]
    token_ids = None if trace.token_ids is None else _numpy(trace.token_ids)
    features = {name: _numpy(values) for name, values in trace.features.items()}
    path = None  # no file: the trace is in memory
    return TraceFile(path, arrays, dtypes, _numpy(trace.offsets), token_ids, features, dict(trace.meta))


def _numpy(tensor: torch.Tensor) -> np.ndarray:
    """The tensor's values as a numpy array (its memory when on the CPU); bfloat16 as its uint16 bits."""
    import torch  # loaded already: the caller holds a Trace

    tensor = tensor.detach().cpu()
    if tensor.dtype == torch.bfloat16:
        return tensor.view(torch.int16).numpy().view(np.uint16)
    return tensor.numpy()
