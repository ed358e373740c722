"""captum attribution through gatescope's recorded modules: completeness on CPU (and CUDA)."""
import pytest
import torch
from tests.reference import reference_run
from torch import nn

from gatescope import Intervention, record
from gatescope.analysis.attribution import (
    gradient_x_activation,
    logit_difference_target,
    token_attributions,
    unit_attributions,
)


class LM(nn.Module):
    def __init__(self, cell=nn.LSTM, vocab=11, hidden=6):
        super().__init__()
        self.embedding = nn.Embedding(vocab, 4)
        self.rnn = cell(4, hidden, batch_first=True)
        self.decoder = nn.Linear(hidden, vocab)

    def forward(self, ids):
        return self.decoder(self.rnn(self.embedding(ids))[0])


def setup(cell, device="cpu"):
    torch.manual_seed(0)
    model = LM(cell).to(device).eval()
    ids = torch.randint(1, 11, (3, 5), device=device)
    target = logit_difference_target(-1, [1, 2, 3], [4, 5, 6])
    return model, ids, target


@pytest.mark.parametrize("cell", [nn.LSTM, nn.GRU])
def test_token_attributions_are_complete(cell):
    model, ids, target = setup(cell)
    attr, delta = token_attributions(model, ids, target, baseline_id=0, n_steps=64)
    with torch.no_grad():
        expected = target(model(ids)) - target(model(torch.zeros_like(ids)))
    assert attr.shape == (3, 5)
    assert torch.allclose(attr.sum(1), expected, atol=1e-4)
    assert delta.abs().max() < 1e-4


@pytest.mark.parametrize("cell,name", [(nn.LSTM, "rnn.l0.fwd.f"), (nn.LSTM, "rnn.l0.fwd.h"), (nn.GRU, "rnn.l0.fwd.z")])
def test_unit_attributions_are_complete(cell, name):
    model, ids, target = setup(cell)
    attr, delta = unit_attributions(model, ids, target, name, n_steps=64)
    with torch.no_grad(), record(model, interventions=[Intervention(name, None, "set", 0.0)]):
        zeroed = target(model(ids))
    with torch.no_grad():
        full = target(model(ids))
    assert attr.shape == (3, 5, 6)
    assert torch.allclose(attr.sum((1, 2)), full - zeroed, atol=1e-4)
    assert delta.abs().max() < 1e-4


def test_gradient_x_activation_against_autograd_by_hand():
    model, ids, target = setup(nn.LSTM)
    gxa = gradient_x_activation(model, ids, target, ["rnn.l0.fwd.h"])["rnn.l0.fwd.h"]  # (B, T, H)
    # by hand: h of the last step feeds the decoder directly, so its gradient is W_dec[c] - W_dec[w]
    w = model.decoder.weight.detach()
    with torch.no_grad(), record(model) as rec:
        model(ids)
    h_last = rec.trace["rnn.l0.fwd.h"].reshape(3, 5, 6)[:, -1]
    grad = w[[1, 2, 3]] - w[[4, 5, 6]]
    assert torch.allclose(gxa[:, -1], grad * h_last, atol=1e-5)
    assert gxa.shape == (3, 5, 6)


def test_gradient_x_activation_at_every_step_against_the_reference_loop():
    # the gradient with respect to a value at step t is that of a zero added to it there (tests/reference.py)
    model, ids, target = setup(nn.LSTM)
    names = ["rnn.l0.fwd.h", "rnn.l0.fwd.f"]
    gxa = gradient_x_activation(model, ids, target, names)
    correct, wrong = [1, 2, 3], [4, 5, 6]
    for b in range(ids.shape[0]):
        zeros = {name: torch.zeros(5, 6, requires_grad=True) for name in names}  # (T, H)
        seen = {name: [None] * 5 for name in names}

        def edit(name, t, v, zeros=zeros, seen=seen):
            if name in zeros:
                v = v + zeros[name][t]
                seen[name][t] = v.detach()
            return v

        out = reference_run(model.rnn, model.embedding(ids[b]), "rnn", edit)[1]  # (T, H)
        logits = model.decoder(out[-1])
        (logits[correct[b]] - logits[wrong[b]]).backward()
        for name in names:
            expected = zeros[name].grad * torch.stack(seen[name])  # (T, H)
            assert expected.abs().sum() > 0 and torch.allclose(gxa[name][b], expected, atol=1e-5), name


def test_stock_lstm_tuple_output_breaks_captum_where_gatescope_works():
    # captum #1220 / #745: LayerIntegratedGradients on nn.LSTM itself fails on its (out, (h, c)) tuple
    from captum.attr import LayerIntegratedGradients

    model, ids, target = setup(nn.LSTM)
    lig = LayerIntegratedGradients(lambda x: target(model(x)), model.rnn)
    with pytest.raises(AttributeError, match="tuple"):
        lig.attribute(ids, baselines=torch.zeros_like(ids))
    attr, _ = unit_attributions(model, ids, target, "rnn.l0.fwd.h")  # the same question, answered
    assert torch.isfinite(attr).all() and attr.abs().sum() > 0


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_attribution_on_cuda_in_eval_mode():
    # captum #564: cuDNN's RNN backward refuses eval mode; gatescope's record path does not use it
    model, ids, target = setup(nn.LSTM, "cuda")
    attr, delta = unit_attributions(model, ids, target, "rnn.l0.fwd.c", n_steps=32)
    _, tdelta = token_attributions(model, ids, target, n_steps=32)
    assert attr.is_cuda and delta.abs().max() < 1e-3 and tdelta.abs().max() < 1e-3
    assert not model.training
