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


# Below this many rows, converting to and from oneDNN's layout costs more than it saves.
ONEDNN_MIN_ROWS = 8


def linear(weight: Tensor, bias: Tensor | None = None) -> Linear:
    """``x -> x @ weight.T + bias`` for 2-D x, with the weight prepared for repeated calls."""
    wt = weight.t()
    plain = (lambda x: x @ wt) if bias is None else (lambda x: torch.addmm(bias, x, wt))
    if not _onednn_usable(weight):
        return plain
    w = weight.detach().contiguous().to_mkldnn()
    b = None if bias is None else bias.detach().contiguous().to_mkldnn()

    def onednn(x: Tensor) -> Tensor:
        if x.shape[0] < ONEDNN_MIN_ROWS:
            return plain(x)
        return torch._C._nn.mkldnn_linear(x.contiguous().to_mkldnn(), w, b).to_dense()

    return onednn
