"""Matrix products for the step route, prepared once per layer and called at every timestep.

On a CPU without autograd, oneDNN's linear (the library behind torch's own fused LSTM kernel) runs
these products about twice as fast as the BLAS sgemm behind ``torch.addmm`` on this project's
machines, at float32 accuracy; everywhere else (GPU, gradients, other dtypes) plain torch ops.
"""
from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

Linear = Callable[[Tensor], Tensor]


def _onednn_usable(weight: Tensor) -> bool:
    return (
        weight.device.type == "cpu"
        and weight.dtype == torch.float32
        and not torch.is_grad_enabled()
        and torch.backends.mkldnn.is_available()
        and hasattr(torch._C._nn, "mkldnn_linear")
    )


def linear(weight: Tensor, bias: Tensor | None = None) -> Linear:
    """``x -> x @ weight.T + bias`` for 2-D x, with the weight prepared for repeated calls."""
    if _onednn_usable(weight):
        w = weight.detach().contiguous().to_mkldnn()
        b = None if bias is None else bias.detach().contiguous().to_mkldnn()
        return lambda x: torch._C._nn.mkldnn_linear(x.contiguous().to_mkldnn(), w, b).to_dense()
    wt = weight.t()
    if bias is None:
        return lambda x: x @ wt
    return lambda x: torch.addmm(bias, x, wt)
