"""The LSTM step loop compiled by TorchScript, for a run of steps whose edits are affine (Interventions).

At batch 1 a step of the Python loop (`gatescope.recorder.cells.lstm_step` with its taps) costs about four
times a step of the fused native kernel, most of it the interpreter's per-operation overhead. Edits the
fused kernel cannot fold (a c or a gate unit scaled at every step) must step, so their cost is that of
the loop. The Interventions of one kind over a run of steps are together an affine map per unit and step,
v -> v * scale_t + shift_t (`gatescope.recorder.interventions.affine`), known before the run starts; the
loop below applies them where `lstm_step`'s taps would, with torch's equations (torch/nn/modules/rnn.py,
gate order i, f, g, o), compiled by TorchScript, which ships with torch and needs no C++ toolchain. It
records every quantity, as the step route does, and is used only where that route would run without
autograd: the split route (gatescope.recorder.engine) for edited runs of a forward LSTM direction on a
CPU at small batch (where per-step overhead, not the products, is the cost).
"""
from __future__ import annotations

import functools
import warnings

import torch
from torch import Tensor

KINDS = ("i", "f", "g", "o", "c", "h")  # the order of the loop's outputs and edits


def _loop(xs: Tensor, h: Tensor, c: Tensor, weight_hh_t: Tensor, scales: list[Tensor], shifts: list[Tensor],
          edited: list[bool], pre: Tensor, cells: Tensor, hs: Tensor) -> None:
    """xs (T, B, 4H) input projections with both biases; h, c (B, H); weight_hh_t (H, 4H); scales and
    shifts: one (T, B, H) per kind of KINDS (any tensor where ``edited`` is False). Fills pre (T, B, 4H),
    the gate pre-activations, and cells, hs (T, B, H), the edited c and h."""
    hidden = c.shape[1]
    for t in range(xs.shape[0]):
        gates = torch.addmm(xs[t], h, weight_hh_t, out=pre[t])  # (B, 4H)
        sig = gates.sigmoid()
        i = sig[:, :hidden]
        f = sig[:, hidden:2 * hidden]
        g = gates[:, 2 * hidden:3 * hidden].tanh()
        o = sig[:, 3 * hidden:]
        if edited[0]:
            i = torch.addcmul(shifts[0][t], i, scales[0][t])
        if edited[1]:
            f = torch.addcmul(shifts[1][t], f, scales[1][t])
        if edited[2]:
            g = torch.addcmul(shifts[2][t], g, scales[2][t])
        if edited[3]:
            o = torch.addcmul(shifts[3][t], o, scales[3][t])
        c = torch.addcmul(f * c, i, g)
        if edited[4]:
            c = torch.addcmul(shifts[4][t], c, scales[4][t])
        h = o * c.tanh()
        if edited[5]:
            h = torch.addcmul(shifts[5][t], h, scales[5][t])
        cells[t] = c
        hs[t] = h


@functools.cache
def _compiled_loop():
    """`_loop` compiled once, on first use (not at import); where TorchScript cannot compile it (a torch
    without it), the same function runs as Python: the same values, at the step route's speed."""
    try:
        with warnings.catch_warnings():  # torch 2.x calls TorchScript deprecated; it still ships and runs
            warnings.simplefilter("ignore", DeprecationWarning)
            return torch.jit.script(_loop)
    except Exception:  # noqa: BLE001  (any failure to compile leaves the Python function, never a crash)
        return _loop


@torch.no_grad()
def lstm_run(xs: Tensor, h0: Tensor, c0: Tensor, weight_hh: Tensor,
             affine: dict[str, tuple[Tensor, Tensor]]) -> dict[str, Tensor]:
    """Steps of one forward LSTM direction (no projection) under affine edits -> kind -> (T, B, H).

    xs: (T, B, 4H) from `cells.input_projection(fold_bias_hh=True)`; h0, c0: (B, H); affine: kind ->
    (scale, shift), each (T, B, H), for the kinds edited. The loop keeps the pre-activations, c and h; the
    gates of every step are then taken from the pre-activations at once, edited by the same maps."""
    steps, batch = xs.shape[:2]
    hidden = c0.shape[-1]
    pre = xs.new_empty(steps, batch, 4 * hidden)
    cells, hs = xs.new_empty(steps, batch, hidden), xs.new_empty(steps, batch, hidden)
    none = xs.new_empty(0)
    scales = [affine[k][0] if k in affine else none for k in KINDS]
    shifts = [affine[k][1] if k in affine else none for k in KINDS]
    _compiled_loop()(xs.contiguous(), h0, c0, weight_hh.detach().t().contiguous(), scales, shifts,
          [k in affine for k in KINDS], pre, cells, hs)
    sig = pre.sigmoid()
    gates = {"i": sig[..., :hidden], "f": sig[..., hidden:2 * hidden], "g": pre[..., 2 * hidden:3 * hidden].tanh(),
             "o": sig[..., 3 * hidden:]}
    for kind, value in gates.items():
        if kind in affine:
            gates[kind] = torch.addcmul(affine[kind][1], value, affine[kind][0])
    return {**gates, "c": cells, "h": hs}
