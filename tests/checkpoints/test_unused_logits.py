"""A layer the loader cannot place (a LayerNorm between the LSTM and the decoder): its recurrent stack runs,
every reader of its logits refuses in one line naming the unused tensors, until the metadata roles declare
them outside the chain (`convert --roles outside=...`)."""
from __future__ import annotations

import functools
import json

import pytest
import torch
from torch import nn

import gatescope
from gatescope.analysis import agreement_metric, set_effect
from gatescope.errors import GatescopeError
from gatescope.inputs.stimuli.agreement import read_stimuli
from tests import cli_helpers
from tests.checkpoint_fixtures import WORDS, save, word_metadata
from tests.cli_helpers import cli

fails = functools.partial(cli_helpers.fails, after_warnings=True)
REFUSED = "cannot compute this model's outputs: the chain does not use ln.bias,ln.weight"


@pytest.fixture
def normed(tmp_path):
    """Embedding -> LSTM -> LayerNorm -> decoder: the loader places all but the LayerNorm."""
    torch.manual_seed(4)
    parts = {"encoder": nn.Embedding(len(WORDS), 6), "rnn": nn.LSTM(6, 8, batch_first=True),
             "ln": nn.LayerNorm(8), "decoder": nn.Linear(8, len(WORDS))}
    with torch.no_grad():
        parts["ln"].weight.uniform_(0.5, 2)
    path = save(tmp_path / "normed.safetensors", parts, word_metadata())
    stimuli = tmp_path / "s.tsv"
    stimuli.write_text("the boy near the cars\tgreets\tgreet\tnounpp_SP\n"
                       "the boys near the car\tgreet\tgreets\tnounpp_PS\n")
    return path, stimuli


def test_the_recurrent_stack_runs_and_every_reader_of_logits_refuses(tmp_path, capsys, normed):
    path, stimuli = normed
    with pytest.warns(gatescope.GatescopeWarning, match="logits"):
        model = gatescope.load(path)
    assert model.runnable and model.unused == ["ln.bias", "ln.weight"]
    ids = torch.tensor([[2, 3, 7]])
    assert model(ids, decode=False).shape == (1, 3, 8)  # the recurrent stack
    with pytest.raises(GatescopeError, match=REFUSED):
        model(ids)
    with pytest.raises(GatescopeError, match="ln.weight"):
        set_effect(agreement_metric(model, read_stimuli(stimuli)), ["rnn.l0.fwd.h:1"], model=model, draws=1)
    assert gatescope.explain(model, ids, "rnn.l0.fwd.c:1", at=1).unit == "rnn.l0.fwd.c:1"

    cli(capsys, "trace", path, "--ids", "2 3 7", "-o", tmp_path / "t.safetensors")  # traced, with the warning
    assert gatescope.load_trace(tmp_path / "t.safetensors")["rnn.l0.fwd.h"].shape == (3, 8)
    for argv in (["agreement", path, "--stimuli", stimuli],
                 ["analyze", "ablate", path, "--stimuli", stimuli, "--units", "rnn.l0.fwd.h:1", "--draws", "1"],
                 ["analyze", "attribute", path, "--text", "the boys near", "--correct", "greet", "--wrong", "greets"]):
        fails(capsys, *argv, match=REFUSED)


def test_tensors_declared_outside_the_chain_are_not_warned_about_and_logits_run(tmp_path, capsys):
    torch.manual_seed(5)
    parts = {"encoder": nn.Embedding(len(WORDS), 6), "rnn": nn.LSTM(6, 8, batch_first=True),
             "decoder": nn.Linear(8, len(WORDS)), "aux_head": nn.Linear(8, 3)}
    path = save(tmp_path / "aux.safetensors", parts, word_metadata(roles={"decoder": "decoder"}))
    with pytest.warns(gatescope.GatescopeWarning), pytest.raises(GatescopeError, match="aux_head.bias,aux_head.weight"):
        gatescope.load(path)(torch.tensor([[2, 3]]))
    out = tmp_path / "declared.safetensors"
    cli(capsys, "convert", path, "-o", out, "--roles", "outside=aux_head")
    result = cli(capsys, "inspect", out, "--json")
    report = json.loads(result.out)
    assert report["unused"] == [] and report["outside"] == ["aux_head.bias", "aux_head.weight"]
    assert "not used" not in result.err
    ids = torch.tensor([[2, 3, 7]])
    with torch.no_grad():
        expected = parts["decoder"](parts["rnn"](parts["encoder"](ids))[0])
    torch.testing.assert_close(gatescope.load(out)(ids), expected)


@pytest.mark.parametrize("outside, message", [
    (["decoder"], "metadata role 'outside' names 'decoder', but the chain uses decoder.bias"),
    (["head"], "metadata role 'outside' names 'head', which is not in the file"),
    ("rnn.weight_ih_l0", "but the chain uses rnn.weight_ih_l0"),
    ([3], "metadata"),
])
def test_outside_must_name_tensors_the_chain_does_not_use(tmp_path, outside, message):
    parts = {"encoder": nn.Embedding(len(WORDS), 6), "rnn": nn.LSTM(6, 8), "decoder": nn.Linear(8, len(WORDS))}
    path = save(tmp_path / "m.safetensors", parts, word_metadata(roles={"outside": outside}))
    with pytest.raises(GatescopeError, match=message.replace("(", r"\(")):
        gatescope.load(path)
