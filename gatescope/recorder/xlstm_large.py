"""The xlstm package's large mLSTM (``xlstm.xlstm_large``: the xLSTM-7B architecture, Beck et al. 2025,
"xLSTM 7B: A Recurrent LLM for Fast and Efficient Inference"), recorded through its own layer.

Its ``mLSTMLayer`` projects q, k, v, the output gate's pre-activation and, per head, the input and forget
gates' pre-activations soft-capped at ``gate_soft_cap`` (cap * tanh(x / cap)); an ``mLSTMBackend`` module
(the mlstm_kernels package: chunkwise, parallel or step-by-step kernels, native PyTorch or Triton) turns
them into h~. During a recorded forward the backend runs the recurrent form the kernels implement
(mlstm_kernels' ``mlstm_recurrent_step__native_fw``: q scaled by 1/sqrt(DQK), states from zero or the given
``c_initial, n_initial, m_initial``), one step at a time through `gatescope.recorder.xlstm.mlstm_step`, so its
output equals the chunkwise kernel's to float rounding. The kinds are the mLSTM's (gatescope.kinds.MLSTM):
per head s, i, f; v the matrix memory C (DQK x DV per head, on request); d the normaliser (DQK per head);
o = σ(o~) (the layer's ``ogate_act_fn``, a sigmoid here) and h = o * MultiHeadNorm(h~), what ``out_proj``
reads. transformers' xLSTM builds its blocks from these classes when the xlstm package is installed.
"""
from __future__ import annotations

import functools
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gatescope.kinds import MLSTM
from gatescope.recorder.engine import ObserverFor, Taps
from gatescope.recorder.packaged import Packaged, shaped_tap
from gatescope.recorder.xlstm import mlstm_step, run_tapped


def _recurrent(taps: Taps, backend: nn.Module, q: Tensor, k: Tensor, v: Tensor, i: Tensor, f: Tensor,
               c_initial: Tensor | None = None, n_initial: Tensor | None = None, m_initial: Tensor | None = None,
               return_last_states: bool | None = None, mode: str | None = None) -> Any:
    """``mLSTMBackend.forward`` as its recurrent form, tapped: q, k (B, NH, S, DQK), v (B, NH, S, DV), i, f
    (B, NH, S) -> h~ (B, NH, S, DV), with the last states (C, n, m) where the backend returns them."""
    config = backend.config
    mode = mode or config.mode
    batch, heads, length, dk = q.shape
    if "train" in mode and "with_padding" not in config.mode and length % config.chunk_size:
        return type(backend).forward(backend, q, k, v, i, f, c_initial, n_initial, m_initial,
                                     return_last_states, mode)  # the package's own error
    C = q.new_zeros(batch, heads, dk, v.shape[-1]) if c_initial is None else c_initial
    n = q.new_zeros(batch, heads, dk, 1) if n_initial is None else n_initial[..., None]
    m = q.new_zeros(batch, heads, 1, 1) if m_initial is None else m_initial[..., None]
    log_f = F.logsigmoid(f)  # (B, NH, S)
    out = []
    for t in range(length):
        h, C, n, m = mlstm_step(shaped_tap(taps, t), C, n, m, q[:, :, t, :, None] * dk ** -0.5,
                                k[:, :, t, :, None], v[:, :, t, :, None], i[:, :, t, None, None],
                                log_f[:, :, t, None, None], config.eps)
        out.append(h)
    h = torch.cat(out, dim=2)  # (B, NH, S, DV)
    last = (C, n[..., 0], m[..., 0])
    keep = "inference" in mode or (config.return_last_states if return_last_states is None else return_last_states)
    return (h, last) if keep else h


def _forward(layer: nn.Module, observer_for: ObserverFor, x: Tensor, *args: Any, **kwargs: Any) -> Any:
    """The layer's own forward with its backend recurrent and tapped, and taps on o and h. x (B, S, E)."""
    taps = Taps(observer_for(0, "fwd"), x.shape[1])
    backend = layer.mlstm_backend
    return run_tapped(layer, taps, backend, "forward", functools.partial(_recurrent, taps, backend), "out_proj",
                      lambda: type(layer).forward(layer, x, *args, **kwargs))


def _width(layer: nn.Module, kind: str) -> int:
    heads = layer.config.num_heads
    return {"i": heads, "f": heads, "s": heads, "d": layer.qk_dim,
            "v": layer.qk_dim * layer.v_dim // heads}.get(kind, layer.v_dim)


def _info(layer: nn.Module) -> dict[str, Any]:
    return {"cell": MLSTM.name, "input_size": layer.config.embedding_dim, "hidden_size": layer.v_dim,
            "num_heads": layer.config.num_heads, "num_layers": 1, "bidirectional": False}


LARGE_MLSTM_LAYERS = Packaged("xlstm.xlstm_large", ("mLSTMLayer",), MLSTM, _width, _info, _forward,
                              on_request=("v",))
