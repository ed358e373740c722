"""Learned initial states: named in the metadata roles or recognised by name, the model and its trace start from them."""
from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file
from tests.checkpoint_fixtures import LanguageModel
from tests.cli_helpers import fails

import gatescope

IDS = torch.tensor([[1, 2, 3, 4, 5], [5, 4, 3, 2, 1]])


class LearnedStart(LanguageModel):
    """The toy LM with learned h0 and c0 [layers, 1, hidden], broadcast over the batch."""

    def __init__(self, cell: str = "LSTM", **kwargs) -> None:
        super().__init__(cell=cell, num_layers=2, **kwargs)
        self.h0 = torch.nn.Parameter(torch.randn(2, 1, 8))
        self.c0 = torch.nn.Parameter(torch.randn(2, 1, 8)) if cell == "LSTM" else None

    def forward(self, ids):
        h0 = self.h0.expand(2, ids.shape[0], 8).contiguous()
        hx = h0 if self.c0 is None else (h0, self.c0.expand(2, ids.shape[0], 8).contiguous())
        return self.decoder(self.rnn(self.encoder(ids), hx)[0])


@pytest.mark.parametrize("cell", ["LSTM", "GRU"])
def test_a_state_dict_with_learned_h0_and_c0_runs_and_records_from_them(tmp_path, cell):
    torch.manual_seed(0)
    model = LearnedStart(cell).eval()
    torch.save(model.state_dict(), tmp_path / "model.pt")
    with pytest.warns(UserWarning, match="h0 \\[2, 1, 8\\] is taken as rnn's initial h \\(by its name\\)"):
        loaded = gatescope.load(tmp_path / "model.pt")
    assert loaded.unused == [] and loaded.initial_states["rnn"]["h"] == "h0"
    with torch.no_grad():
        torch.testing.assert_close(loaded(IDS), model(IDS), atol=1e-6, rtol=0)
        with gatescope.record(loaded) as rec:
            loaded(IDS)
        h0 = model.h0[0, 0]
        c0 = None if cell == "GRU" else model.c0[0, 0]
        x = model.encoder(IDS[:1, :1])[0, 0]
        cell_ = (torch.nn.LSTMCell if cell == "LSTM" else torch.nn.GRUCell)(6, 8)
        cell_.load_state_dict({k.removesuffix("_l0"): v for k, v in model.rnn.state_dict().items() if k.endswith("_l0")})
        first = cell_(x[None], (h0[None], c0[None]) if cell == "LSTM" else h0[None])
        first_h = first[0] if cell == "LSTM" else first
        torch.testing.assert_close(rec.trace["rnn.l0.fwd.h"][0], first_h[0], atol=1e-6, rtol=0)


def test_metadata_roles_name_the_initial_state(tmp_path, capsys):
    torch.manual_seed(1)
    model = LearnedStart("LSTM").eval()
    tensors = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    tensors["start_h"], tensors["start_c"] = tensors.pop("h0"), tensors.pop("c0")
    roles = {"roles": {"initial_state": {"rnn": {"h": "start_h", "c": "start_c"}}}}
    save_file(tensors, tmp_path / "m.safetensors", metadata={"gatescope": json.dumps(roles)})
    loaded = gatescope.load(tmp_path / "m.safetensors")
    with torch.no_grad():
        torch.testing.assert_close(loaded(IDS), model(IDS), atol=1e-6, rtol=0)
    bad = {"roles": {"initial_state": {"rnn": {"h": "start_c", "c": "decoder.weight"}}}}
    save_file(tensors, tmp_path / "bad.safetensors", metadata={"gatescope": json.dumps(bad)})
    fails(capsys, "inspect", tmp_path / "bad.safetensors", "--json", match="metadata role 'initial_state' gives rnn c")
