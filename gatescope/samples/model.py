"""The sample language models: embedding -> recurrent stack -> linear decoder.

The shape of PyTorch's word_language_model example (``model.py``, RNNModel), batch-first and
without dropout or weight tying, so that every tensor maps to one role of a gatescope checkpoint:
``embedding.weight``, ``rnn.*`` (torch.nn.LSTM or GRU parameter names), ``decoder.weight/bias``.
"""
from __future__ import annotations

import torch
from torch import nn

CELLS = {"LSTM": nn.LSTM, "GRU": nn.GRU}
State = torch.Tensor | tuple[torch.Tensor, torch.Tensor]  # GRU h, or LSTM (h, c): each (layers, B, H)


class LanguageModel(nn.Module):
    """A next-token language model over a vocabulary of `vocab_size` ids."""

    def __init__(self, cell: str, vocab_size: int, embedding_size: int, hidden_size: int,
                 num_layers: int = 1) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, embedding_size)
        self.rnn = CELLS[cell](embedding_size, hidden_size, num_layers, batch_first=True)
        self.decoder = nn.Linear(hidden_size, vocab_size)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """ids (B, T) -> logits (B, T, V), from a zero initial state."""
        return self.forward_with_state(ids)[0]

    def forward_with_state(self, ids: torch.Tensor, state: State | None = None) -> tuple[torch.Tensor, State]:
        """ids (B, T) and an initial state (or None) -> (logits (B, T, V), final state)."""
        output, state = self.rnn(self.embedding(ids), state)  # (B, T, H)
        return self.decoder(output), state
