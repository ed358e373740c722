"""The recurrent cells' equations, written once, in torch's conventions, with the variants of gatescope.kinds.

Follows torch/nn/modules/rnn.py (rows of weight_ih / weight_hh in gate order):

LSTM (i, f, g, o)::

    i = σ(W_ii x + b_ii + W_hi h + b_hi)     f = σ(W_if x + b_if + W_hf h + b_hf)
    g = tanh(W_ig x + b_ig + W_hg h + b_hg)  o = σ(W_io x + b_io + W_ho h + b_ho)
    c' = f ⊙ c + i ⊙ g                        m = o ⊙ tanh(c')      h' = m, or W_hr m with proj_size

GRU (r, z, n)::

    r = σ(W_ir x + b_ir + W_hr h + b_hr)     z = σ(W_iz x + b_iz + W_hz h + b_hz)
    n = tanh(W_in x + b_in + r ⊙ (W_hn h + b_hn))                    h' = (1 - z) ⊙ n + z ⊙ h

GRU, reset before (the original GRU of Cho et al. 2014; Keras ``reset_after=False``, ONNX
``linear_before_reset=0``), which torch does not have: r and z as above, and::

    n = tanh(W_in x + b_in + W_hn (r ⊙ h) + b_hn)

RNN (Elman 1990; torch's nn.RNN)::

    h' = tanh(W_ih x + b_ih + W_hh h + b_hh)   (or relu)

The variants a `gatescope.kinds.CellType` declares, as the runtimes that define them compute them
(onnxruntime's cpu/rnn kernels for ONNX, tf.compat.v1's LSTMCell and CoupledInputForgetGateLSTMCell for TF):
σ and tanh are the type's ``gate_activation``, ``activation`` (g, n, the RNN's h) and ``output_activation``
(tanh(c')); with ``peepholes``, i and f add ``w_ci ⊙ c`` and o adds ``w_co ⊙ c'`` (Gers & Schmidhuber 2000;
``weight_ch`` holds w_ci, w_cf, w_co); ``forget_bias`` is added to f's pre-activation; ``clip`` clips every
pre-activation (after bias and peephole) to [-clip, clip]; a coupled LSTM computes f = 1 - i or i = 1 - f
(after the source gate's activation) and has no rows for the derived gate; ``cell_clip`` clips c' before
o and h see it; ``proj_clip`` clips h' = W_hr m.

Two ways to evaluate them, with the same results:

* `lstm_step` / `gru_step` / `rnn_step`: one timestep, given the input projection ``W_i* x + b``
  precomputed for all timesteps as one large product (`input_projection`, as cuDNN and oneDNN do), so a
  step pays only for the recurrent product. Every quantity passes through ``tap(kind, value)``, which may
  record it and may replace it (an intervention); the replacement is what the rest of the step uses.
* `lstm_replay` / `gru_replay`: all timesteps at once, given every hidden output h_t already
  computed by the fused native kernel (cuDNN on a GPU): the gate pre-activations for all t are two
  batched matrix products over (x_t, h_{t-1}), and the LSTM cell state is the elementwise linear
  recurrence c_t = f_t ⊙ c_{t-1} + i_t ⊙ g_t. Torch's own cells only (`CellType.is_standard`).
"""
from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import Tensor
from torch.nn.utils._expanded_weights import ExpandedWeight

from gatescope.kinds import GRU, LSTM, RNN, CellType
from gatescope.recorder.activations import apply
from gatescope.recorder.gemm import Linear, linear

Tap = Callable[[str, Tensor], Tensor]
"""``tap(kind, value) -> value``: sees every quantity of a step, returns what the step goes on with."""


class CellWeights(NamedTuple):
    """One layer and direction of an LSTM, GRU or RNN, in torch's names (biases, w_hr and w_ch may be None)."""

    weight_ih: Tensor  # (G*H, I), G = the cell type's row blocks (4 LSTM, 3 GRU or coupled LSTM, 1 RNN)
    weight_hh: Tensor  # (G*H, P), P = proj_size or H
    bias_ih: Tensor | None  # (G*H,)
    bias_hh: Tensor | None  # (G*H,)
    weight_hr: Tensor | None = None  # (P, H), LSTM with proj_size only
    weight_ch: Tensor | None = None  # (K*H,), peephole LSTM only: K = len(cell.peephole_kinds)


class StepWeights(NamedTuple):
    """The products a step needs, prepared once per layer (see gatescope.recorder.gemm)."""

    # LSTM, RNN: h -> W_hh h (both biases are folded into the precomputed input projection);
    # GRU: h -> W_hh h + b_hh (b_hn sits inside the reset product, so it stays here)
    main: Linear
    hr: Linear | None = None  # m -> W_hr m, LSTM with proj_size only
    peep: dict[str, Tensor] | None = None  # gate -> its peephole weights (H,), peephole LSTM only


