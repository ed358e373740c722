"""Streaming CLI: one pass over a corpus equals tracing it then analysing the trace; several processes
under torchrun (gloo) equal one; sharded traces from the command line."""
from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys

import pytest
import torch
from tests.checkpoint_fixtures import WORDS, language_model, word_metadata

from gatescope.cli import main
from gatescope.traces.trace import load_trace


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """A small word LSTM, a 60-line corpus (~300 tokens) and a binary label per token (plural word)."""
    tmp = tmp_path_factory.mktemp("corpus")
    _, model = language_model(tmp, metadata=word_metadata())
    rng = random.Random(0)
    lines = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 9))) for _ in range(60)]
    (tmp / "corpus.txt").write_text("\n".join(lines) + "\n")
    labels = [1.0 if w.endswith("s") else 0.0 for line in lines for w in line.split()]
    (tmp / "labels.txt").write_text("\n".join(map(str, labels)) + "\n")
    return tmp, model


def run_json(capsys, *args):
    main([str(a) for a in args])
    return json.loads(capsys.readouterr().out)


def fails(capsys, *args, match):
    with pytest.raises(SystemExit) as exit_info:
        main([str(a) for a in args])
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert exit_info.value.code == 1 and err.startswith("gatescope: error: ") and match in err, err


def test_streamed_units_and_saturation_equal_the_traced_ones(corpus, capsys):
    tmp, model = corpus
    main(["trace", str(model), "--file", str(tmp / "corpus.txt"), "-o", str(tmp / "t.safetensors")])
    capsys.readouterr()
    traced = run_json(capsys, "analyze", "units", tmp / "t.safetensors", "--labels", tmp / "labels.txt",
                      "--permutations", 0, "--top", 0, "--json")
    streamed = run_json(capsys, "analyze", "units", model, "--file", tmp / "corpus.txt", "--labels", tmp / "labels.txt",
                        "--top", 0, "--json", "--batch-size", 7)
    assert len(streamed) == len(traced) == 6 * 8
    by_unit = {r["unit"]: r for r in traced}
    for row in streamed:
        ref = by_unit[row["unit"]]
        assert row["corr"] == pytest.approx(ref["corr"], abs=1e-9) and row["n"] == ref["n"]
        assert abs(row["auc"] - ref["auc"]) <= row["auc_bound"] + 1e-12  # true ties count in the bound too
        assert "p_value" not in row
    assert [r["unit"] for r in streamed[:3]] == [r["unit"] for r in traced[:3]]
    traced = run_json(capsys, "analyze", "saturation", tmp / "t.safetensors", "--top", 0, "--json")
    streamed = run_json(capsys, "analyze", "saturation", model, "--file", tmp / "corpus.txt", "--top", 0, "--json")
    assert streamed == pytest.approx(traced)


def test_streamed_probe_equals_the_traced_one(corpus, capsys):
    tmp, model = corpus
    main(["trace", str(model), "--file", str(tmp / "corpus.txt"), "-o", str(tmp / "p.safetensors")])
    capsys.readouterr()
    traced = run_json(capsys, "analyze", "probe", tmp / "p.safetensors", "--labels", tmp / "labels.txt",
                      "--kinds", "h", "--epochs", 2, "--no-control", "--json")
    # one batch of 64 lines holds the whole corpus, as one chunk of the trace does: the same minibatches
    streamed = run_json(capsys, "analyze", "probe", model, "--file", tmp / "corpus.txt", "--labels",
                        tmp / "labels.txt", "--kinds", "h", "--epochs", 2, "--json")
    assert [r["name"] for r in streamed] == [r["name"] for r in traced] == ["rnn.l0.fwd.h"]
    for key in ("baseline", "n_train", "n_test", "top_units"):
        assert streamed[0][key] == traced[0][key], key
    assert streamed[0]["score"] == pytest.approx(traced[0]["score"], abs=1e-6)


