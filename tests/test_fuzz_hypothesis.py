"""Property-based tests of the trace and checkpoint readers (hypothesis): any header, any metadata, any
bytes give a trace, a model, or a one-line GatescopeError; valid traces of any shape read back exactly."""
from __future__ import annotations

import json
import struct
import tempfile
from pathlib import Path

import numpy as np
import torch
from tests.fuzz_corpus import deadline, is_one_line, use_checkpoint, use_trace_file
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gatescope.errors import GatescopeError
from gatescope.traces.file import read_trace_file
from gatescope.traces.trace import Trace, load_trace

SETTINGS = settings(max_examples=50, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False) | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=8,
)
names = st.sampled_from(["rnn.l0.fwd.h", "rnn.l0.fwd.c", "rnn.l1.bwd.i", "gru.l0.fwd.r", "offsets", "token_ids",
                         "feature.x", "feature.", "rnn.l0.fwd.q", "", "weight_ih_l0", "rnn.weight_hh_l0",
                         "encoder.weight", "decoder.weight", "decoder.bias"]) | st.text(max_size=20)
dtypes = st.sampled_from(["F32", "F16", "BF16", "F64", "I64", "I32", "U8", "BOOL", "F8_E4M3", "C64", "X"]) | json_values
dims = st.integers(-3, 12) | st.sampled_from([2**31, 2**62, 10**20]) | json_values
entries = st.fixed_dictionaries({
    "dtype": dtypes,
    "shape": st.lists(dims, max_size=3) | json_values,
    "data_offsets": st.lists(st.integers(-4, 200), min_size=2, max_size=2) | json_values,
})
modules = st.fixed_dictionaries({
    "name": st.sampled_from(["rnn", "gru", ""]) | json_values,
    "cell": st.sampled_from(["LSTM", "GRU", "LSTMCell", "Cell"]) | json_values,
    "hidden_size": st.integers(-1, 5) | json_values,
}, optional={"num_layers": st.integers(0, 3) | json_values, "bidirectional": json_values,
             "proj_size": st.integers(-1, 4)})
trace_meta = st.fixed_dictionaries({
    "format": st.sampled_from(["gatescope.trace", "gatescope.model"]) | json_values,
    "format_version": st.sampled_from([1, 2, "1", True, 1.0]) | json_values,
}, optional={"modules": st.lists(modules, max_size=2) | json_values, "vocab": json_values,
             "tokenizer": st.sampled_from(["word", "char"]) | json_values})
model_meta = st.fixed_dictionaries({}, optional={
    "format": st.just("gatescope.model") | json_values, "version": st.sampled_from([1, 2, "1"]) | json_values,
    "vocab": st.lists(st.text(max_size=3), max_size=12) | json_values, "tokenizer": json_values,
    "unk": json_values, "eos": json_values,
    "roles": st.fixed_dictionaries({}, optional={"embedding": json_values, "recurrent": json_values,
                                                 "decoder": json_values}) | json_values,
})


def file_of(tensors: dict, meta, data: bytes) -> bytes:
    header = dict(tensors)
    header["__metadata__"] = {"gatescope": json.dumps(meta)}
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + data


def only_one_line_errors(read, content: bytes) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "f.safetensors"
        path.write_bytes(content)
        try:
            with deadline():
                read(path)
        except GatescopeError as exc:
            assert is_one_line(str(exc)), str(exc)


@SETTINGS
@given(tensors=st.dictionaries(names, entries, max_size=5), meta=trace_meta, data=st.binary(max_size=200))
def test_any_trace_header_is_read_or_refused_in_one_line(tensors, meta, data):
    only_one_line_errors(use_trace_file, file_of(tensors, meta, data))


@SETTINGS
@given(tensors=st.dictionaries(names, entries, max_size=5), meta=model_meta, data=st.binary(max_size=200))
def test_any_checkpoint_header_is_read_or_refused_in_one_line(tensors, meta, data):
    only_one_line_errors(use_checkpoint, file_of(tensors, meta, data))


def _lstm_file(folder: Path, hidden: int, layers: int, bidirectional: bool, proj: int) -> bytes:
    from tests.checkpoint_fixtures import save

    torch.manual_seed(0)
    path = save(folder / "m.safetensors", {"rnn": torch.nn.LSTM(3, hidden, num_layers=layers,
                                                                 bidirectional=bidirectional, proj_size=proj)})
    return path.read_bytes()


@SETTINGS
@given(hidden=st.integers(2, 5), layers=st.integers(1, 3), bidirectional=st.booleans(), proj=st.integers(0, 1),
       meta=model_meta)
def test_real_checkpoints_with_any_metadata(hidden, layers, bidirectional, proj, meta):
    from tests.fuzz_corpus import split

    with tempfile.TemporaryDirectory() as folder:
        raw = _lstm_file(Path(folder), hidden, layers, bidirectional, proj)
    header, data = split(raw)
    header.pop("__metadata__", None)
    only_one_line_errors(use_checkpoint, file_of(header, meta, data))


@SETTINGS
@given(
    lengths=st.lists(st.integers(1, 6), min_size=1, max_size=4),
    widths=st.dictionaries(st.sampled_from(["rnn.l0.fwd.h", "rnn.l0.fwd.c", "rnn.l1.bwd.f", "enc.l0.fwd.z"]),
                           st.integers(1, 5), min_size=1),
    dtype=st.sampled_from([torch.float32, torch.float16, torch.bfloat16, torch.float64]),
    with_ids=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_valid_traces_of_any_shape_read_back_exactly(lengths, widths, dtype, with_ids, seed):
    g = torch.Generator().manual_seed(seed)
    n = sum(lengths)
    tensors = {name: torch.randn(n, w, generator=g).to(dtype) for name, w in widths.items()}
    offsets = np.cumsum([0, *lengths])
    ids = torch.randint(0, 50, (n,), generator=g) if with_ids else None
    trace = Trace(tensors, offsets.tolist(), token_ids=ids, features={"x": np.arange(n, dtype=np.float32)})
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "t.safetensors"
        trace.save(path)
        back = load_trace(path)
        assert sorted(back.names) == sorted(trace.names)
        for name in trace:
            assert back[name].dtype == dtype and torch.equal(back[name], trace[name])
        assert back.offsets.tolist() == offsets.tolist()
        assert (back.token_ids is None) == (ids is None) and (ids is None or torch.equal(back.token_ids, ids))
        assert read_trace_file(path).features["x"].tolist() == list(range(n))


unit_like = st.text(max_size=30) | st.builds(
    lambda path, layer, d, kind, index: f"{path}.l{layer}.{d}.{kind}:{index}",
    st.sampled_from(["rnn", "encoder.rnn", "", "."]), st.sampled_from(["0", "12", "²", "٣", "9" * 5000, "-1"]),
    st.sampled_from(["fwd", "bwd", "up"]), st.sampled_from(list("ifgochmrzn") + ["q", ""]),
    st.sampled_from(["0", "37", "²", "9" * 5000, "", "-3", " 4"]))


@SETTINGS
@given(unit=unit_like)
def test_unit_names_parse_or_are_refused_in_one_line(unit):
    from gatescope.names import parse_name, parse_unit

    for parse in (parse_unit, parse_name):
        try:
            parse(unit)
        except GatescopeError as exc:
            assert is_one_line(str(exc))