def folds_bias_hh(cell: CellType, w: CellWeights) -> bool:
    """Whether b_hh is folded into the input projection (LSTM, RNN; not the GRU, whose b_hn the reset
    gate multiplies, nor per-sample weights, which know no op but F.linear)."""
    return cell.name != "GRU" and not per_sample(w)


def step_weights(w: CellWeights, cell: CellType) -> StepWeights:
    hr = None if w.weight_hr is None else linear(w.weight_hr)
    peep = None
    if w.weight_ch is not None:
        peep = dict(zip(cell.peephole_kinds, w.weight_ch.chunk(len(cell.peephole_kinds))))  # gate -> (H,)
    return StepWeights(linear(w.weight_hh, None if folds_bias_hh(cell, w) else w.bias_hh), hr, peep)


def per_sample(w: CellWeights) -> bool:
    """Whether the weights are torch's ExpandedWeights (``call_for_per_sample_grads``). They know one
    product, F.linear with the batch first, and no other op on them: b_hh is then not folded into the
    input projection (a step adds it), and the input projection takes the batch first."""
    return isinstance(w.weight_ih, ExpandedWeight)


def input_projection(x: Tensor, w: CellWeights, fold_bias_hh: bool) -> Tensor:
    """``W_ih x + b_ih`` (+ ``b_hh`` when it may be folded in) for every row of x (T, B, I): one GEMM."""
    bias = w.bias_ih
    if per_sample(w):
        return linear(w.weight_ih, bias)(x.transpose(0, 1)).transpose(0, 1)  # (B, T, I) -> (T, B, G*H)
    if fold_bias_hh and w.bias_hh is not None:
        bias = bias + w.bias_hh
    out = linear(w.weight_ih, bias)(x.reshape(-1, x.shape[-1]))  # (T*B, G*H)
    return out.reshape(*x.shape[:-1], out.shape[-1])  # (T, B, G*H); explicit: T*B may be 0


def lstm_step(
    xw: Tensor, h: Tensor, c: Tensor, w: StepWeights, tap: Tap, cell: CellType = LSTM
) -> tuple[Tensor, Tensor]:
    """One LSTM step. xw: (B, G*H) from `input_projection(fold_bias_hh=True)`; h: (B, P); c: (B, H)."""
    if not cell.is_standard:
        return _variant_lstm_step(w.main(h, xw), c, w, tap, cell)
    gates = w.main(h, xw)  # (B, 4H) = W_ih x + b_ih + b_hh + W_hh h
    i, f, _, o = gates.sigmoid().chunk(4, 1)  # (B, H) views: one op each for all four, at batch 1 it counts
    i, f = tap("i", i), tap("f", f)
    g = tap("g", gates.chunk(4, 1)[2].tanh())
    o = tap("o", o)
    c = tap("c", torch.addcmul(f * c, i, g))  # (B, H)
    m = o * c.tanh()
    if w.hr is None:
        return tap("h", m), c
    return tap("h", w.hr(tap("m", m))), c  # (B, P)


def _variant_lstm_step(gates: Tensor, c: Tensor, w: StepWeights, tap: Tap, cell: CellType) -> tuple[Tensor, Tensor]:
    """An LSTM step of any variant (see the module docstring). gates: (B, G*H) pre-activations with biases."""
    pre = dict(zip(cell.blocks, gates.chunk(len(cell.blocks), 1)))  # kind -> (B, H)

    def gate(kind: str, seen: Tensor) -> Tensor:  # seen: the cell state its peephole reads
        x = pre[kind]
        if kind == "f" and cell.forget_bias:
            x = x + cell.forget_bias
        if w.peep is not None:
            x = torch.addcmul(x, w.peep[kind], seen)
        return apply(cell.gate_activation, _clipped(x, cell.clip))

    if cell.coupled is None:
        i = tap("i", gate("i", c))
        f = tap("f", gate("f", c))
    else:  # the source gate computed, the derived one 1 minus it as the step uses it (after any edit)
        derived, source = cell.coupled
        values = {source: tap(source, gate(source, c))}
        values[derived] = tap(derived, 1 - values[source])
        i, f = values["i"], values["f"]
    g = tap("g", apply(cell.activation, _clipped(pre["g"], cell.clip)))
    c = torch.addcmul(f * c, i, g)  # (B, H)
    c = tap("c", c if cell.cell_clip is None else c.clamp(-cell.cell_clip, cell.cell_clip))
    o = tap("o", gate("o", c))
    m = o * apply(cell.output_activation, c)
    if w.hr is None:
        return tap("h", m), c
    h = w.hr(tap("m", m))  # (B, P)
    return tap("h", h if cell.proj_clip is None else h.clamp(-cell.proj_clip, cell.proj_clip)), c


def _clipped(x: Tensor, limit: float | None) -> Tensor:
    return x if limit is None else x.clamp(-limit, limit)


