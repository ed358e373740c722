"""Sharded traces: a folder of shards reads as the one trace it was cut from (trace, browser, analyses), bad folders."""
from __future__ import annotations

import asyncio
import json

import numpy as np
import pytest
import torch
from tests.tui.test_app import LSTM_KINDS, SIZE, word_trace

from gatescope.analysis.dynamics import saturation
from gatescope.analysis.ranking import rank_units
from gatescope.errors import GatescopeError
from gatescope.traces.file import read_trace_file
from gatescope.traces.file import RowConcat, plan_shards, shard_name, write_index
from gatescope.traces.trace import Trace, load_trace


def save_sharded(trace: Trace, folder, shard_tokens: int) -> int:
    """Cut ``trace`` at sequence boundaries into a shard folder, as `gatescope trace --shard-tokens` lays it out."""
    folder.mkdir()
    plan = plan_shards(trace.offsets.diff().tolist(), shard_tokens)
    shards = []
    for j, seqs in enumerate(plan):
        rows = slice(int(trace.offsets[seqs.start]), int(trace.offsets[seqs.stop]))
        part = Trace({n: trace[n][rows] for n in trace.names}, trace.offsets[seqs.start: seqs.stop + 1] - rows.start,
                     token_ids=None if trace.token_ids is None else trace.token_ids[rows],
                     features={f: v[rows] for f, v in trace.features.items()}, meta=trace.meta)
        part.save(folder / shard_name(j, len(plan)))
        shards.append({"file": shard_name(j, len(plan)), "sequences": len(seqs), "tokens": rows.stop - rows.start})
    write_index(folder, shards, {})
    return len(plan)


def test_plan_keeps_whole_sequences_under_the_limit():
    assert plan_shards([3, 3, 3, 10, 1], 6) == [range(0, 2), range(2, 3), range(3, 4), range(4, 5)]
    assert plan_shards([2, 2], 100) == [range(0, 2)]
    with pytest.raises(GatescopeError, match="at least 1"):
        plan_shards([1], 0)


def test_row_concat_indexes_like_one_array():
    whole = np.arange(60, dtype=np.float32).reshape(20, 3)
    rows = RowConcat([whole[:7], whole[7:8], whole[8:]])
    assert rows.shape == (20, 3) and len(rows) == 20 and rows.nbytes == whole.nbytes
    for key in (slice(None), slice(3, 15), slice(7, 8), slice(5, 5), slice(-4, None), (slice(2, 12), 1),
                (slice(None), [0, 2]), 9, -1, (8, 2), np.array([19, 0, 7, 8]), whole[:, 0] > 30, slice(1, 19, 3)):
        np.testing.assert_array_equal(rows[key], whole[key])
    assert np.shares_memory(rows[8:12], whole)  # within one part: that part's view, no copy


def test_sharded_trace_equals_the_whole_for_load_trace_and_the_analyses(tmp_path):
    trace = word_trace()
    trace.add_feature("odd", (torch.arange(trace.num_tokens) % 2).numpy())
    trace.save(tmp_path / "one.safetensors")
    count = save_sharded(trace, tmp_path / "dir", 11)
    assert count > 2
    one, many = load_trace(tmp_path / "one.safetensors"), load_trace(tmp_path / "dir")
    assert many.names == one.names and many.num_tokens == one.num_tokens and many.meta["shards"] == count
    assert torch.equal(many.offsets, one.offsets) and torch.equal(many.token_ids, one.token_ids)
    assert torch.equal(many.features["odd"], one.features["odd"])
    for name in one.names:
        assert many[name].shape == one[name].shape and many[name].dtype == one[name].dtype
        assert torch.equal(many[name][:], one[name][:])
        assert torch.equal(many[name][4:29, 1:3], one[name][4:29, 1:3])
    assert rank_units(many, feature="odd", permutations=20).rows == rank_units(one, feature="odd", permutations=20).rows
    assert saturation(many).rows == saturation(one).rows
    many.save(tmp_path / "joined.safetensors")  # a sharded trace saves as one file
    assert torch.equal(load_trace(tmp_path / "joined.safetensors")[one.names[0]], one[one.names[0]])


def test_the_browser_opens_a_shard_folder(tmp_path):
    from gatescope.tui.app import GatescopeApp
    from gatescope.tui.heatmap import Heatmap
    from gatescope.tui.unit_detail import UnitDetail

    trace = word_trace()
    save_sharded(trace, tmp_path / "dir", 9)
    assert read_trace_file(tmp_path / "dir").names == trace.names

    async def scenario() -> None:
        app = GatescopeApp(tmp_path / "dir")
        async with app.run_test(size=SIZE) as pilot:
            await pilot.press("right", "right", "down", "down", "down", "L", "pagedown", "left")
            await app.workers.wait_for_complete()
            await pilot.pause()
            heatmap = app.query_one(Heatmap)
            unit, row = heatmap.unit, heatmap.row
            expected = {k: float(trace[f"rnn.l1.fwd.{k}"][row, unit]) for k in LSTM_KINDS}
            assert app.query_one(UnitDetail).values_at_cursor() == expected

    asyncio.run(scenario())


