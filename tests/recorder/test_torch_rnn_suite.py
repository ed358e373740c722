"""torch's own ModuleInfo tests for LSTM, GRU, LSTMCell and GRUCell, against every gatescope variant.

The samples, error inputs and reference functions are torch's (torch.testing._internal.common_modules,
installed with torch); the variants (gatescope.LSTM / GRU on the step and replay routes, cells through
the engine's cell entry, torch's modules inside gatescope.record) are tests/torch_rnn_suite.py's. Each
sample must give torch's outputs and gradients, and each error input torch's error type and message.
The upstream test_nn.py / test_modules.py RNN tests run through ``python tests/torch_rnn_suite.py``.
"""
from __future__ import annotations

import re

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import PackedSequence

pytest.importorskip("expecttest", reason="torch.testing._internal needs expecttest (in the test extra)")
from torch.testing._internal.common_modules import ModuleErrorEnum  # noqa: E402
from tests.torch_rnn_suite import module_infos  # noqa: E402

VARIANTS = ("step", "replay", "record")
CASES = [(variant, info) for variant in VARIANTS for info in module_infos(variant)]
IDS = [f"{variant}-{info.module_cls.__name__}" for variant, info in CASES]


def _stock(info) -> type[nn.Module]:
    return next(c for c in (nn.LSTMCell, nn.GRUCell, nn.LSTM, nn.GRU) if issubclass(info.module_cls, c))


def _tensors(value) -> list[torch.Tensor]:
    if isinstance(value, PackedSequence):
        return [value.data]
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, (tuple, list)):
        return [t for v in value for t in _tensors(v)]
    return []


def _pair(info, sample, training: bool):
    torch.manual_seed(0)
    ref = _stock(info)(*sample.constructor_input.args, **sample.constructor_input.kwargs).double()
    ours = info.module_cls(*sample.constructor_input.args, **sample.constructor_input.kwargs).double()
    ours.load_state_dict(ref.state_dict())
    return ref.train(training), ours.train(training)


@pytest.mark.parametrize(("variant", "info"), CASES, ids=IDS)
def test_samples_give_torchs_outputs_and_gradients(variant, info):
    """torch's test_forward (and the gradients against torch's); training mode: the upstream script."""
    samples = info.module_inputs_func(info, device="cpu", dtype=torch.float64, requires_grad=True, training=False)
    for sample in samples:
        ref, ours = _pair(info, sample, False)
        args, kwargs = sample.forward_input.args, sample.forward_input.kwargs
        expected, got = ref(*args, **kwargs), ours(*args, **kwargs)
        for e, g in zip(_tensors(expected), _tensors(got), strict=True):
            torch.testing.assert_close(g, e)
        if sample.reference_fn is not None:  # torch's own check of the unbatched forms
            reference = sample.reference_fn(ours, *args, **kwargs)
            for r, g in zip(_tensors(reference), _tensors(got), strict=True):
                torch.testing.assert_close(g, r)
        if variant == "replay":  # computes without autograd: values only
            continue
        inputs = [t for t in _tensors(args) if t.requires_grad]
        loss = lambda out: sum(t.pow(2).sum() for t in _tensors(out))  # noqa: E731
        expected_grads = torch.autograd.grad(loss(expected), inputs + list(ref.parameters()))
        grads = torch.autograd.grad(loss(got), inputs + list(ours.parameters()))
        for g, e in zip(grads, expected_grads, strict=True):
            torch.testing.assert_close(g, e)
            assert g.is_contiguous() == e.is_contiguous()


@pytest.mark.parametrize(("variant", "info"), CASES, ids=IDS)
def test_error_inputs_raise_torchs_errors(variant, info):
    errors = info.module_error_inputs_func(info, device="cpu", dtype=torch.float32, requires_grad=False,
                                           training=False)
    for error in errors:
        sample = error.module_error_input
        cons = sample.constructor_input
        with pytest.raises(error.error_type, match=error.error_regex) if error.error_on == (
            ModuleErrorEnum.CONSTRUCTION_ERROR
        ) else _no_error():
            module = info.module_cls(*cons.args, **cons.kwargs)
        if error.error_on == ModuleErrorEnum.CONSTRUCTION_ERROR:
            continue
        with pytest.raises(error.error_type) as raised:
            module(*sample.forward_input.args, **sample.forward_input.kwargs)
        assert re.search(error.error_regex, str(raised.value)), (error.error_regex, str(raised.value))


class _no_error:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


@pytest.mark.slow  # seconds each; run by `pytest -m slow tests/recorder/test_torch_rnn_suite.py`
@pytest.mark.parametrize(("variant", "info"), [c for c in CASES if c[0] != "replay"],
                         ids=[i for c, i in zip(CASES, IDS) if c[0] != "replay"])
def test_gradcheck_of_the_first_sample(variant, info):
    """torch's test_grad: numerical against analytical gradients, in float64, on one small sample."""
    sample = info.module_inputs_func(info, device="cpu", dtype=torch.float64, requires_grad=True, training=False)[0]
    _, ours = _pair(info, sample, False)
    params = list(ours.parameters())
    args = sample.forward_input.args
    inputs = [t for t in _tensors(args) if t.requires_grad]

    def fn(*flat):
        with torch.nn.utils.stateless._reparametrize_module(ours, dict(zip(
                [n for n, _ in ours.named_parameters()], flat[len(inputs):]))):
            swapped = _swap(args, dict(zip(map(id, inputs), flat[: len(inputs)])))
            return tuple(_tensors(ours(*swapped)))

    assert torch.autograd.gradcheck(fn, tuple(inputs + [p.detach().requires_grad_() for p in params]))


def _swap(value, by_id: dict[int, torch.Tensor]):
    if isinstance(value, torch.Tensor):
        return by_id.get(id(value), value)
    if isinstance(value, (tuple, list)):
        return type(value)(_swap(v, by_id) for v in value)
    return value
