"""The xlstm package's sLSTM and mLSTM (Beck et al. 2024, "xLSTM: Extended Long Short-Term Memory";
NX-AI/xlstm), recorded through the package's own code on a CPU or any device its vanilla code runs on.

sLSTM (``sLSTMCell`` on the ``vanilla`` backend, alone or inside an ``sLSTMLayer``): the package computes a
step in its pointwise function (xlstm/blocks/slstm/src/vanilla/slstm.py), the cell's ``pointwise``
attribute, called once per step by its loop. During a recorded forward that attribute is `_slstm_pointwise`,
the same operations in the same order (so the outputs are the package's, bit for bit) with a tap on each
quantity, per unit (H = heads x head size, head-major), under gatescope's symbols (gatescope.kinds: the
paper's z, n, m are g, d, s)::

    s_t = i~ (first step of a zero state) or max(i~, log σ(f~) + s_{t-1})   the stabiliser m
    i = min(exp(i~ - s_t), 1)    f = min(exp(log σ(f~) + s_{t-1} - s_t), 1)  the gates as applied
    g = tanh(z~)    o = σ(o~)    c_t = f c_{t-1} + i g    d_t = f d_{t-1} + i    h_t = o c_t / d_t

where x~ = W_x x_t + R_x h_{t-1} + b_x, R block-diagonal per head. The package's pointwise function returns
z~ (before tanh) among its gates; g here is tanh(z~), the candidate as it enters c. sLSTMLayer feeds its
cell ``[fgate(x), igate(x), zgate(x), ogate(x)]`` in the order i, f, z, o: the module named ``fgate`` computes
the input gate's pre-activation and ``igate`` the forget gate's. Recording reads the cell's own order, so i
and f are what the cell uses as input and forget gate, whatever the modules are called. A call with S = 1
(``sLSTMLayer.step``) is recorded as a one-step sequence continuing from the given state. The CUDA backend
computes its steps inside a kernel and is refused.

mLSTM (``mLSTMLayer``): its cell's forward uses the parallel form, which never forms a per-step state; the
cell's ``backend_fn`` becomes `_mlstm_recurrent`, the recurrent form of the same function, with the parallel
form's stabiliser (the row maximum of log D, i.e. the recurrence below started from s_0 = -inf), so that
h~ equals the parallel form's output up to float rounding. Per head (i, f, s) or per unit (d, o, h; d the
paper's n, s its m)::

    s_t = max(log σ(f~) + s_{t-1}, i~)    i = exp(i~ - s_t)    f = exp(log σ(f~) + s_{t-1} - s_t)
    v_t = C_t = f C_{t-1} + i k v^T / sqrt(DH)    d_t = f d_{t-1} + i k / sqrt(DH)
    h~_t = C_t^T q / (max(|d_t . q|, exp(-s_t)) + 1e-6)

and the layer's output gate o = SiLU(z) (its ``ogate_act_fn``) and hidden state
h = o * (GroupNorm(h~) + skip * conv(x)), what its ``proj_down`` reads (taps on those two modules). The
matrix memory C (kind v, heads x DH x DH per step, rows the key dimension) is recorded only on request.
``mLSTMLayer.step`` (step-wise generation: the package's recurrent step from the given state, stabiliser
from 0 for a new one) is recorded as a one-step sequence through the same taps.
"""
from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gatescope.errors import GatescopeError
from gatescope.kinds import MLSTM, SLSTM
from gatescope.recorder.cells import Tap
from gatescope.recorder.engine import ObserverFor, Taps
from gatescope.recorder.packaged import Packaged, over_time, shaped_tap


# -- sLSTM ------------------------------------------------------------------------------------------
def _slstm_pointwise(taps: Taps, steps: Iterator[int], Wx: Tensor, Ry: Tensor, b: Tensor, states: Tensor,
                     constants: dict | None = None) -> tuple[Tensor, Tensor]:
    """xlstm's vanilla ``slstm_forward_pointwise``, tapped: Wx, Ry (B, 4H), b (4H,), states (4, B, H)."""
    tap = taps.at(next(steps))  # the package's loop calls this once per step, in time order
    raw = Wx + Ry + b
    _, c, n, m = torch.unbind(states.view(4, states.shape[1], -1), dim=0)  # (B, H) each
    iraw, fraw, zraw, oraw = torch.unbind(raw.view(raw.shape[0], 4, -1), dim=1)  # (B, H) each
    logfplusm = m + F.logsigmoid(fraw)
    mnew = tap("s", iraw if torch.all(n == 0.0) else torch.max(iraw, logfplusm))  # zero state: from i~
    one = torch.ones_like(iraw)
    i = tap("i", torch.minimum(torch.exp(iraw - mnew), one))
    f = tap("f", torch.minimum(torch.exp(logfplusm - mnew), one))
    z = tap("g", torch.tanh(zraw))
    o = tap("o", torch.sigmoid(oraw))
    cnew = tap("c", f * c + i * z)
    nnew = tap("d", f * n + i)
    h = tap("h", o * cnew / nnew)
    return torch.stack((h, cnew, nnew, mnew), dim=0), torch.stack((i, f, zraw, o), dim=0)


