"""An independent reference for the modern cells: the papers' equations, one sequence at a time, from the
weights, written without gatescope's code or the packages' forward functions (only their parameters).

Quantities are keyed by gatescope's symbols (gatescope.kinds): the papers' z, n, m of the sLSTM are g, d,
s; the mLSTM's n, m, C are d, s, v; minGRU's z is x; minLSTM's f', i' are p, t.

- `slstm_reference`: Beck et al. 2024's sLSTM with exponential input gate and the stabiliser, per step, from
  an sLSTM cell's external weights (recurrent_kernel (NH, DH, 4, DH), bias (NH, 4, DH)); `slstm_layer_pre`
  gives the pre-activations an sLSTMLayer feeds it (its module named ``fgate`` computes i, ``igate`` f).
- `mlstm_reference`: an mLSTMLayer from the parallel form's definitions: every state as a sum over the
  inputs j <= t weighted by exp(i~_j + sum_{j<l<=t} log σ(f~_l) - m_t), m_t the largest such exponent.
- `mingru_reference`, `minlstm_reference`: Feng et al. 2024's minGRU / minLSTM with minGRU-pytorch's g.

``edit(kind, t, value) -> value`` lets a test intervene where a reference takes it.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def _keep(kind, t, value):
    return value


def headwise(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """xlstm's LinearHeadwiseExpand without bias: x (T, NH*I), weight (NH, O, I) -> (T, NH*O)."""
    heads, out, inp = weight.shape
    parts = [x[:, h * inp:(h + 1) * inp] @ weight[h].T for h in range(heads)]
    return torch.stack(parts, 1).reshape(x.shape[0], heads * out)


def causal_conv(x: torch.Tensor, conv: torch.nn.Conv1d) -> torch.Tensor:
    """A depthwise causal convolution over time: x (T, C), conv.weight (C, 1, K)."""
    k = conv.weight.shape[-1]
    padded = torch.cat([x.new_zeros(k - 1, x.shape[1]), x])
    out = torch.stack([(padded[t:t + k] * conv.weight[:, 0, :].T).sum(0) for t in range(x.shape[0])])
    return out if conv.bias is None else out + conv.bias


def slstm_layer_pre(layer, x: torch.Tensor) -> torch.Tensor:
    """x (T, E) -> (T, 4, H): what sLSTMLayer feeds its cell, in the cell's order i, f, z, o."""
    xc = F.silu(causal_conv(x, layer.conv1d.conv)) if layer.config.conv1d_kernel_size > 0 else x
    return torch.stack([headwise(xc, layer.fgate.weight), headwise(xc, layer.igate.weight),  # fgate -> i
                        headwise(x, layer.zgate.weight), headwise(x, layer.ogate.weight)], 1)


def slstm_reference(cell, pre: torch.Tensor, state: torch.Tensor | None = None, edit=_keep) -> dict:
    """pre (T, 4, H), state (4, H) = (h, c, n, m) or zeros -> kind -> (T, H)."""
    heads = cell.config.num_heads
    dh = cell.config.hidden_size // heads
    R = cell.recurrent_kernel[:]  # (NH, DH_in, 4, DH_out)
    bias = cell.bias[:].permute(1, 0, 2).reshape(4, -1)  # (4, H)
    h, c, n, m = state if state is not None else torch.zeros(4, heads * dh)
    out = {k: [] for k in "ifgocdsh"}
    for t in range(pre.shape[0]):
        rec = torch.stack([h[k * dh:(k + 1) * dh] @ R[k].reshape(dh, 4 * dh) for k in range(heads)])  # (NH, 4*DH)
        raw = pre[t] + rec.reshape(heads, 4, dh).permute(1, 0, 2).reshape(4, -1) + bias
        logf = F.logsigmoid(raw[1])
        fresh = state is None and t == 0  # a zero state: the stabiliser starts at i~
        m_new = edit("s", t, raw[0] if fresh else torch.maximum(raw[0], logf + m))
        i = edit("i", t, torch.exp(raw[0] - m_new))
        f = edit("f", t, torch.exp(logf + m - m_new))
        z = edit("g", t, torch.tanh(raw[2]))
        o = edit("o", t, torch.sigmoid(raw[3]))
        c = edit("c", t, f * c + i * z)
        n = edit("d", t, f * n + i)
        h = edit("h", t, o * c / n)
        m = m_new
        for kind, value in zip("ifgocdsh", (i, f, z, o, c, n, m, h)):
            out[kind].append(value)
    return {k: torch.stack(v) for k, v in out.items()}


