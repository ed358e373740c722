"""The pointwise activations of gatescope.kinds.Activation, computed on tensors.

The formulas are ONNX's (onnx/defs/rnn/defs.cc, the LSTM / GRU / RNN ``activations`` attribute), which
cover Keras' and torch's too: hard_sigmoid(alpha, beta) = min(max(alpha x + beta, 0), 1) is Keras 2's
with (0.2, 0.5) and Keras 3's and torch's Hardsigmoid with (1/6, 0.5). sigmoid, tanh and relu are
torch's own functions, so a standard cell computes exactly what torch's kernels do.
"""
from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from gatescope.kinds import Activation

_FUNCTIONS: dict[str, Callable[[Tensor, float, float], Tensor]] = {
    "sigmoid": lambda x, a, b: torch.sigmoid(x),
    "tanh": lambda x, a, b: torch.tanh(x),
    "relu": lambda x, a, b: torch.relu(x),
    "affine": lambda x, a, b: x * a + b,
    "leaky_relu": lambda x, a, b: torch.where(x >= 0, x, x * a),
    "thresholded_relu": lambda x, a, b: torch.where(x > a, x, torch.zeros_like(x)),
    "scaled_tanh": lambda x, a, b: torch.tanh(x * b) * a,
    "hard_sigmoid": lambda x, a, b: (x * a + b).clamp(0.0, 1.0),
    "elu": lambda x, a, b: torch.where(x >= 0, x, torch.expm1(x) * a),
    "softsign": lambda x, a, b: F.softsign(x),
    "softplus": lambda x, a, b: F.softplus(x),
}


def apply(activation: Activation, x: Tensor) -> Tensor:
    """``activation`` applied to every element of ``x``."""
    return _FUNCTIONS[activation.name](x, activation.alpha, activation.beta)
