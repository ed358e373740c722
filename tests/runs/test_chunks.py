"""Long sequences in chunks of steps (gatescope.runs.chunks): the state carried from chunk to chunk gives
the values of an unchunked run and of the independent reference loop, at every kind of chunk boundary
(a sequence ending exactly on one, one step past it, shorter than a chunk), packed batches that shrink
as their shorter sequences end, stacked layers, GRU and LSTMCell; written files and streamed analyses
agree; a bidirectional model runs whole; memory is refused in one line before anything runs."""
import json

import numpy as np
import pytest
import torch
from torch import nn

from gatescope.checkpoints.chain import ChainState
from gatescope.checkpoints.loader import load
from gatescope.inputs.corpus import from_sequences
from gatescope.runs import chunks
from gatescope.runs.trace import RunOptions, record_inputs
from gatescope.traces.trace import load_trace
from tests.checkpoint_fixtures import WORDS, language_model, save, word_metadata
from tests.cli_helpers import cli, fails
from tests.reference import reference_run

LENGTHS = [20, 7, 8, 3, 14, 21, 1]  # with chunks of 7: ends on a boundary (7, 14, 21), one past (8), short ones


def corpus(lengths=LENGTHS, seed: int = 0):
    rng = np.random.default_rng(seed)
    return from_sequences([rng.integers(0, len(WORDS), n) for n in lengths], "test")


def traced(model, chunk_steps: int, batch_size: int = 3, data=None):
    return record_inputs(model, data or corpus(), RunOptions(batch_size, progress=False, chunk_steps=chunk_steps))


def test_plan_batches_longest_first_in_corpus_order_among_equals():
    assert chunks.plan(LENGTHS, 3, False) == [[5, 0, 4], [2, 1, 3], [6]]
    assert chunks.plan([9, 9, 8, 9], 4, True) == [[0, 1, 3], [2]]  # a stepped cell: equal lengths only


@pytest.mark.parametrize("kwargs", [{"cell": "LSTM", "num_layers": 2}, {"cell": "GRU", "num_layers": 2},
                                    {"cell": "LSTM", "proj_size": 3}])
def test_chunked_values_equal_the_unchunked_run_and_the_reference(tmp_path, kwargs):
    reference, path = language_model(tmp_path, word_metadata(), **kwargs)
    model = load(path)
    whole, chunked = traced(model, 0), traced(model, 7)
    data = corpus()
    assert chunked.names == whole.names and torch.equal(chunked.offsets, whole.offsets)
    assert torch.equal(chunked.token_ids, torch.from_numpy(data.values))
    for name in whole.names:
        torch.testing.assert_close(chunked[name], whole[name], rtol=1e-5, atol=1e-6, msg=name)
    for s in range(data.num_sequences):
        ids = torch.from_numpy(data.values[data.offsets[s]:data.offsets[s + 1]])
        expected, _ = reference_run(reference.rnn, reference.encoder(ids).detach(), path="rnn")
        for name, values in expected.items():
            torch.testing.assert_close(chunked[name][chunked.sequence(s)], values, rtol=1e-5, atol=1e-5, msg=name)


def test_a_stepped_cell_carries_its_state_across_chunks(tmp_path):
    torch.manual_seed(0)
    embedding, cell, decoder = nn.Embedding(len(WORDS), 6), nn.LSTMCell(6, 5), nn.Linear(5, len(WORDS))
    model = load(save(tmp_path / "cell.safetensors", {"encoder": embedding, "cell": cell, "decoder": decoder},
                      word_metadata()))
    data = corpus([9, 9, 4, 9, 12])
    whole, chunked = traced(model, 0, data=data), traced(model, 4, data=data)
    for name in whole.names:
        torch.testing.assert_close(chunked[name], whole[name], rtol=1e-5, atol=1e-6, msg=name)


def test_chain_state_carries_a_packed_batch_whose_sequences_end_in_different_chunks(tmp_path):
    _, path = language_model(tmp_path, word_metadata(), num_layers=2)
    model = load(path)
    ids = torch.randint(0, len(WORDS), (3, 10))
    lengths = torch.tensor([10, 6, 3])
    with torch.no_grad():
        whole = model(ids, lengths, decode=False)
        state = ChainState()
        first = model(ids[:, :5], lengths.clamp(max=5), decode=False, state=state)
        state.keep(2)  # the third sequence ended in the first chunk
        second = model(ids[:2, 5:], lengths[:2] - 5, decode=False, state=state)
    torch.testing.assert_close(first, whole[:, :5], rtol=0, atol=1e-6)
    torch.testing.assert_close(second[0], whole[0, 5:], rtol=0, atol=1e-6)
    torch.testing.assert_close(second[1, :1], whole[1, 5:6], rtol=0, atol=1e-6)


