"""minGRU and minLSTM (Feng et al. 2024, "Were RNNs All We Needed?"), as lucidrains/minGRU-pytorch
computes them, recorded step by step.

The package's modules run a sequence of one step explicitly and a longer one as a log-space parallel scan
(Heinsen 2023), which never forms a gate. During a recorded forward the module runs `_mingru_forward` /
`_minlstm_forward` instead: the module's own projections (``to_hidden_and_gate``,
``to_hidden_and_f_i_gate``, ``to_out``) and its one-step equations for every step, so the values are the
scan's up to float rounding (the log-space scan loses a little precision over long sequences; the step form
does not), and an edit flows on to every later step. Per unit, with the package's g (its appendix B.3
log-space variant: g(x) = x + 0.5 for x >= 0, σ(x) below, so states stay positive), under gatescope's
symbols (gatescope.kinds: minGRU's z is x, as it weights the new candidate where torch's z weights the
state; h~ is n, the candidate state; minLSTM's f' and i' are p and t)::

    minGRU:   x = σ(W_z x_t)    n = g(W_h x_t)    h_t = (1 - x) h_{t-1} + x n
    minLSTM:  f = σ(W_f x_t)    i = σ(W_i x_t)    p = f / (f + i)    t = i / (f + i)
              n = g(W_h x_t)    h_t = p h_{t-1} + t n

h_0 = 0 unless ``prev_hidden`` is given. The package's own quirk, kept: minLSTM's parallel path (more than
one step) starts from g(prev_hidden), its one-step path from prev_hidden itself. What is recorded is h
before ``to_out`` (the identity unless the module has an expansion factor).
"""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from gatescope.errors import warn
from gatescope.kinds import MINGRU, MINLSTM
from gatescope.recorder.engine import ObserverFor, Taps
from gatescope.recorder.packaged import Packaged


def _g(x: Tensor) -> Tensor:
    """minGRU-pytorch's g: x + 0.5 for x >= 0, σ(x) below (continuous, positive)."""
    return torch.where(x >= 0, x + 0.5, x.sigmoid())


def _outputs(module: nn.Module, hs: list[Tensor], return_next_prev_hidden: bool) -> Any:
    out = torch.stack(hs, dim=1)  # (B, T, D)
    next_prev_hidden = out[:, -1:]
    out = module.to_out(out)
    return (out, next_prev_hidden) if return_next_prev_hidden else out


def _mingru_forward(module: nn.Module, observer_for: ObserverFor, x: Tensor, prev_hidden: Tensor | None = None,
                    return_next_prev_hidden: bool = False) -> Any:
    """minGRU's forward, one step at a time: x (B, T, dim), prev_hidden (B, 1, D) or None."""
    hidden, gate = module.to_hidden_and_gate(x).chunk(2, dim=-1)  # (B, T, D) each
    if prev_hidden is not None and x.shape[1] > 1 and bool((prev_hidden < 0).any()):
        warn("minGRU: prev_hidden has negative values, whose log the package's parallel scan takes (giving NaN); "
             "the recorded forward computes the recurrence itself and gives numbers")
    h = None if prev_hidden is None else prev_hidden[:, 0]
    taps = Taps(observer_for(0, "fwd"), x.shape[1])
    hs = []
    for t in range(x.shape[1]):
        tap = taps.at(t)
        z = tap("x", gate[:, t].sigmoid())
        candidate = tap("n", _g(hidden[:, t]))
        h = tap("h", candidate * z if h is None else torch.lerp(h, candidate, z))
        hs.append(h)
    taps.flush(None)
    return _outputs(module, hs, return_next_prev_hidden)


def _minlstm_forward(module: nn.Module, observer_for: ObserverFor, x: Tensor, prev_hidden: Tensor | None = None,
                     return_next_prev_hidden: bool = False) -> Any:
    """minLSTM's forward, one step at a time: x (B, T, dim), prev_hidden (B, 1, D) or None."""
    hidden, f_gate, i_gate = module.to_hidden_and_f_i_gate(x).chunk(3, dim=-1)  # (B, T, D) each
    h = None if prev_hidden is None else prev_hidden[:, 0] if x.shape[1] == 1 else _g(prev_hidden[:, 0])
    taps = Taps(observer_for(0, "fwd"), x.shape[1])
    hs = []
    for t in range(x.shape[1]):
        tap = taps.at(t)
        f = tap("f", f_gate[:, t].sigmoid())
        i = tap("i", i_gate[:, t].sigmoid())
        f_prime = tap("p", f / (f + i))
        i_prime = tap("t", i / (f + i))
        candidate = tap("n", _g(hidden[:, t]))
        h = tap("h", candidate * i_prime if h is None else h * f_prime + candidate * i_prime)
        hs.append(h)
    taps.flush(None)
    return _outputs(module, hs, return_next_prev_hidden)


def _packaged(cell, classname: str, projection: str, chunks: int, forward) -> Packaged:
    """The module's units: its projection's rows over the chunks it is cut into (hidden and gates)."""
    def width(module: nn.Module, kind: str) -> int:
        return getattr(module, projection).out_features // chunks

    def info(module: nn.Module) -> dict[str, Any]:
        return {"cell": cell.name, "input_size": getattr(module, projection).in_features,
                "hidden_size": width(module, "h"), "num_layers": 1, "bidirectional": False}

    return Packaged("minGRU_pytorch", (classname,), cell, width, info, forward)


MINGRU_MODULES = _packaged(MINGRU, "minGRU", "to_hidden_and_gate", 2, _mingru_forward)
MINLSTM_MODULES = _packaged(MINLSTM, "minLSTM", "to_hidden_and_f_i_gate", 3, _minlstm_forward)
