"""The sample language models: embedding -> recurrent stack -> linear decoder.

The shape of PyTorch's word_language_model example (``model.py``, RNNModel), batch-first and
without dropout or weight tying, so that every tensor maps to one role of a gatescope checkpoint:
``embedding.weight``, ``rnn.*`` (torch.nn.LSTM, GRU or RNN parameter names), ``decoder.weight/bias``.
A cell with options (``peepholes=True``, ``coupling="forget_from_input"``: Greff et al. 2017's variants)
is gatescope's VariantLSTM / VariantGRU / VariantRNN, which keeps torch's names and adds its own
(gatescope.recorder.variants).
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from gatescope.recorder.variants import VARIANTS

CELLS = {"LSTM": nn.LSTM, "GRU": nn.GRU, "RNN": nn.RNN}  # nn.RNN: h = tanh(W x + b + U h + b')
State = torch.Tensor | tuple[torch.Tensor, torch.Tensor]  # GRU/RNN h, or LSTM (h, c): each (layers, B, H)


class LanguageModel(nn.Module):
    """A next-token language model over a vocabulary of `vocab_size` ids; ``cell_options`` are a
    variant's keyword arguments (none: torch's own module)."""

    def __init__(self, cell: str, vocab_size: int, embedding_size: int, hidden_size: int,
                 num_layers: int = 1, cell_options: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, embedding_size)
        module = VARIANTS[cell] if cell_options else CELLS[cell]
        self.rnn = module(embedding_size, hidden_size, num_layers, batch_first=True, **(cell_options or {}))
        self.decoder = nn.Linear(hidden_size, vocab_size)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """ids (B, T) -> logits (B, T, V), from a zero initial state."""
        return self.forward_with_state(ids)[0]

    def forward_with_state(self, ids: torch.Tensor, state: State | None = None) -> tuple[torch.Tensor, State]:
        """ids (B, T) and an initial state (or None) -> (logits (B, T, V), final state)."""
        output, state = self.rnn(self.embedding(ids), state)  # (B, T, H)
        return self.decoder(output), state
