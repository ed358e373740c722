"""The LSTM and GRU equations (torch's, torch/nn/modules/rnn.py) over decomposed tensors, written once
for every method: each nonlinearity, product and bias goes through the method's rules
(gatescope.analysis.decomposition.rules); weights act on every slot alike (a linear map splits exactly).

LSTM: i, f, g, o = sigma, sigma, tanh, sigma(W_i x + W_h h + b_i + b_h); c = f * c' + i * g; h = o * tanh(c).
GRU (reset after, torch's): r, z = sigma(W_ir x + b_ir + W_hr h + b_hr), sigma(...);
n = tanh(W_in x + b_in + r * (W_hn h + b_hn)); h = (1 - z) * n + z * h'. The reset-before GRU (Cho et al.
2014) has n = tanh(W_in x + b_in + W_hn (r * h') + b_hn). The products are ``gate * source``: f * c',
i * g, o * tanh(c), r * (W_hn h' + b_hn) (r * h' before), (1 - z) * n and z * h'.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from gatescope.analysis.decomposition.rules import ShapleyRules
from gatescope.kinds import module_directions, param_suffix


def _weights(module: nn.Module, layer: int, direction: str, dtype: torch.dtype) -> tuple[Tensor, ...]:
    suffix = param_suffix(layer, direction)
    w_ih = getattr(module, f"weight_ih{suffix}").detach().to(dtype)  # (G*H, I)
    w_hh = getattr(module, f"weight_hh{suffix}").detach().to(dtype)  # (G*H, H)
    zero = torch.zeros(w_ih.shape[0], dtype=dtype)
    b_ih = getattr(module, f"bias_ih{suffix}", None)
    b_hh = getattr(module, f"bias_hh{suffix}", None)
    return (w_ih, w_hh, zero if b_ih is None else b_ih.detach().to(dtype),
            zero if b_hh is None else b_hh.detach().to(dtype))


def _lstm_step(rules: ShapleyRules, w: tuple[Tensor, ...], x: Tensor, h: Tensor, c: Tensor) -> dict[str, Tensor]:
    w_ih, w_hh, b_ih, b_hh = w
    pre = (x @ w_ih.T + h @ w_hh.T + rules.constant(b_ih + b_hh)).chunk(4, -1)  # 4 x (K, N, H)
    i, f, o = (rules.nonlinear(torch.sigmoid, pre[k]) for k in (0, 1, 3))
    g = rules.nonlinear(torch.tanh, pre[2])
    c = rules.settle(rules.product(f, c) + rules.product(i, g))
    h = rules.settle(rules.output(o, rules.nonlinear(torch.tanh, c)))
    return {"i": i, "f": f, "g": g, "o": o, "c": c, "h": h}


def _gru_step(rules: ShapleyRules, w: tuple[Tensor, ...], x: Tensor, h: Tensor, reset_after: bool) -> dict[str, Tensor]:
    w_ih, w_hh, b_ih, b_hh = w
    hidden = w_hh.shape[1]
    gx = (x @ w_ih.T + rules.constant(b_ih)).chunk(3, -1)  # 3 x (K, N, H)
    gh = (h @ w_hh[: 2 * hidden].T + rules.constant(b_hh[: 2 * hidden])).chunk(2, -1)
    r = rules.nonlinear(torch.sigmoid, gx[0] + gh[0])
    z = rules.nonlinear(torch.sigmoid, gx[1] + gh[1])
    w_hn, b_hn = w_hh[2 * hidden:], rules.constant(b_hh[2 * hidden:])
    if reset_after:
        inner = rules.product(r, h @ w_hn.T + b_hn)
    else:
        inner = rules.product(r, h) @ w_hn.T + b_hn
    n = rules.nonlinear(torch.tanh, gx[2] + inner)
    keep = rules.constant(torch.ones(hidden, dtype=x.dtype)) - z
    h = rules.settle(rules.product(keep, n) + rules.product(z, h))
    return {"r": r, "z": z, "n": n, "h": h}


def run_layer(rules: ShapleyRules, module: nn.Module, layer: int, x: Tensor) -> tuple[dict[str, Tensor], Tensor]:
    """One layer of ``module`` over decomposed inputs x (K, N, T, I), every direction -> ({direction.kind:
    (K, N, T, H)}, the layer's output (K, N, T, D*H))."""
    is_lstm = isinstance(module, nn.LSTM)
    hidden, steps = module.hidden_size, x.shape[2]
    recorded, outputs = {}, []
    for direction in module_directions(module):
        w = _weights(module, layer, direction, x.dtype)
        h = x.new_zeros(*x.shape[:2], hidden)  # (K, N, H)
        c = x.new_zeros(*x.shape[:2], hidden)
        values: dict[str, list[Tensor | None]] = {}
        for t in (range(steps - 1, -1, -1) if direction == "bwd" else range(steps)):
            rules.step = t
            if is_lstm:
                out = _lstm_step(rules, w, x[:, :, t], h, c)
                c = out["c"]
            else:
                out = _gru_step(rules, w, x[:, :, t], h, getattr(module, "reset_after", True))
            h = out["h"]
            for kind, value in out.items():
                values.setdefault(kind, [None] * steps)[t] = value if kind in "ch" else rules.resolve(value)
        for kind, seq in values.items():
            recorded[f"{direction}.{kind}"] = torch.stack(seq, 2)  # (K, N, T, H)
        outputs.append(recorded[f"{direction}.h"])
    return recorded, torch.cat(outputs, -1)
