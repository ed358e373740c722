"""decompose equals diagNNose's decomposers (ShapleyDecomposer for "shapley", ContextualDecomposer for "gcd")
at 1e-5 on the sample agreement LSTM and a two-layer LSTM, sentences of up to 8 tokens. diagNNose runs in its
own environment (tests/diagnnose_reference.py): set DIAGNNOSE_PYTHON to its interpreter."""
import os

import pytest
import torch

import gatescope
from gatescope.analysis.decomposition import decompose
from tests.diagnnose_reference import run_diagnnose
from tests.recorder.test_record import TinyLM

PYTHON = os.environ.get("DIAGNNOSE_PYTHON")
pytestmark = pytest.mark.skipif(not PYTHON, reason="diagNNose needs its own environment: set DIAGNNOSE_PYTHON "
                                                   "to its interpreter (see tests/diagnnose_reference.py)")


def _compare(model, ids, method):
    expected, _ = run_diagnnose(PYTHON, model, ids, method)  # (P, B, T, V)
    got = decompose(model, ids, method).logits
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("method", ["shapley", "gcd"])
def test_the_sample_lstm_equals_diagnnose(method):
    model = gatescope.load("sample_models/agreement_lstm.safetensors")
    ids = torch.tensor([model.encode("the boys near the car"), model.encode("the girl behind the dogs")])
    _compare(model, ids, method)


@pytest.mark.slow
@pytest.mark.parametrize("method", ["shapley", "gcd"])
def test_eight_tokens_and_two_layers_equal_diagnnose(method):
    model = gatescope.load("sample_models/agreement_lstm.safetensors")
    ids = torch.tensor([model.encode("the boys near the old cars never greet")])  # 8 tokens: 9 parts
    _compare(model, ids, method)
    torch.manual_seed(0)
    _compare(TinyLM("LSTM", num_layers=2).eval(), torch.randint(0, 11, (2, 8)), method)
