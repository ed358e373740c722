"""Running a loaded model's recurrent chain (gatescope.checkpoints.loader.LoadedModel.forward), one module at a time.

- `ChainState`: every module's recurrent state, carried from one chunk of steps to the next, so that a long
  sequence runs in chunks exactly as in one call (gatescope.runs.chunks).
- `run_layered`: an nn.LSTM / GRU / RNN over a padded batch, through a PackedSequence when lengths differ
  (torch's own convention: padded positions are not run).
- `step_cell`: a cell stepped over the batch, the batch shrinking as sequences end, longest first, as a
  PackedSequence does.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence


@dataclass
class ChainState:
    """The recurrent state of every module of a `LoadedModel`'s chain (module name -> what the module
    returns as its hidden state: h, (h, c), or a variant's own state), for carrying a sequence from one
    chunk of steps to the next: ``model(chunk, state=state)`` starts from it and leaves the state after
    each sequence's last step of the chunk in it. Batch rows are the call's rows."""

    hidden: dict[str, Any] = field(default_factory=dict)

    def keep(self, rows: int) -> None:
        """Keep the first ``rows`` sequences only (those still running into the next chunk)."""
        self.hidden = {name: _rows_of(h, rows) for name, h in self.hidden.items()}


def _rows_of(state: Any, rows: int) -> Any:
    """The first ``rows`` batch rows of a module's state: tensors (L*D, B, H) of layered modules or
    (B, H) of cells, alone or in a tuple."""
    if isinstance(state, tuple):
        return tuple(_rows_of(s, rows) for s in state)
    return state[:rows] if state.dim() == 2 else state[:, :rows]


def run_layered(module: nn.Module, x: torch.Tensor, lengths: torch.Tensor | None,
                 hx: Any = None) -> tuple[torch.Tensor, Any]:
    """An nn.LSTM/GRU (batch_first) over x [B, T, in] from ``hx`` (None: zeros); with lengths, through a
    PackedSequence -> (output [B, T, D*P], the module's final state at each sequence's last step)."""
    if lengths is None:
        return module(x, hx)
    packed = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
    out, hidden = module(packed, hx)
    return pad_packed_sequence(out, batch_first=True, total_length=x.shape[1])[0], hidden


def step_cell(cell: nn.Module, x: torch.Tensor, lengths: torch.Tensor | None,
               hx: Any = None) -> tuple[torch.Tensor, Any]:
    """An LSTMCell/GRUCell stepped over x [B, T, in] from ``hx`` (None: zeros) -> (h for every step
    [B, T, H], the state after each sequence's last step).

    With lengths, step t runs only the sequences longer than t (longest first, as in a
    PackedSequence), so padded positions are never computed; their outputs are zero.
    """
    batch, steps = x.shape[:2]
    order = torch.arange(batch, device=x.device)
    if lengths is not None:
        lengths = lengths.to(x.device)
        order = torch.argsort(lengths, descending=True, stable=True)
        x = x[order]
        if hx is not None:
            hx = tuple(s[order] for s in hx) if isinstance(hx, tuple) else hx[order]
    out = x.new_zeros(batch, steps, cell.hidden_size)  # (B, T, H)
    state, ended = hx, []  # ended: the states of the sequences that stopped, last rows first
    for t in range(steps):
        active = batch if lengths is None else int((lengths > t).sum())
        if active == 0:
            break
        if state is not None and _batch_of(state) > active:
            ended.append(_rows_from(state, active))
            state = _rows_of(state, active)
        state = cell(x[:active, t], state)
        out[:active, t] = state[0] if isinstance(state, tuple) else state
    result = torch.empty_like(out)
    result[order] = out
    final = _unsorted(_cat_rows([state, *reversed(ended)]), order)
    return result, final


def _batch_of(state: Any) -> int:
    return (state[0] if isinstance(state, tuple) else state).shape[0]


def _rows_from(state: Any, rows: int) -> Any:
    return tuple(s[rows:] for s in state) if isinstance(state, tuple) else state[rows:]


def _cat_rows(states: list[Any]) -> Any:
    if isinstance(states[0], tuple):
        return tuple(torch.cat(parts) for parts in zip(*states))
    return torch.cat(states)


def _unsorted(state: Any, order: torch.Tensor) -> Any:
    """Rows in ``order`` (sorted) back to the call's order."""
    if isinstance(state, tuple):
        return tuple(_unsorted(s, order) for s in state)
    result = torch.empty_like(state)
    result[order] = state
    return result