def mlstm_reference(layer, x: torch.Tensor, eps: float = 1e-6) -> dict:
    """An mLSTMLayer on x (T, E) -> kind -> (T, ·) (C flattened head-major, rows = key dims), the layer's
    output y, and the inputs of the recurrence: query, key, value (T, D), igate, fgate (T, NH) pre-activations."""
    cell = layer.mlstm_cell
    inner = layer.config._inner_embedding_dim
    heads = cell.config.num_heads
    dh = inner // heads
    up = x @ layer.proj_up.weight.T
    xm, zb = up[:, :inner], up[:, inner:]
    xc = F.silu(causal_conv(xm, layer.conv1d.conv))
    q, k, v = headwise(xc, layer.q_proj.weight), headwise(xc, layer.k_proj.weight), headwise(xm, layer.v_proj.weight)
    qkv = torch.cat([q, k, v], 1)
    ip = qkv @ cell.igate.weight.T + cell.igate.bias  # (T, NH)
    fp = qkv @ cell.fgate.weight.T + cell.fgate.bias
    logf = F.logsigmoid(fp)
    out = {key: [] for key in ("i", "f", "s", "d", "v", "u", "o", "h")}  # u: the retrieval h~
    m_prev = torch.full((heads,), -math.inf)
    for t in range(x.shape[0]):
        logw = torch.stack([logf[j + 1:t + 1].sum(0) + ip[j] for j in range(t + 1)])  # (t+1, NH)
        m = logw.max(0).values
        hs, ns, Cs = [], [], []
        for hd in range(heads):
            cols = slice(hd * dh, (hd + 1) * dh)
            w = torch.exp(logw[:, hd] - m[hd])  # (t+1,)
            ks = k[:t + 1, cols] / math.sqrt(dh)
            C = (w[:, None, None] * ks[:, :, None] * v[:t + 1, cols][:, None, :]).sum(0)  # (DH, DH)
            nv = (w[:, None] * ks).sum(0)
            hs.append(q[t, cols] @ C / (torch.maximum((q[t, cols] @ nv).abs(), torch.exp(-m[hd])) + eps))
            ns.append(nv)
            Cs.append(C.reshape(-1))
        normed = torch.cat([(u - u.mean()) / torch.sqrt(u.var(unbiased=False) + cell.outnorm.eps) for u in hs])
        o = F.silu(zb[t])
        h = (normed * (1 + cell.outnorm.weight) + layer.learnable_skip * xc[t]) * o
        values = (torch.exp(ip[t] - m), torch.exp(logf[t] + m_prev - m), m, torch.cat(ns), torch.cat(Cs),
                  torch.cat(hs), o, h)
        for key, value in zip(out, values):
            out[key].append(value)
        m_prev = m
    res = {key: torch.stack(value) for key, value in out.items()}
    res["y"] = res["h"] @ layer.proj_down.weight.T
    res.update(query=q, key=k, value=v, igate=ip, fgate=fp)
    return res


def g(x: torch.Tensor) -> torch.Tensor:
    """minGRU-pytorch's g (the paper's appendix B.3): x + 0.5 for x >= 0, σ(x) below."""
    return torch.where(x >= 0, x + 0.5, torch.sigmoid(x))


def mingru_reference(module, x: torch.Tensor, h0: torch.Tensor | None = None, edit=_keep) -> dict:
    """x (T, dim) -> {x (the gate z), n (h~), h}: (T, D)."""
    hidden, gate = (x @ module.to_hidden_and_gate.weight.T).chunk(2, -1)
    h = torch.zeros(hidden.shape[-1]) if h0 is None else h0
    out = {"x": [], "n": [], "h": []}
    for t in range(x.shape[0]):
        z = edit("x", t, torch.sigmoid(gate[t]))
        candidate = edit("n", t, g(hidden[t]))
        h = edit("h", t, (1 - z) * h + z * candidate)
        for kind, value in zip(out, (z, candidate, h)):
            out[kind].append(value)
    return {k: torch.stack(v) for k, v in out.items()}


