"""Trace files: exact round trips, lazy memory-mapped loading, atomic writes, clear errors."""
import json
import os
import struct

import pytest
import torch

from gatescope import GatescopeError, Trace, load_trace, record


def _trace(dtype=torch.float32):
    torch.manual_seed(0)
    return Trace(
        {"rnn.l0.fwd.f": torch.rand(7, 4).to(dtype), "rnn.l0.fwd.h": torch.randn(7, 4).to(dtype)},
        [0, 3, 7],
        token_ids=torch.tensor([2, 0, 1, 1, 2, 0, 5]),
        features={"number": [float("nan"), 1, 1, 0, 0, 0, 0]},
        meta={"vocab": ["the", "cat", "cats"], "tokenizer": "word"},
    )


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_round_trip_is_exact(tmp_path, dtype):
    trace = _trace(dtype)
    trace.save(tmp_path / "t.safetensors")
    back = load_trace(tmp_path / "t.safetensors")
    assert back.names == trace.names
    for name in trace:
        assert back[name].dtype == dtype and torch.equal(back[name], trace[name])
    assert torch.equal(back.offsets, trace.offsets) and torch.equal(back.token_ids, trace.token_ids)
    assert torch.equal(back.features["number"].nan_to_num(-1), trace.features["number"].nan_to_num(-1))
    assert back.tokens(0, 3) == ["cats", "the", "cat"]
    assert back.tokens(6, 7) == ["<5>"]  # an id outside the vocabulary is shown, not an error
    assert back.meta["format_version"] == 1 and back.meta["vocab"] == ["the", "cat", "cats"]


def test_bfloat16_rows_widen_exactly_without_torch(tmp_path):
    from gatescope.traces.file import read_trace_file

    trace = _trace(torch.bfloat16)
    trace.save(tmp_path / "t.safetensors")
    rows = read_trace_file(tmp_path / "t.safetensors").rows("rnn.l0.fwd.h", 2, 6)
    assert rows.dtype.name == "float32"
    assert torch.equal(torch.from_numpy(rows), trace["rnn.l0.fwd.h"][2:6].float())


def test_the_file_is_plain_safetensors_with_the_documented_names(tmp_path):
    from safetensors import safe_open

    _trace().save(tmp_path / "t.safetensors")
    with safe_open(tmp_path / "t.safetensors", framework="pt") as f:
        assert set(f.keys()) == {"rnn.l0.fwd.f", "rnn.l0.fwd.h", "offsets", "token_ids", "feature.number"}
        assert f.get_tensor("offsets").dtype == torch.int64
        meta = json.loads(f.metadata()["gatescope"])
    assert meta["format"] == "gatescope.trace"


def _mapped_files(address):
    """Files mapped into this process at ``address`` (from /proc/self/maps)."""
    found = []
    with open("/proc/self/maps") as maps:
        for line in maps:
            parts = line.split()
            start, end = (int(v, 16) for v in parts[0].split("-"))
            if start <= address < end and len(parts) >= 6:
                found.append(parts[5])
    return found


@pytest.mark.skipif(not os.path.exists("/proc/self/maps"), reason="needs Linux /proc to see memory maps")
def test_loading_is_lazy(tmp_path):
    path = tmp_path / "big.safetensors"
    Trace({"rnn.l0.fwd.h": torch.arange(200_000 * 64, dtype=torch.float32).reshape(-1, 64)}, [0, 200_000]).save(path)
    h = load_trace(path)["rnn.l0.fwd.h"]
    # the tensor's memory is a mapping of the file itself, not a copy read into the heap
    assert str(path) in _mapped_files(h.data_ptr())
    assert torch.equal(h[123_456, :3], torch.tensor([123_456 * 64.0, 123_456 * 64 + 1, 123_456 * 64 + 2]))


def test_sequences_and_positions():
    trace = _trace()
    assert trace.num_sequences == 2 and trace.num_tokens == 7
    assert trace.sequence(1) == slice(3, 7) and trace.sequence(-1) == slice(3, 7)
    assert [trace.sequence_of(r) for r in (0, 2, 3, 6)] == [0, 0, 1, 1]
    no_ids = Trace({"rnn.l0.fwd.h": torch.zeros(5, 1)}, [0, 2, 5])
    assert no_ids.tokens() == ["0", "1", "0", "1", "2"]
    with pytest.raises(GatescopeError, match="no sequence 2"):
        trace.sequence(2)


def test_bad_shapes_and_names():
    with pytest.raises(GatescopeError, match="expected \\[4, hidden\\]"):
        Trace({"rnn.l0.fwd.h": torch.zeros(3, 2)}, [0, 4])
    with pytest.raises(GatescopeError, match="not a quantity name"):
        Trace({"hidden": torch.zeros(4, 2)}, [0, 4])
    with pytest.raises(GatescopeError, match="offsets"):
        Trace({}, [1, 4])
    with pytest.raises(GatescopeError, match="feature 'x' has 3 values"):
        _trace().add_feature("x", [1, 2, 3])
    with pytest.raises(GatescopeError, match="no quantity 'rnn.l0.fwd.c'"):
        _trace()["rnn.l0.fwd.c"]


