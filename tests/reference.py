"""An independent reference for the tests: torch's documented LSTM/GRU equations, one sequence,
one timestep, one gate at a time, written without any of gatescope's code (and the reset-before
GRU of Cho et al. 2014 for a module whose ``reset_after`` is False).

`reference_run(module, x, edit=None)` returns {quantity name: (T, H) tensor} for one unbatched
sequence x (T, I), and the final output. ``edit(name, t, value) -> value`` lets a test intervene.
"""
from __future__ import annotations

import torch
from torch import nn


def _params(module: nn.Module, layer: int, direction: str):
    sfx = f"_l{layer}" + ("_reverse" if direction == "bwd" else "")
    get = lambda n: getattr(module, n + sfx, None)  # noqa: E731
    return get("weight_ih"), get("weight_hh"), get("bias_ih"), get("bias_hh"), get("weight_hr")


def reference_run(module: nn.Module, x: torch.Tensor, path: str = "rnn", edit=None):
    """Quantities of every layer and direction for x (T, I) with zero initial state."""
    edit = edit or (lambda name, t, v: v)
    is_lstm = isinstance(module, nn.LSTM)
    hidden = module.hidden_size
    dirs = ("fwd", "bwd") if module.bidirectional else ("fwd",)
    out = {}
    layer_in = x
    steps = x.shape[0]
    for layer in range(module.num_layers):
        outs = []
        for d in dirs:
            w_ih, w_hh, b_ih, b_hh, w_hr = _params(module, layer, d)
            b_ih = torch.zeros(w_ih.shape[0]) if b_ih is None else b_ih
            b_hh = torch.zeros(w_hh.shape[0]) if b_hh is None else b_hh
            h = torch.zeros(w_hh.shape[1])
            c = torch.zeros(hidden)
            kinds = {}
            hs = [None] * steps
            order = range(steps - 1, -1, -1) if d == "bwd" else range(steps)
            for t in order:
                xt = layer_in[t]
                name = lambda k: f"{path}.l{layer}.{d}.{k}"  # noqa: E731
                rows = lambda k: slice(k * hidden, (k + 1) * hidden)  # noqa: E731
                pre = lambda k: w_ih[rows(k)] @ xt + b_ih[rows(k)] + w_hh[rows(k)] @ h + b_hh[rows(k)]  # noqa: E731
                vals = {}
                if is_lstm:
                    vals["i"] = edit(name("i"), t, torch.sigmoid(pre(0)))
                    vals["f"] = edit(name("f"), t, torch.sigmoid(pre(1)))
                    vals["g"] = edit(name("g"), t, torch.tanh(pre(2)))
                    vals["o"] = edit(name("o"), t, torch.sigmoid(pre(3)))
                    c = edit(name("c"), t, vals["f"] * c + vals["i"] * vals["g"])
                    vals["c"] = c
                    m = vals["o"] * torch.tanh(c)
                    if w_hr is not None:
                        vals["m"] = m = edit(name("m"), t, m)
                        m = w_hr @ m
                    h = edit(name("h"), t, m)
                else:
                    r = edit(name("r"), t, torch.sigmoid(w_ih[rows(0)] @ xt + b_ih[rows(0)] + w_hh[rows(0)] @ h + b_hh[rows(0)]))
                    z = edit(name("z"), t, torch.sigmoid(w_ih[rows(1)] @ xt + b_ih[rows(1)] + w_hh[rows(1)] @ h + b_hh[rows(1)]))
                    if getattr(module, "reset_after", True):
                        n = edit(name("n"), t, torch.tanh(w_ih[rows(2)] @ xt + b_ih[rows(2)] + r * (w_hh[rows(2)] @ h + b_hh[rows(2)])))
                    else:  # the original GRU of Cho et al. 2014: the reset gate multiplies h first
                        n = edit(name("n"), t, torch.tanh(w_ih[rows(2)] @ xt + b_ih[rows(2)] + w_hh[rows(2)] @ (r * h) + b_hh[rows(2)]))
                    vals.update(r=r, z=z, n=n)
                    h = edit(name("h"), t, (1 - z) * n + z * h)
                vals["h"] = h
                hs[t] = h
                for k, v in vals.items():
                    kinds.setdefault(k, [None] * steps)[t] = v
            for k, v in kinds.items():
                out[f"{path}.l{layer}.{d}.{k}"] = torch.stack(v)
            outs.append(torch.stack(hs))
        layer_in = torch.cat(outs, dim=-1)
    return out, layer_in