def _slstm_forward(cell: nn.Module, observer_for: ObserverFor, input: Tensor, *args: Any, **kwargs: Any) -> Any:
    """The cell's own forward, its pointwise function tapped for the call. input (B, S, 4H) or (S, B, 4H)."""
    taps = Taps(observer_for(0, "fwd"), input.shape[1] if cell.config.input_shape == "BSGNH" else input.shape[0])
    own = cell.__dict__["pointwise"]
    cell.pointwise = functools.partial(_slstm_pointwise, taps, itertools.count())
    try:
        out = type(cell).forward(cell, input, *args, **kwargs)
    finally:
        cell.pointwise = own
    taps.flush(None)
    return out


def _slstm_refuse(cell: nn.Module) -> str | None:
    if "pointwise" not in cell.__dict__:
        return ("the sLSTM's CUDA backend computes its gates inside its kernel; build the model with "
                "backend='vanilla' (the same weights load) to record it")
    if cell.config.function != "slstm":
        return f"the cell computes function={cell.config.function!r}; gatescope records the sLSTM ('slstm')"
    return None


def _slstm_info(cell: nn.Module) -> dict[str, Any]:
    return {"cell": SLSTM.name, "hidden_size": cell.config.hidden_size, "num_heads": cell.config.num_heads,
            "num_layers": 1, "bidirectional": False}


# -- mLSTM ------------------------------------------------------------------------------------------
def _mlstm_recurrent(taps: Taps, own, queries: Tensor, keys: Tensor, values: Tensor, igate_preact: Tensor,
                     fgate_preact: Tensor, lower_triangular_matrix: Tensor | None = None,
                     stabilize_rowwise: bool = True, eps: float = 1e-6, **kwargs: Any) -> Tensor:
    """xlstm's ``parallel_stabilized_simple`` as its recurrent form, tapped. queries, keys, values
    (B, NH, S, DH), gate pre-activations (B, NH, S, 1) -> h~ (B, NH, S, DH)."""
    batch, heads, length, dh = queries.shape
    mask = lower_triangular_matrix
    if mask is not None and length > mask.size(-1):  # longer than its context_length: the package's own error
        return own(queries=queries, keys=keys, values=values, igate_preact=igate_preact, fgate_preact=fgate_preact,
                   lower_triangular_matrix=mask, eps=eps, **kwargs)
    if not stabilize_rowwise:
        raise GatescopeError("an mLSTM stabilised over the whole matrix (stabilize_rowwise=False) is not recorded: "
                             "its stabiliser is no recurrence")
    log_f = F.logsigmoid(fgate_preact)  # (B, NH, S, 1)
    C = queries.new_zeros(batch, heads, dh, dh)
    n = queries.new_zeros(batch, heads, dh, 1)
    m = queries.new_full((batch, heads, 1, 1), -math.inf)  # the parallel form's stabiliser: from -inf
    out = []
    for t in range(length):
        q, k, v = (x[:, :, t, :, None] for x in (queries, keys, values))  # (B, NH, DH, 1)
        h, C, n, m = mlstm_step(shaped_tap(taps, t), C, n, m, q, k / math.sqrt(dh), v,
                                igate_preact[:, :, t, :, None], log_f[:, :, t, :, None], eps)
        out.append(h)
    return torch.cat(out, dim=2)  # (B, NH, S, DH)


def mlstm_step(tap: Tap, C: Tensor, n: Tensor, m: Tensor, q: Tensor, k: Tensor, v: Tensor, i_pre: Tensor,
               log_f: Tensor, eps: float) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """One stabilised mLSTM step, tapped (s, i, f, v, d): C (B, NH, DK, DV), n (B, NH, DK, 1), m, i_pre,
    log_f = log σ(f~) (B, NH, 1, 1); q, k (B, NH, DK, 1) with the 1/sqrt(DK) already on one of them, v
    (B, NH, DV, 1). Returns h~ (B, NH, 1, DV) and the new C, n, m."""
    m_new = tap("s", torch.max(log_f + m, i_pre))
    i = tap("i", torch.exp(i_pre - m_new))
    f = tap("f", torch.exp(log_f + m - m_new))
    C = tap("v", f * C + i * (k @ v.transpose(-1, -2)))  # (B, NH, DK, DV)
    n = tap("d", f * n + i * k)  # (B, NH, DK, 1)
    numerator = q.transpose(-1, -2) @ C  # (B, NH, 1, DV)
    denominator = torch.maximum((q.transpose(-1, -2) @ n).abs(), torch.exp(-m_new)) + eps  # (B, NH, 1, 1)
    return numerator / denominator, C, n, m_new


