"""Every LSTM gate from oneDNN's own LSTM primitive: the kernel torch's CPU nn.LSTM runs.

torch's CPU LSTM is oneDNN's fused LSTM primitive (aten/src/ATen/native/mkldnn/RNN.cpp). In
training mode the primitive keeps what its backward pass needs in a *workspace*, among it the
post-activation gates of every step. ``torch.ops.aten.mkldnn_rnn_layer(..., train=True)`` returns
that workspace (under grad mode), so one call of the fused kernel gives h_t and every gate:

* ``ws_gates`` opens the workspace: (T, B, ld) float32 rows, the gates of one (t, b) in torch's
  order i, f, g, o (4H values), each row padded to ``ld`` = oneDNN's ``get_good_ld(4H)`` (rounded
  up to 64 bytes, plus 64 bytes when the row is a multiple of 1024 bytes, against cache aliasing);
* the cell state follows from the gates by the elementwise recurrence c_t = f_t c_{t-1} + i_t g_t
  (as in `gatescope.recorder.cells.lstm_replay`), and h_t is the primitive's own output.

The workspace layout is oneDNN's internal one, not an API, so every use is checked before a value
is returned: h_t must equal o_t * tanh(c_t) at every step and every unit (which ties o, and through
c every i, f and g, to the output the fused kernel computed) and the last c must equal the
primitive's c_n. If the check fails (another oneDNN layout, a build without oneDNN), `lstm_gates`
returns None and the caller recomputes the gates from h (`cells.lstm_replay`): never a wrong value.
"""
from __future__ import annotations

import torch
from torch import Tensor

from gatescope.recorder.cells import CellWeights

TOLERANCE = 1e-5  # oneDNN's vectorised tanh and sigmoid agree with torch's to a few ulps


def available(x: Tensor, w: CellWeights) -> bool:
    """Whether the primitive can run this layer: CPU, float32, no projection, oneDNN enabled."""
    return (
        x.device.type == "cpu"
        and x.dtype == torch.float32
        and w.weight_hr is None
        and w.weight_ih.dtype == torch.float32
        and x.shape[0] > 0
        and x.shape[1] > 0
        and torch.backends.mkldnn.is_available()
        and torch.backends.mkldnn.enabled
    )


def good_ld(n: int) -> int:
    """oneDNN's leading dimension for ``n`` float32 values (rnn_utils get_good_ld)."""
    ld = -(-n // 16) * 16
    return ld + 16 if ld % 256 == 0 else ld


@torch.no_grad()
def lstm_gates(x: Tensor, h0: Tensor, c0: Tensor, w: CellWeights) -> tuple[Tensor, dict[str, Tensor]] | None:
    """One forward LSTM layer through oneDNN: ``(out, {i, f, g, o, c, h})``, each (T, B, H); or None.

    x: (T, B, I) time-major, already in step order; h0, c0: (B, H). None when the workspace does not
    hold what this module expects (the caller then replays).
    """
    steps, batch = x.shape[:2]
    hidden = c0.shape[-1]
    has_bias = w.bias_ih is not None
    zeros = x.new_zeros(4 * hidden)
    b_ih, b_hh = (w.bias_ih.detach(), w.bias_hh.detach()) if has_bias else (zeros, zeros)
    with torch.enable_grad():  # the primitive returns its workspace only under grad mode; nothing requires grad
        out, _, c_n, workspace = torch.ops.aten.mkldnn_rnn_layer(
            x.detach().contiguous(), w.weight_ih.detach(), w.weight_hh.detach(), b_ih, b_hh,
            h0.detach().contiguous(), c0.detach().contiguous(),
            False, [steps], 2, hidden, 1, has_bias, False, False, True,  # reverse, sizes, LSTM mode, ..., train
        )
    ld = good_ld(4 * hidden)
    if workspace is None or workspace.numel() < steps * batch * ld * 4:
        return None
    gates = workspace.view(torch.float32)[: steps * batch * ld].view(steps, batch, ld)  # (T, B, ld)
    i, f, g, o = (gates[..., k * hidden : (k + 1) * hidden] for k in range(4))  # (T, B, H) views
    c = i * g  # (T, B, H), then c_t = f_t c_{t-1} + i_t g_t in place: one fused kernel per step
    c_prev = c0
    for t in range(steps):
        c_prev = c[t].addcmul_(f[t], c_prev)
    if not (_close(out, o, c.tanh()) and _close(c_n, c[-1])):
        return None
    return out, {"i": i, "f": f, "g": g, "o": o, "c": c, "h": out}


def _close(expected: Tensor, a: Tensor, b: Tensor | None = None) -> bool:
    """Whether ``a`` (times ``b``, when given) equals ``expected`` within TOLERANCE everywhere."""
    diff = torch.addcmul(expected, a, b, value=-1) if b is not None else expected - a
    return bool(diff.abs_().max() <= TOLERANCE)
