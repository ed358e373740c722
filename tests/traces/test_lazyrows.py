"""A sharded trace's quantity does what the one-file trace's tensor does (gatescope.traces.lazyrows)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from tests.traces.test_shards import save_sharded
from tests.tui.test_app import word_trace

from gatescope.errors import GatescopeError
from gatescope.traces.lazyrows import LazyRows
from gatescope.traces.trace import load_trace

OPERATIONS = {
    "float": lambda q: q.float(),
    "double": lambda q: q.double(),
    "mean(0)": lambda q: q.mean(0),
    "mean(0, keepdim)": lambda q: q.mean(0, keepdim=True),
    "mean()": lambda q: q.mean(),
    "mean(1)": lambda q: q.mean(1),
    "sum()": lambda q: q.sum(),
    "sum(-2)": lambda q: q.sum(-2),
    "std(0)": lambda q: q.std(0),
    "max(0)": lambda q: q.abs().max(0).values,
    "numpy": lambda q: torch.as_tensor(q.numpy()),
    "np.asarray": lambda q: torch.as_tensor(np.asarray(q)),
    "arithmetic": lambda q: q * 2 + 1,
    "reflected arithmetic": lambda q: 1 - q,
    "a tensor plus it": lambda q: torch.ones(1) + q,
    "comparison": lambda q: q > 0,
    "torch function": lambda q: torch.sigmoid(q),
    "torch.cat": lambda q: torch.cat([q, q]),
    "transpose": lambda q: q.T,
    "matmul": lambda q: q @ torch.ones(q.shape[1]),
    "rows and columns": lambda q: q[3:9, [0, 2]],
    "a mask": lambda q: q[torch.arange(q.shape[0]) % 3 == 0],
    "iteration": lambda q: torch.stack(list(q)[:3]),
}


@pytest.fixture(scope="module")
def both(tmp_path_factory):
    folder = tmp_path_factory.mktemp("lazy")
    trace = word_trace()
    trace.save(folder / "one.safetensors")
    save_sharded(trace, folder / "dir", 9)
    return load_trace(folder / "one.safetensors"), load_trace(folder / "dir")


@pytest.mark.parametrize("operation", list(OPERATIONS))
def test_every_tensor_operation_works_on_a_sharded_quantity(both, operation):
    one, many = both
    for name in one.names[:2]:
        assert isinstance(many[name], LazyRows) and many[name].shape == one[name].shape
        expected, got = OPERATIONS[operation](one[name]), OPERATIONS[operation](many[name])
        assert isinstance(got, torch.Tensor) and got.shape == expected.shape and got.dtype == expected.dtype
        torch.testing.assert_close(got.double(), expected.double(), atol=1e-5, rtol=1e-5)


def test_row_reductions_read_a_shard_at_a_time_and_the_rest_says_when_too_big(both, monkeypatch):
    one, many = both
    name = one.names[0]
    monkeypatch.setattr(LazyRows, "limit", 100)  # bytes: far less than the quantity
    torch.testing.assert_close(many[name].mean(0), one[name].mean(0))
    torch.testing.assert_close(many[name].sum(), one[name].sum())
    assert many[name][2:4].shape == (2, one[name].shape[1])
    for operation in ("float", "numpy", "arithmetic", "torch function"):
        with pytest.raises(GatescopeError, match="more than the 0.0 MB an operation reads whole; index the rows"):
            OPERATIONS[operation](many[name])