def gru_step(xw: Tensor, h: Tensor, w: "StepWeights | ResetBeforeWeights", tap: Tap, cell: CellType = GRU) -> Tensor:
    """One GRU step, torch's (`StepWeights`) or reset-before (`ResetBeforeWeights`), of any variant.
    xw: (B, 3H) from `input_projection(fold_bias_hh=False)`; h: (B, H)."""
    hidden = h.shape[-1]
    if cell.reset_after:
        gh = w.main(h)  # (B, 3H) = W_hh h + b_hh
        rz = xw[:, : 2 * hidden] + gh[:, : 2 * hidden]
    else:
        rz = xw[:, : 2 * hidden] + w.rz(h)  # (B, 2H)
    rz = apply(cell.gate_activation, _clipped(rz, cell.clip))
    r = tap("r", rz[:, :hidden])
    z = tap("z", rz[:, hidden:])
    if cell.reset_after:
        n = torch.addcmul(xw[:, 2 * hidden :], r, gh[:, 2 * hidden :])
    else:
        n = xw[:, 2 * hidden :] + w.n(r * h)
    n = tap("n", apply(cell.activation, _clipped(n, cell.clip)))
    return tap("h", torch.lerp(n, h, z))  # (1 - z) n + z h


def rnn_step(xw: Tensor, h: Tensor, w: StepWeights, tap: Tap, cell: CellType = RNN) -> Tensor:
    """One RNN step. xw: (B, H) from `input_projection(fold_bias_hh=True)`; h: (B, H)."""
    return tap("h", apply(cell.activation, _clipped(w.main(h, xw), cell.clip)))


def lstm_replay(
    x: Tensor, out: Tensor, h0: Tensor, c0: Tensor, w: CellWeights
) -> dict[str, Tensor]:
    """Every LSTM quantity for all T steps from the native outputs.

    x: (T, B, I) input; out: (T, B, P) every h_t from the native kernel; h0 (B, P), c0 (B, H).
    Returns kind -> (T, B, ·), with h = ``out``.
    """
    h_prev = torch.cat([h0.unsqueeze(0), out[:-1]])  # (T, B, P)
    gates = input_projection(x, w, fold_bias_hh=True)  # (T, B, 4H)
    gates = gates + linear(w.weight_hh)(h_prev.reshape(-1, h_prev.shape[-1])).reshape(gates.shape)
    hidden = c0.shape[-1]
    sig = gates.sigmoid()
    i, f, o = sig[..., :hidden], sig[..., hidden : 2 * hidden], sig[..., 3 * hidden :]
    g = gates[..., 2 * hidden : 3 * hidden].tanh()
    ig = i * g  # (T, B, H)
    c = torch.empty_like(ig)
    c_prev = c0
    for t in range(c.shape[0]):  # the elementwise recurrence: one fused kernel per step
        c_prev = torch.addcmul(ig[t], f[t], c_prev, out=c[t])
    m = o * c.tanh()
    quantities = {"i": i, "f": f, "g": g, "o": o, "c": c}
    if w.weight_hr is not None:
        quantities["m"] = m
    quantities["h"] = out
    return quantities


def gru_replay(x: Tensor, out: Tensor, h0: Tensor, w: CellWeights) -> dict[str, Tensor]:
    """Every GRU quantity for all T steps from the native outputs (x (T, B, I), out (T, B, H))."""
    h_prev = torch.cat([h0.unsqueeze(0), out[:-1]])  # (T, B, H)
    gx = input_projection(x, w, fold_bias_hh=False)  # (T, B, 3H)
    gh = linear(w.weight_hh, w.bias_hh)(h_prev.reshape(-1, h_prev.shape[-1])).reshape(gx.shape)
    hidden = h0.shape[-1]
    rz = (gx[..., : 2 * hidden] + gh[..., : 2 * hidden]).sigmoid()
    r, z = rz[..., :hidden], rz[..., hidden:]
    n = torch.addcmul(gx[..., 2 * hidden :], r, gh[..., 2 * hidden :]).tanh()
    return {"r": r, "z": z, "n": n, "h": out}


class ResetBeforeWeights(NamedTuple):
    """The reset-before GRU's recurrent products: r and z read h, n reads r ⊙ h."""

    rz: Linear  # h -> W_h{r,z} h + b_h{r,z}, (B, 2H)
    n: Linear  # r ⊙ h -> W_hn (r ⊙ h) + b_hn, (B, H)


def reset_before_weights(w: CellWeights) -> ResetBeforeWeights:
    hidden = w.weight_hh.shape[1]
    bias = (None, None) if w.bias_hh is None else (w.bias_hh[: 2 * hidden], w.bias_hh[2 * hidden :])
    return ResetBeforeWeights(linear(w.weight_hh[: 2 * hidden], bias[0]), linear(w.weight_hh[2 * hidden :], bias[1]))