def test_corrupt_files_give_one_line_errors(tmp_path):
    good = tmp_path / "good.safetensors"
    _trace().save(good)
    data = good.read_bytes()
    cases = {
        "missing.safetensors": None,
        "short.safetensors": b"abc",
        "garbage.safetensors": b"x" * 100,
        "truncated.safetensors": data[: len(data) - 20],
        "badjson.safetensors": struct.pack("<Q", 10) + b"{not json!" + b"\0" * 10,
    }
    for name, content in cases.items():
        if content is not None:
            (tmp_path / name).write_bytes(content)
        with pytest.raises(GatescopeError) as info:
            load_trace(tmp_path / name)
        assert "\n" not in str(info.value)
    from safetensors.torch import save_file

    save_file({"x": torch.zeros(2)}, tmp_path / "model.safetensors")
    with pytest.raises(GatescopeError, match="not a gatescope trace"):
        load_trace(tmp_path / "model.safetensors")
    with pytest.raises(GatescopeError, match="folder"):
        load_trace(tmp_path)


def test_save_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "t.safetensors"
    path.write_bytes(b"previous")
    from gatescope.traces.file import TraceWriter

    def broken(self, name, start, rows):  # the header is written: the disk fills up with the first rows
        raise OSError("disk full")

    monkeypatch.setattr(TraceWriter, "write", broken)
    with pytest.raises(OSError):
        _trace().save(path)
    assert path.read_bytes() == b"previous"
    assert os.listdir(tmp_path) == ["t.safetensors"]
    with pytest.raises(GatescopeError, match="does not exist"):
        _trace().save(tmp_path / "no" / "t.safetensors")


def test_a_trace_without_a_token_is_refused_before_anything_is_written(tmp_path):
    """The format holds at least one token: saving an empty recording must not write a file that
    load_trace then refuses."""
    from torch import nn

    from gatescope import record

    lstm = nn.LSTM(5, 7, batch_first=True)
    with torch.no_grad(), record(lstm) as empty_batch:
        lstm(torch.randn(0, 3, 5))
    with record(lstm) as no_forward:
        pass
    for trace in (empty_batch.trace, no_forward.trace):
        with pytest.raises(GatescopeError, match="holds no tokens.*nothing written"):
            trace.save(tmp_path / "t.safetensors")
    assert os.listdir(tmp_path) == []


def test_loaded_names_keep_the_recorded_order_and_files_get_the_usual_mode(tmp_path):
    from torch import nn

    from gatescope import record

    lstm = nn.LSTM(3, 4, num_layers=2, bidirectional=True)
    with torch.no_grad(), record(lstm) as rec:
        lstm(torch.randn(5, 1, 3))
    rec.trace.save(tmp_path / "t.safetensors")
    assert load_trace(tmp_path / "t.safetensors").names == rec.trace.names
    umask = os.umask(0)
    os.umask(umask)
    assert (tmp_path / "t.safetensors").stat().st_mode & 0o777 == 0o666 & ~umask


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_streamed_trace_file_equals_the_trace_saved_from_memory(tmp_path, dtype):
    """`gatescope trace` writes batch by batch (TraceWriter); the file must be the one save() writes."""
    import gatescope
    from gatescope import sample_models
    from gatescope.runs.trace import RunOptions, record_inputs, write_inputs
    from gatescope.inputs.corpus import from_sequences

    model = gatescope.load(sample_models.path("agreement_lstm.safetensors"))
    texts = ["the boy near the cars greets", "the boys greet", "the girl that the dogs like sleeps", "mary sleeps"]
    inputs = from_sequences([model.encode(t) for t in texts], "test")
    options = RunOptions(batch_size=3, dtype=dtype, progress=False)
    in_memory = record_inputs(model, inputs, options)
    assert write_inputs(str(tmp_path / "s.safetensors"), model, inputs, options) == (4, 18, 6)
    streamed = load_trace(tmp_path / "s.safetensors")
    assert streamed.names == in_memory.names
    for name in in_memory.names:
        assert streamed[name].dtype == dtype and torch.equal(streamed[name], in_memory[name]), name
    assert torch.equal(streamed.offsets, in_memory.offsets) and torch.equal(streamed.token_ids, in_memory.token_ids)
    assert streamed.tokens(0, 6) == texts[0].split()
    assert streamed.meta["modules"] == in_memory.meta["modules"] and streamed.meta["vocab"] == in_memory.meta["vocab"]


def test_trace_writer_refuses_rows_that_do_not_fit(tmp_path):
    import numpy as np

    from gatescope.traces.file import TraceWriter

    writer = TraceWriter(tmp_path / "w.safetensors", {"rnn.l0.fwd.h": 2}, "F32", np.array([0, 3]), False, {})
    writer.write("rnn.l0.fwd.h", 1, np.ones((2, 2), np.float32))
    with pytest.raises(ValueError, match="do not fit"):
        writer.write("rnn.l0.fwd.h", 2, np.ones((2, 2), np.float32))
    writer.close()
    back = load_trace(tmp_path / "w.safetensors")
    assert back["rnn.l0.fwd.h"].tolist() == [[0, 0], [1, 1], [1, 1]]