def test_bad_shard_folders_are_one_line_errors(tmp_path):
    trace = word_trace()
    save_sharded(trace, tmp_path / "dir", 9)
    index = json.loads((tmp_path / "dir" / "index.json").read_text())
    bad = dict(index, shards=[dict(index["shards"][0], tokens=999)] + index["shards"][1:])
    (tmp_path / "dir" / "index.json").write_text(json.dumps(bad))
    with pytest.raises(GatescopeError, match="the index says"):
        load_trace(tmp_path / "dir")
    bad = dict(index, shards=[dict(index["shards"][0], file="../x.safetensors")] + index["shards"][1:])
    (tmp_path / "dir" / "index.json").write_text(json.dumps(bad))
    with pytest.raises(GatescopeError, match="expected trace-00000-of"):
        load_trace(tmp_path / "dir")
    (tmp_path / "dir" / "index.json").write_text("{not json")
    with pytest.raises(GatescopeError, match="corrupt JSON"):
        load_trace(tmp_path / "dir")
    (tmp_path / "dir" / "index.json").write_text(json.dumps(index))
    (tmp_path / "dir" / shard_name(1, len(index["shards"]))).write_bytes(b"\0" * 16)
    with pytest.raises(GatescopeError, match="trace-00001"):
        load_trace(tmp_path / "dir")


def test_analyze_commands_take_a_shard_folder(tmp_path, capsys):
    from gatescope.cli import main

    trace = word_trace()
    trace.save(tmp_path / "one.safetensors")
    save_sharded(trace, tmp_path / "dir", 9)
    outputs = []
    for path in (tmp_path / "one.safetensors", tmp_path / "dir"):
        main(["analyze", "match", str(path), "--name", "rnn.l0.fwd.h", "--start", "2", "--stop", "5", "--threshold", "-1", "--json"])
        main(["analyze", "saturation", str(path), "--json"])
        main(["analyze", "profile", str(path), "--unit", "rnn.l0.fwd.h:1", "--sequences", "0,2",
              "-o", str(tmp_path / f"{path.stem}.svg")])
        outputs.append(capsys.readouterr().out)
    assert outputs[0] == outputs[1] and outputs[0].count("\n") == 2


def test_notebook_display_of_a_shard_folder_is_the_whole_traces(tmp_path):
    import gatescope

    trace = word_trace()
    trace.save(tmp_path / "one.safetensors")
    save_sharded(trace, tmp_path / "dir", 9)
    one, many = load_trace(tmp_path / "one.safetensors"), load_trace(tmp_path / "dir")
    assert many._repr_html_() == one._repr_html_()
    assert gatescope.show(many, "rnn.l0.fwd.h:1")._repr_html_() == gatescope.show(one, "rnn.l0.fwd.h:1")._repr_html_()



def test_a_shard_or_index_linked_out_of_the_folder_is_refused(tmp_path):
    trace = word_trace()
    save_sharded(trace, tmp_path / "dir", 9)
    save_sharded(trace, tmp_path / "elsewhere", 9)
    shard = tmp_path / "dir" / shard_name(1, len(list((tmp_path / "dir").glob("trace-*"))))
    shard.unlink()
    shard.symlink_to(tmp_path / "elsewhere" / shard.name)  # a valid trace file, but not the folder's
    with pytest.raises(GatescopeError, match="the shard is a symbolic link to .*elsewhere.*outside the folder"):
        load_trace(tmp_path / "dir")
    shard.unlink()
    shard.symlink_to(shard.with_name("trace-00000-of-99999.safetensors"))  # a link inside the folder is a file of it
    (tmp_path / "dir" / "index.json").unlink()
    (tmp_path / "dir" / "index.json").symlink_to(tmp_path / "elsewhere" / "index.json")
    with pytest.raises(GatescopeError, match="the sharded trace index is a symbolic link to .*outside the folder"):
        load_trace(tmp_path / "dir")


@pytest.mark.slow  # a real trace process, killed: 5-10 s
def test_a_sharded_trace_killed_mid_run_leaves_no_folder_and_the_next_run_cleans_up(tmp_path):
    import subprocess
    import sys
    import time
    from pathlib import Path

    model = Path(__file__).resolve().parents[2] / "sample_models" / "agreement_lstm.safetensors"
    corpus = tmp_path / "lines.txt"
    corpus.write_text("the boy near the cars greets the girls\n" * 20_000)
    out = tmp_path / "run"
    argv = [sys.executable, "-m", "gatescope", "trace", str(model), "--file", str(corpus), "--shard-tokens",
            "4000", "-o", str(out)]
    child = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while not any(tmp_path.glob(".run.*.tmp/*.safetensors")) and child.poll() is None:
            assert time.monotonic() < deadline, "no shard written within a minute"
            time.sleep(0.01)
    finally:
        child.kill()
        child.wait()
    assert child.returncode != 0, "the run ended before it could be killed: give it more lines"
    (leftover,) = tmp_path.glob(".run.*.tmp")
    assert not out.exists() and any(leftover.glob("*.safetensors"))  # shards written, nothing published
    done = subprocess.run(argv, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stderr
    assert (out / "index.json").is_file() and not leftover.exists() and not list(tmp_path.glob(".run.*"))
    assert load_trace(out).num_tokens == 20_000 * 8  # eight words a line
