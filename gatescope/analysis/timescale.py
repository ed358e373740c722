"""The timescale of a unit's memory: one definition, read from weights (`gatescope inspect`,
gatescope.analysis.weights) and from traces (gatescope.analysis.dynamics).

A unit that keeps the fraction g of its memory per step forgets with time constant 1 / (1 - g) steps: g is
the memory gate, the LSTM forget gate f (1 - i where f is coupled to i) or the GRU update gate z. At zero
input and state it is the biases through the cell type's gate activation, sigmoid(b_ih + b_hh) for torch's
cells: the "chrono" reading of Tallec & Ollivier 2018, "Can recurrent neural networks warp time?".
"""
from __future__ import annotations

import torch

from gatescope.kinds import CellType
from gatescope.recorder.activations import apply


def memory_at_rest(ctype: CellType, bias: torch.Tensor, hidden: int) -> torch.Tensor | None:
    """The memory gate's value at zero input and state (H,), as the cell type computes it, from the summed
    biases (G*H,); None for a cell without a memory gate (the plain RNN)."""
    gate = ctype.memory_gate
    if gate is None:
        return None
    coupled = ctype.coupled is not None and ctype.coupled[0] == gate
    source = ctype.coupled[1] if coupled else gate  # a coupled forget gate is 1 minus the input gate
    pre = bias[ctype.rows(source, hidden)] + (ctype.forget_bias if source == "f" else 0.0)
    if ctype.clip is not None:
        pre = pre.clamp(-ctype.clip, ctype.clip)
    value = apply(ctype.gate_activation, pre)
    return 1 - value if coupled else value


def timescale_of(keep: torch.Tensor) -> torch.Tensor:
    """The time constant 1 / (1 - keep) in steps of a unit that keeps the fraction ``keep`` of its memory per
    step; infinite where it keeps all of it."""
    return torch.where(keep >= 1, torch.inf, 1.0 / (1.0 - keep))