def minlstm_reference(module, x: torch.Tensor, h0: torch.Tensor | None = None, edit=_keep) -> dict:
    """x (T, dim) -> {f, i, p (f'), t (i'), n (h~), h}: (T, D)."""
    hidden, fg, ig = (x @ module.to_hidden_and_f_i_gate.weight.T).chunk(3, -1)
    h = torch.zeros(hidden.shape[-1]) if h0 is None else h0
    out = {k: [] for k in "fiptnh"}
    for t in range(x.shape[0]):
        f = edit("f", t, torch.sigmoid(fg[t]))
        i = edit("i", t, torch.sigmoid(ig[t]))
        fp = edit("p", t, f / (f + i))
        ip = edit("t", t, i / (f + i))
        candidate = edit("n", t, g(hidden[t]))
        h = edit("h", t, fp * h + ip * candidate)
        for kind, value in zip(out, (f, i, fp, ip, candidate, h)):
            out[kind].append(value)
    return {k: torch.stack(v) for k, v in out.items()}


def mlstm_large_reference(layer, x: torch.Tensor) -> dict:
    """xlstm_large's mLSTMLayer (weight_mode "single") on x (T, E): per step from sums over the inputs j <= t
    (no recurrence), the states starting at zero with stabiliser 0 as its kernels' do: m_t is the largest of
    sum_{l<=t} log σ(f~_l) (the zero initial state's weight) and i~_j + sum_{j<l<=t} log σ(f~_l)."""
    config = layer.config
    heads = config.num_heads
    cap = config.gate_soft_cap
    q, k, v = x @ layer.q.weight.T, x @ layer.k.weight.T, x @ layer.v.weight.T
    ip = cap * torch.tanh((x @ layer.igate_preact.weight.T + layer.igate_preact.bias) / cap)  # (T, NH)
    fp = cap * torch.tanh((x @ layer.fgate_preact.weight.T + layer.fgate_preact.bias) / cap)
    logf = F.logsigmoid(fp)
    dk, dv = q.shape[1] // heads, v.shape[1] // heads
    out = {key: [] for key in ("i", "f", "s", "d", "v", "o", "h")}
    m_prev = torch.zeros(heads)
    for t in range(x.shape[0]):
        logw = torch.stack([logf[j + 1:t + 1].sum(0) + ip[j] for j in range(t + 1)])  # (t+1, NH)
        m = torch.maximum(logw.max(0).values, logf[:t + 1].sum(0))
        hs, ns, Cs = [], [], []
        for hd in range(heads):
            qk, vv = slice(hd * dk, (hd + 1) * dk), slice(hd * dv, (hd + 1) * dv)
            w = torch.exp(logw[:, hd] - m[hd])  # (t+1,)
            C = (w[:, None, None] * k[:t + 1, qk][:, :, None] * v[:t + 1, vv][:, None, :]).sum(0)  # (DK, DV)
            nv = (w[:, None] * k[:t + 1, qk]).sum(0)
            qs = q[t, qk] / math.sqrt(dk)
            hs.append(qs @ C / (torch.maximum((qs @ nv).abs(), torch.exp(-m[hd])) + layer.mlstm_backend.config.eps))
            ns.append(nv)
            Cs.append(C.reshape(-1))
        eps = layer.multihead_norm.eps
        normed = torch.cat([(u - u.mean()) / torch.sqrt(u.var(unbiased=False) + eps) for u in hs])
        normed = normed * layer.multihead_norm.weight
        o = torch.sigmoid(x[t] @ layer.ogate_preact.weight.T)
        values = (torch.exp(ip[t] - m), torch.exp(logf[t] + m_prev - m), m, torch.cat(ns), torch.cat(Cs), o,
                  o * normed)
        for key, value in zip(out, values):
            out[key].append(value)
        m_prev = m
    res = {key: torch.stack(value) for key, value in out.items()}
    res["y"] = res["h"] @ layer.out_proj.weight.T
    return res
