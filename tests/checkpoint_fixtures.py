"""Checkpoints built in the tests: torch modules saved as safetensors, kept as the reference."""
from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn

WORDS = ["<unk>", "<eos>", "the", "boy", "boys", "greets", "greet", "near", "car", "cars"]


def save(path: Path, modules: dict[str, nn.Module], metadata: dict | None = None, dtype=None) -> Path:
    """Save modules' state dicts under their prefixes ("" = a bare state dict) as one safetensors file."""
    tensors = {}
    for prefix, module in modules.items():
        for key, value in module.state_dict().items():
            value = value.detach().clone().contiguous()
            tensors[f"{prefix}.{key}" if prefix else key] = value.to(dtype) if dtype else value
    meta = {"gatescope": json.dumps(metadata)} if metadata is not None else None
    save_file(tensors, str(path), metadata=meta)
    return path


class LanguageModel(nn.Module):
    """PyTorch's word_language_model shape: encoder (Embedding) -> rnn -> decoder (Linear)."""

    def __init__(self, vocab: int = len(WORDS), emb: int = 6, hidden: int = 8, cell: str = "LSTM", **kwargs):
        super().__init__()
        self.encoder = nn.Embedding(vocab, emb)
        self.rnn = getattr(nn, cell)(emb, hidden, batch_first=True, **kwargs)
        out = (2 if kwargs.get("bidirectional") else 1) * (kwargs.get("proj_size") or hidden)
        self.decoder = nn.Linear(out, vocab)

    def forward(self, ids):
        return self.decoder(self.rnn(self.encoder(ids))[0])


def language_model(tmp_path: Path, metadata: dict | None = None, name: str = "lm.safetensors", **kwargs):
    """A seeded LanguageModel and the checkpoint it was saved to."""
    torch.manual_seed(0)
    reference = LanguageModel(**kwargs).eval()
    path = save(tmp_path / name, {"encoder": reference.encoder, "rnn": reference.rnn, "decoder": reference.decoder},
                metadata)
    return reference, path


def word_metadata(**extra) -> dict:
    return {"format": "gatescope.model", "version": 1, "tokenizer": "word", "vocab": WORDS,
            "unk": "<unk>", "eos": "<eos>", **extra}


def lstm_reference(rnn: nn.LSTM, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Layer 0, forward direction of an LSTM over one sequence x [T, I], written out step by step."""
    w_ih, w_hh = rnn.weight_ih_l0, rnn.weight_hh_l0
    b = rnn.bias_ih_l0 + rnn.bias_hh_l0
    hidden = rnn.hidden_size
    h, c = torch.zeros(hidden), torch.zeros(hidden)
    out = {k: [] for k in "ifgoch"}
    for x_t in x:
        z = w_ih @ x_t + w_hh @ h + b
        i, f, g, o = (z[k * hidden:(k + 1) * hidden] for k in range(4))
        i, f, g, o = torch.sigmoid(i), torch.sigmoid(f), torch.tanh(g), torch.sigmoid(o)
        c = f * c + i * g
        h = o * torch.tanh(c)
        for k, v in zip("ifgoch", (i, f, g, o, c, h)):
            out[k].append(v)
    return {k: torch.stack(v) for k, v in out.items()}


def gru_reference(w_ih, w_hh, b_ih, b_hh, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """A GRU (torch's equations: b_hn inside the reset product) over x [T, I], step by step."""
    hidden = w_hh.shape[1]
    h = torch.zeros(hidden)
    out = {k: [] for k in "rznh"}
    for x_t in x:
        gi, gh = w_ih @ x_t + b_ih, w_hh @ h + b_hh
        r = torch.sigmoid(gi[:hidden] + gh[:hidden])
        z = torch.sigmoid(gi[hidden:2 * hidden] + gh[hidden:2 * hidden])
        n = torch.tanh(gi[2 * hidden:] + r * gh[2 * hidden:])
        h = (1 - z) * n + z * h
        for k, v in zip("rznh", (r, z, n, h)):
            out[k].append(v)
    return {k: torch.stack(v) for k, v in out.items()}