def _mlstm_recurrent_step(taps: Taps, own, c_state: Tensor, n_state: Tensor, m_state: Tensor, q: Tensor, k: Tensor,
                          v: Tensor, igate_preact: Tensor, fgate_preact: Tensor, eps: float = 1e-6,
                          **kwargs: Any) -> tuple[Tensor, tuple[Tensor, Tensor, Tensor]]:
    """xlstm's ``recurrent_step_stabilized_simple``, tapped: states C (B, NH, DH, DH), n (B, NH, DH, 1), m
    (B, NH, 1, 1); q, k, v (B, NH, 1, DH); gate pre-activations (B, NH, 1, 1)."""
    dh = q.shape[-1]
    q, k, v = (x.squeeze(2).unsqueeze(-1) for x in (q, k, v))  # (B, NH, DH, 1)
    h, C, n, m = mlstm_step(shaped_tap(taps, 0), c_state, n_state, m_state, q, k / math.sqrt(dh), v, igate_preact,
                            F.logsigmoid(fgate_preact), eps)
    return h, (C, n, m)


def run_tapped(layer: nn.Module, taps: Taps, owner: nn.Module, attr: str, replacement, output: str, call) -> Any:
    """``call()`` (an mLSTM layer's forward or step) with ``owner.<attr>`` (its cell's backend function) replaced
    by ``replacement`` and taps on the layer's output gate (``ogate_act_fn``) and on h, the input of its
    ``output`` projection; everything restored after, and the kept values handed over."""
    own = owner.__dict__.get(attr)
    setattr(owner, attr, replacement)
    handles = [
        layer.ogate_act_fn.register_forward_hook(lambda module, args, o: over_time(taps, "o", o)),
        getattr(layer, output).register_forward_pre_hook(lambda module, args: (over_time(taps, "h", args[0]),
                                                                               *args[1:])),
    ]
    try:
        out = call()
    finally:
        if own is None:
            delattr(owner, attr)
        else:
            setattr(owner, attr, own)
        for handle in handles:
            handle.remove()
    taps.flush(None)
    return out


def _mlstm_run(layer: nn.Module, taps: Taps, backend: str, recurrent, call) -> Any:
    cell = layer.mlstm_cell
    replacement = functools.partial(recurrent, taps, cell.__dict__[backend])
    return run_tapped(layer, taps, cell, backend, replacement, "proj_down", call)


def _mlstm_forward(layer: nn.Module, observer_for: ObserverFor, x: Tensor, *args: Any, **kwargs: Any) -> Any:
    """The layer's own forward (parallel form) run as its recurrent form, tapped. x (B, S, E)."""
    return _mlstm_run(layer, Taps(observer_for(0, "fwd"), x.shape[1]), "backend_fn", _mlstm_recurrent,
                      lambda: type(layer).forward(layer, x, *args, **kwargs))


def _mlstm_step_call(layer: nn.Module, observer_for: ObserverFor, x: Tensor, *args: Any, **kwargs: Any) -> Any:
    """The layer's own ``step`` (one step from a given state, for generation), tapped. x (B, 1, E)."""
    return _mlstm_run(layer, Taps(observer_for(0, "fwd"), x.shape[1]), "backend_fn_step", _mlstm_recurrent_step,
                      lambda: type(layer).step(layer, x, *args, **kwargs))


def _mlstm_width(layer: nn.Module, kind: str) -> int:
    inner, heads = layer.config._inner_embedding_dim, layer.mlstm_cell.config.num_heads
    return {"i": heads, "f": heads, "s": heads, "v": inner * inner // heads}.get(kind, inner)


def _mlstm_info(layer: nn.Module) -> dict[str, Any]:
    return {"cell": MLSTM.name, "input_size": layer.config.embedding_dim,
            "hidden_size": layer.config._inner_embedding_dim, "num_heads": layer.mlstm_cell.config.num_heads,
            "num_layers": 1, "bidirectional": False}


SLSTM_CELLS = Packaged("xlstm.blocks", ("sLSTMCellBase",), SLSTM, lambda cell, kind: cell.config.hidden_size,
                       _slstm_info, _slstm_forward, refuse=_slstm_refuse)
MLSTM_LAYERS = Packaged("xlstm.blocks", ("mLSTMLayer",), MLSTM, _mlstm_width, _mlstm_info, _mlstm_forward,
                        on_request=("v",), methods=(("step", _mlstm_step_call),))
