"""Matrix products for the step route, prepared once per layer and called at every timestep.

On a CPU without autograd, oneDNN's linear (the library behind torch's own fused LSTM kernel) runs
these products about twice as fast as the BLAS sgemm behind ``torch.addmm`` on this project's
machines, at float32 accuracy; everywhere else (GPU, gradients, other dtypes) plain torch ops.
"""
from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.nn.utils._expanded_weights import ExpandedWeight

Linear = Callable[..., Tensor]
"""``f(x, add=None) -> x @ weight.T + bias (+ add)``, x of shape (rows, in)."""


def _onednn_usable(weight: Tensor) -> bool:
    return (
        weight.device.type == "cpu"
        and weight.dtype == torch.float32
        and not torch.is_grad_enabled()
        and torch.backends.mkldnn.is_available()
        and hasattr(torch._C._nn, "mkldnn_linear")
    )


# Below this many rows, converting to and from oneDNN's layout costs more than it saves.
ONEDNN_MIN_ROWS = 8


def linear(weight: Tensor, bias: Tensor | None = None) -> Linear:
    """``(x, add=None) -> x @ weight.T + bias (+ add)`` for 2-D x, the weight prepared for repeated calls.

    ``add`` (rows, out) is a term computed elsewhere, e.g. a step's precomputed input projection: on the
    plain path it costs nothing extra (it is the ``addmm`` accumulator)."""
    if isinstance(weight, ExpandedWeight):  # call_for_per_sample_grads: F.linear is the product it knows
        return lambda x, add=None: F.linear(x, weight, bias) if add is None else add + F.linear(x, weight, bias)
    wt = weight.t()

    def plain(x: Tensor, add: Tensor | None = None) -> Tensor:
        if add is None:
            return x @ wt if bias is None else torch.addmm(bias, x, wt)
        return torch.addmm(add if bias is None else add + bias, x, wt)

    if not _onednn_usable(weight):
        return plain
    w = weight.detach().contiguous().to_mkldnn()
    b = None if bias is None else bias.detach().contiguous().to_mkldnn()

    def onednn(x: Tensor, add: Tensor | None = None) -> Tensor:
        if x.shape[0] < ONEDNN_MIN_ROWS:
            return plain(x, add)
        out = torch._C._nn.mkldnn_linear(x.contiguous().to_mkldnn(), w, b).to_dense()
        return out if add is None else out.add_(add)

    return onednn
