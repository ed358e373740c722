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
returns the primitive's output alone and the caller recomputes the gates from it (`cells.lstm_replay`):
never a wrong value, and the recurrence never run twice.

The check's tolerance follows the quantity. oneDNN and gatescope evaluate the same recurrence
c_t = f_t c_{t-1} + i_t g_t on the same gates, each in float32 with at most two roundings a step (unit
roundoff u = 2^-24), in different orders. With the magnitude bound A_t = f_t A_{t-1} + |i_t g_t| >= |c_t|
(A_{-1} = |c_0|), the two results differ by d_t <= f_t d_{t-1} + 4u A_t, so d_t <= 4u (t + 1) A_t (each
earlier term, carried by the product of later f <= 1, is at most A_t): a tolerance relative to the size
the cell state can have reached, growing with the steps since the chunk's start, taken twice for the
rounding of A itself. The same bound goes through o tanh(.) (both at most 1 in slope) to h, plus
ACTIVATION_TOLERANCE for oneDNN's vectorised tanh and sigmoid against the check's own (tanh(x) taken as
2 sigmoid(2x) - 1, within 2e-7 of the exact value, and six times faster than torch's tanh on the CPU).
A wrong layout puts other gates (or padding) where i, f, g, o should be, and misses by far more, from
the first steps on.
"""
from __future__ import annotations

import torch
from torch import Tensor

from gatescope.recorder.cells import CellWeights

ACTIVATION_TOLERANCE = 1e-5  # oneDNN's vectorised tanh and sigmoid agree with torch's to a few ulps
ROUNDING = 8 * 2.0**-24  # twice 4u: the two evaluations' rounding of c, per step and unit of magnitude


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
def lstm_gates(x: Tensor, h0: Tensor, c0: Tensor, w: CellWeights) -> tuple[Tensor, dict[str, Tensor] | None]:
    """One forward LSTM layer through oneDNN: ``(out, {i, f, g, o, c, h})``, each (T, B, H).

    x: (T, B, I) time-major, already in step order; h0, c0: (B, H). The quantities are None when the
    workspace does not hold what this module expects: ``out`` is the fused kernel's output all the same,
    from which the caller recomputes the gates (`cells.lstm_replay`)."""
    steps, batch = x.shape[:2]
    hidden = c0.shape[-1]
    has_bias = w.bias_ih is not None
    b_ih, b_hh = (w.bias_ih.detach(), w.bias_hh.detach()) if has_bias else (x.new_zeros(4 * hidden),) * 2
    with torch.enable_grad():  # the primitive returns its workspace only under grad mode; nothing requires grad
        out, _, c_n, workspace = torch.ops.aten.mkldnn_rnn_layer(
            x.detach().contiguous(), w.weight_ih.detach(), w.weight_hh.detach(), b_ih, b_hh,
            h0.detach().contiguous(), c0.detach().contiguous(),
            False, [steps], 2, hidden, 1, has_bias, False, False, True,  # reverse, sizes, LSTM mode, ..., train
        )
    ld = good_ld(4 * hidden)
    if workspace is None or workspace.numel() < steps * batch * ld * 4:
        return out, None
    gates = workspace.view(torch.float32)[: steps * batch * ld].view(steps, batch, ld)  # (T, B, ld)
    i, f, g, o = (gates[..., k * hidden : (k + 1) * hidden] for k in range(4))  # (T, B, H) views
    # c and its magnitude bound A side by side: c_t = f_t c_{t-1} + i_t g_t, A_t = f_t A_{t-1} + |i_t g_t|
    state = torch.empty(2, steps, batch, hidden)  # (2, T, B, H): [c, A]
    torch.mul(i, g, out=state[0])
    torch.abs(state[0], out=state[1])
    previous = torch.stack([c0, c0.abs()])  # (2, B, H)
    for t in range(steps):  # one fused kernel per step for both
        previous = state[:, t].addcmul_(f[t], previous)
    c, bound = state[0], state[1]
    rounding = torch.arange(1, steps + 1, dtype=torch.float32).mul_(ROUNDING).view(steps, 1, 1)  # (T, 1, 1): 8u (t + 1)
    tanh_c = torch.mul(c, 2).sigmoid_().mul_(2).sub_(1)  # (T, B, H): tanh(c) = 2 sigmoid(2c) - 1
    if not (_within(out, bound, rounding, o, tanh_c) and _within(c_n, bound[-1], rounding[-1], c[-1])):
        return out, None
    return out, {"i": i, "f": f, "g": g, "o": o, "c": c, "h": out}


def _within(expected: Tensor, bound: Tensor, rounding: Tensor, a: Tensor, b: Tensor | None = None) -> bool:
    """Whether ``a`` (times ``b``, when given) equals ``expected`` within ``rounding * bound +
    ACTIVATION_TOLERANCE`` everywhere (a NaN anywhere: not within)."""
    diff = torch.addcmul(expected, a, b, value=-1) if b is not None else expected - a
    excess = diff.abs_().addcmul_(bound, rounding, value=-1)  # |diff| - 8u (t + 1) A_t
    return bool(excess.max() <= ACTIVATION_TOLERANCE)  # max propagates NaN; one reduction, no mask