def test_streaming_mode_errors(corpus, capsys):
    tmp, model = corpus
    common = ("analyze", "units", model, "--file", tmp / "corpus.txt")
    fails(capsys, *common, match="needs exactly one label source: --labels FILE, --feature-from ITEMS.tsv or "
                                 "--code-features (got none)")
    fails(capsys, *common, "--labels", tmp / "labels.txt", "--code-features",
          match="exactly one label source: --labels FILE, --feature-from ITEMS.tsv or --code-features "
                "(got --labels FILE, --code-features)")
    fails(capsys, *common, "--labels", tmp / "labels.txt", "--permutations", 10, match="no p-values")
    fails(capsys, *common, "--labels", tmp / "labels.txt", "--feature", "x", match="--labels FILE is the label itself")
    (tmp / "short.txt").write_text("1\n0\n")
    fails(capsys, *common, "--labels", tmp / "short.txt",
          match="short.txt has 2 values; the corpus has more tokens (")
    labels = (tmp / "labels.txt").read_text()
    (tmp / "long.txt").write_text(labels + "1\n0\n")
    tokens = len(labels.split())
    fails(capsys, *common, "--labels", tmp / "long.txt",
          match=f"long.txt has {tokens + 2} values; the corpus has {tokens} tokens")
    fails(capsys, "analyze", "units", tmp / "x.safetensors", "--feature-from", tmp / "items.tsv", "--feature", "x",
          match="--feature-from applies with --file")
    fails(capsys, *common, "--labels", tmp / "labels.txt", "--metric", "probe", match="metric probe")
    fails(capsys, "analyze", "units", model, "--labels", tmp / "labels.txt", "--grid-bins", 64,
          match="applies with --file")
    fails(capsys, "trace", model, "--text", "the boy", "--shard-tokens", 5, "-o", tmp / "d", match="give --file")
    fails(capsys, "analyze", "units", model, "--file", tmp / "corpus.txt", "--labels", tmp / "labels.txt",
          "--distributed", match="runs under torchrun")
    (tmp / "full").mkdir()
    (tmp / "full" / "other.txt").write_text("x")
    fails(capsys, "trace", model, "--file", tmp / "corpus.txt", "--shard-tokens", 50, "-o", tmp / "full",
          match="not an empty folder")
    assert os.listdir(tmp / "full") == ["other.txt"]


def test_a_sharded_trace_replaces_an_older_one_as_a_set(corpus, capsys):
    tmp, model = corpus
    out = tmp / "set"
    for shard_tokens in (30, 200):
        main(["trace", str(model), "--file", str(tmp / "corpus.txt"), "--shard-tokens", str(shard_tokens),
              "-o", str(out)])
    assert "2 shards" in capsys.readouterr().out.splitlines()[-1]
    assert sorted(os.listdir(out)) == ["index.json", "trace-00000-of-00002.safetensors",
                                       "trace-00001-of-00002.safetensors"]
    assert not [p for p in os.listdir(tmp) if p.startswith(".set.")]  # no temporary folder left
    one = tmp / "whole.safetensors"
    main(["trace", str(model), "--file", str(tmp / "corpus.txt"), "-o", str(one)])
    whole, sharded = load_trace(one), load_trace(out)
    for name in whole.names:
        assert torch.allclose(sharded[name][:], whole[name][:], rtol=0, atol=1e-6)  # other batches, same values