def test_a_bidirectional_model_reads_each_sequence_whole(tmp_path):
    _, path = language_model(tmp_path, word_metadata(), bidirectional=True)
    model = load(path)
    assert chunks.chunked(model, 7) == 0  # its backward direction needs every later step
    whole, asked = traced(model, 0), traced(model, 7)
    for name in whole.names:
        torch.testing.assert_close(asked[name], whole[name], rtol=0, atol=0, msg=name)


def test_the_trace_command_writes_the_same_file_in_chunks(tmp_path, capsys):
    _, path = language_model(tmp_path, word_metadata(), num_layers=2)
    ids = [" ".join(str(i) for i in corpus().values[a:b]) for a, b in zip(corpus().offsets, corpus().offsets[1:])]
    args = [a for line in ids for a in ("--ids", line)]
    cli(capsys, "trace", path, *args, "--chunk-steps", "0", "-o", tmp_path / "whole.safetensors")
    cli(capsys, "trace", path, *args, "--chunk-steps", "7", "--batch-size", "2", "-o", tmp_path / "chunked.safetensors")
    whole, chunked = load_trace(tmp_path / "whole.safetensors"), load_trace(tmp_path / "chunked.safetensors")
    assert torch.equal(whole.token_ids, chunked.token_ids) and torch.equal(whole.offsets, chunked.offsets)
    for name in whole.names:
        torch.testing.assert_close(chunked[name][:], whole[name][:], rtol=1e-5, atol=1e-6, msg=name)


def test_a_streamed_analysis_of_long_lines_in_chunks_equals_the_whole(tmp_path, capsys):
    _, path = language_model(tmp_path, word_metadata())
    rng = np.random.default_rng(1)
    lines = [" ".join(rng.choice(WORDS[2:], n)) for n in (30, 5, 17, 9)]
    (tmp_path / "corpus.txt").write_text("\n".join(lines) + "\n")
    results = []
    for steps in ("0", "4"):
        out = cli(capsys, "analyze", "saturation", path, "--file", tmp_path / "corpus.txt", "--chunk-steps", steps,
                  "--json").out
        results.append(json.loads(out))
    assert results[0] and _close(results[0], results[1])


def _close(a, b) -> bool:
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_close(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(_close(x, y) for x, y in zip(a, b))
    if isinstance(a, float):
        return abs(a - b) <= 1e-5 + 1e-5 * abs(b)
    return a == b


@pytest.mark.parametrize("bidirectional,option", [(False, "--chunk-steps"), (True, "bidirectional")])
def test_a_batch_that_does_not_fit_is_refused_in_one_line_before_it_runs(tmp_path, capsys, monkeypatch,
                                                                         bidirectional, option):
    _, path = language_model(tmp_path, word_metadata(), bidirectional=bidirectional)
    monkeypatch.setattr(chunks, "available_memory", lambda device: 1 << 20)  # 1 MiB left
    ran = []
    monkeypatch.setattr(chunks, "_record", lambda *args: ran.append(1))
    line = fails(capsys, "trace", path, "--ids", " ".join(["3"] * 3000), "--chunk-steps", "2000",
                 "-o", tmp_path / "t.safetensors", match="GiB is available")
    assert option in line and "--batch-size" in line and not ran
    assert not (tmp_path / "t.safetensors").exists()


def test_record_on_a_loaded_model_fed_chunks_with_its_state_equals_one_call(tmp_path):
    from gatescope import record

    _, path = language_model(tmp_path, word_metadata(), num_layers=2)
    model = load(path)
    ids = torch.randint(0, len(WORDS), (1, 23))
    with torch.no_grad(), record(model) as whole:
        model(ids, decode=False)
    state, parts = ChainState(), []
    for chunk in ids.split(5, dim=1):
        with torch.no_grad(), record(model) as rec:
            model(chunk, decode=False, state=state)
        parts.append(rec.trace)
    for name in whole.trace.names:
        joined = torch.cat([part[name] for part in parts])  # each chunk's steps, in order
        torch.testing.assert_close(joined, whole.trace[name], rtol=1e-5, atol=1e-6, msg=name)