def test_trace_writer_finishes_a_block_the_system_wrote_in_part(tmp_path, monkeypatch):
    import os

    import numpy as np

    from gatescope.traces.file import TraceWriter

    real = os.pwrite
    monkeypatch.setattr(os, "pwrite", lambda fd, data, at: real(fd, data[:7], at))  # 7 bytes a call at most
    rows = np.arange(12, dtype=np.float32).reshape(4, 3)
    writer = TraceWriter(tmp_path / "w.safetensors", {"rnn.l0.fwd.h": 3}, "F32", np.array([0, 4]), False, {})
    writer.write("rnn.l0.fwd.h", 0, rows)
    writer.close()
    monkeypatch.undo()
    assert load_trace(tmp_path / "w.safetensors")["rnn.l0.fwd.h"].numpy().tolist() == rows.tolist()


def test_the_trace_follows_the_mapping_protocol():
    trace = _trace()
    assert "rnn.l0.fwd.h" in trace and "rnn.l9.fwd.h" not in trace and 3 not in trace
    assert trace.get("rnn.l9.fwd.h") is None and trace.get("rnn.l0.fwd.f") is trace["rnn.l0.fwd.f"]
    assert dict(trace.items()).keys() == {"rnn.l0.fwd.f", "rnn.l0.fwd.h"}
    with pytest.raises(KeyError) as info:
        trace["rnn.l9.fwd.h"]
    assert isinstance(info.value, GatescopeError)
    assert str(info.value) == "no quantity 'rnn.l9.fwd.h' in this trace; it has: rnn.l0.fwd.f, rnn.l0.fwd.h"
    other = _trace()
    assert trace == trace and trace != other and len({trace, other, trace}) == 2  # by identity, never raising


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_padded_lays_sequences_out_batch_first_and_unpadded_inverts_it(tmp_path, dtype):
    trace = _trace(dtype)  # sequences of 3 and 4 tokens
    trace.save(tmp_path / "t.safetensors")
    for t in (trace, load_trace(tmp_path / "t.safetensors")):
        h = t["rnn.l0.fwd.h"]
        padded = t.padded("rnn.l0.fwd.h")
        assert padded.shape == (2, 4, 4) and padded.dtype == dtype
        assert torch.equal(padded[0, :3], h[0:3]) and torch.equal(padded[1], h[3:7])
        assert padded[0, 3].isnan().all()  # padding is NaN unless asked otherwise
        assert torch.equal(t.padded("rnn.l0.fwd.h", fill=0.0)[0, 3], torch.zeros(4, dtype=dtype))
        assert torch.equal(t.unpadded(padded), h)
        assert torch.equal(t.padded(h * 2, fill=0.0), t.padded("rnn.l0.fwd.h", fill=0.0) * 2)  # rows like the trace's
    assert trace.lengths.tolist() == [3, 4]
    with pytest.raises(GatescopeError, match=r"unpadded takes values \[sequences=2, time>=4, units\]"):
        trace.unpadded(torch.zeros(2, 3, 4))
    with pytest.raises(GatescopeError, match=r"padded takes rows \[tokens=7, units\]"):
        trace.padded(torch.zeros(6, 4))


def test_a_sharded_trace_pads_like_the_one_file(tmp_path):
    from tests.traces.test_shards import save_sharded

    trace = _trace()
    assert save_sharded(trace, tmp_path / "dir", 3) == 2
    many = load_trace(tmp_path / "dir")
    assert "rnn.l0.fwd.h" in many and many.get("rnn.l9.fwd.h") is None
    assert torch.equal(many.padded("rnn.l0.fwd.h", fill=0.0), trace.padded("rnn.l0.fwd.h", fill=0.0))


def test_a_variant_cells_trace_reads_back_and_a_bad_description_is_refused(tmp_path):
    from gatescope.kinds import HARD_SIGMOID_KERAS2, cell_type_of
    from gatescope.recorder.variants import VariantLSTM

    torch.manual_seed(0)
    lstm = VariantLSTM(3, 4, peepholes=True, coupling="input_from_forget", gate_activation=HARD_SIGMOID_KERAS2)
    with torch.no_grad(), record(lstm) as rec:
        lstm(torch.randn(5, 3))
    rec.trace.save(tmp_path / "t.safetensors")
    back = load_trace(tmp_path / "t.safetensors")
    assert cell_type_of(back.meta["modules"][0]) == lstm.cell_type
    torch.testing.assert_close(back["lstm.l0.fwd.i"], 1 - back["lstm.l0.fwd.f"])
    bad = Trace({"lstm.l0.fwd.h": torch.zeros(5, 4)}, [0, 5], meta={"modules": [
        {**back.meta["modules"][0], "coupling": "sometimes"}]})
    bad.save(tmp_path / "bad.safetensors")
    with pytest.raises(GatescopeError, match="metadata 'modules' entry 'lstm': coupling 'sometimes'"):
        load_trace(tmp_path / "bad.safetensors")