def torchrun(nproc: int, *args) -> str:
    """Run ``gatescope ARGS`` under torchrun (torch.distributed.run, gloo on CPU) -> rank 0's stdout."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node",
                           str(nproc), "-m", "gatescope", *map(str, args)], capture_output=True, text=True, env=env,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "destroy_process_group() was not called" not in done.stderr  # every rank left its group
    return done.stdout


@pytest.mark.slow  # a torchrun launch of 2 processes: ~5 s; CI runs it with the slow tests
def test_two_processes_under_torchrun_equal_one(corpus, capsys):
    tmp, model = corpus
    args = ("analyze", "units", model, "--file", tmp / "corpus.txt", "--labels", tmp / "labels.txt",
            "--top", 0, "--json", "--batch-size", 5)
    single = run_json(capsys, *args)
    double = json.loads(torchrun(2, *args))
    assert [r["unit"] for r in double] == [r["unit"] for r in single]
    for a, b in zip(double, single):
        assert a == pytest.approx(b, rel=1e-12, abs=1e-12)


@pytest.mark.slow  # another torchrun launch: ~5 s on a quiet machine
def test_two_processes_under_torchrun_write_the_same_shards(corpus, capsys):
    tmp, model = corpus
    main(["trace", str(model), "--file", str(tmp / "corpus.txt"), "--shard-tokens", 40, "--batch-size", 3,
          "-o", str(tmp / "one")])
    assert "shards" in capsys.readouterr().out
    out = torchrun(2, "trace", model, "--file", tmp / "corpus.txt", "--shard-tokens", 40, "--batch-size", 3,
                   "-o", tmp / "two")
    assert out.count("wrote") == 1  # rank 0 reports
    files = sorted(os.listdir(tmp / "one"))
    assert files == sorted(os.listdir(tmp / "two")) and len(files) > 3
    for name in files:
        assert (tmp / "one" / name).read_bytes() == (tmp / "two" / name).read_bytes(), name
    whole = load_trace(tmp / "one")
    assert whole.num_tokens == sum(len(line.split()) for line in (tmp / "corpus.txt").read_text().splitlines())


def _interrupted_after_one_shard(monkeypatch, interrupt):
    """Make the next sharded trace call ``interrupt()`` once its first shard is written."""
    import gatescope.runs.trace as runs_trace

    write = runs_trace.write_inputs

    def write_then_interrupt(*args, **kwargs):
        counts = write(*args, **kwargs)
        interrupt()
        return counts

    monkeypatch.setattr(runs_trace, "write_inputs", write_then_interrupt)


def _raise_keyboard_interrupt():
    raise KeyboardInterrupt


@pytest.mark.parametrize("interrupt, status", [(_raise_keyboard_interrupt, 130),
                                                (lambda: os.kill(os.getpid(), signal.SIGTERM), 143)])
def test_ctrl_c_and_sigterm_leave_no_temporary_shard_folder(corpus, monkeypatch, interrupt, status):
    tmp, model = corpus
    before = signal.signal(signal.SIGTERM, lambda *_: sys.exit(99))  # never kills pytest, whatever the code does
    try:
        _interrupted_after_one_shard(monkeypatch, interrupt)
        with pytest.raises(SystemExit) as exit_info:
            main(["trace", str(model), "--file", str(tmp / "corpus.txt"), "--shard-tokens", "30", "-o",
                  str(tmp / "cut")])
    finally:
        signal.signal(signal.SIGTERM, before)
    assert exit_info.value.code == status
    assert not [p for p in os.listdir(tmp) if p.startswith(".cut.")] and not (tmp / "cut").exists()


def test_the_next_run_removes_a_killed_runs_shard_folder_and_keeps_a_live_ones(corpus, capsys):
    import fcntl

    tmp, model = corpus
    killed, live = tmp / ".kill.abc123.tmp", tmp / ".kill.def456.tmp"  # as a SIGKILLed run and a running one leave them
    for folder in (killed, live):
        folder.mkdir()
        (folder / "trace-00000-of-00009.safetensors").write_bytes(b"partial")
    held = os.open(live, os.O_RDONLY)
    try:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        main(["trace", str(model), "--file", str(tmp / "corpus.txt"), "--shard-tokens", "200", "-o", str(tmp / "kill")])
        assert not killed.exists() and live.exists() and (tmp / "kill" / "index.json").exists()
    finally:
        os.close(held)
