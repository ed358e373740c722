"""`gatescope browse`: bad files give one line and exit 1; a saved (memory-mapped) trace browses like one in memory."""
from __future__ import annotations

import asyncio
import json
import subprocess
import sys

import numpy as np
import pytest
from tests.tui.test_app import LSTM_KINDS, SIZE, word_trace

from gatescope.cli import main
from gatescope.tui.app import GatescopeApp
from gatescope.tui.heatmap import Heatmap
from gatescope.tui.unit_detail import UnitDetail


def browse(capsys, *args: str) -> tuple[int, str]:
    with pytest.raises(SystemExit) as exit_:
        main(["browse", *args])
    return exit_.value.code, capsys.readouterr().err


def test_missing_corrupt_and_foreign_files_are_one_line_errors(tmp_path, capsys):
    code, err = browse(capsys, str(tmp_path / "nope.safetensors"))
    assert code == 1 and err == f"gatescope: error: no such file: {tmp_path / 'nope.safetensors'}\n"
    corrupt = tmp_path / "corrupt.safetensors"
    corrupt.write_bytes(b"\xff" * 64)
    code, err = browse(capsys, str(corrupt))
    assert code == 1 and err.startswith("gatescope: error: ") and err.count("\n") == 1 and "Traceback" not in err
    word_trace().save(tmp_path / "ok.safetensors")
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes((tmp_path / "ok.safetensors").read_bytes()[:-100])
    code, err = browse(capsys, str(truncated))
    assert code == 1 and "truncated or corrupt" in err and err.count("\n") == 1
    code, err = browse(capsys, str(tmp_path / "ok.safetensors"), "--export-dir", str(tmp_path / "figs" / "run1"))
    assert (tmp_path / "figs" / "run1").is_dir() and "needs a terminal" in err  # made; then no terminal here
    code, err = browse(capsys, str(tmp_path / "ok.safetensors"), "--export-dir", str(tmp_path / "ok.safetensors" / "x"))
    assert code == 1 and "cannot make the folder" in err and err.count("\n") == 1


def test_a_trace_file_of_the_wrong_shape_is_a_one_line_error(tmp_path, capsys):
    """Shapes are checked when the file is read (gatescope.traces.file), and the message names the file."""
    from safetensors.numpy import save_file

    meta = {"gatescope": json.dumps({"format": "gatescope.trace", "format_version": 1})}
    tensors = {"rnn.l0.fwd.h": np.zeros((4, 3), np.float32), "offsets": np.array([0, 5])}
    save_file(tensors, str(tmp_path / "short.safetensors"), metadata=meta)
    code, err = browse(capsys, str(tmp_path / "short.safetensors"))
    path = tmp_path / "short.safetensors"
    expected = (f"gatescope: error: {path} is not a valid trace: "
                "trace tensor rnn.l0.fwd.h has shape (4, 3); expected [5, hidden]\n")
    assert (code, err) == (1, expected)


def test_browsing_a_trace_file_never_imports_torch(tmp_path):
    """`gatescope browse FILE` reads the file with numpy (gatescope.traces.file): no 2 s `import torch` first."""
    word_trace().save(tmp_path / "t.safetensors")
    code = f"""
import asyncio, sys
from gatescope.cli import browse  # the command's module, then what it runs
from gatescope.tui.app import GatescopeApp

async def scenario():
    app = GatescopeApp({str(tmp_path / "t.safetensors")!r}, start="rnn.l0.fwd.i")
    async with app.run_test(size={SIZE}) as pilot:
        await pilot.press("right", "pagedown", "k", "L", "slash", *"the car", "enter")
        await app.workers.wait_for_complete()
        await pilot.pause()
        print(app.name_shown, app.heatmap.row, app.query_one("#rank-status").content)

asyncio.run(scenario())
print("torch" in sys.modules, "gatescope.traces.trace" in sys.modules, "gatescope.analysis" in sys.modules)
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    shown, torch_loaded = result.stdout.splitlines()
    assert shown == "rnn.l1.fwd.f 3 rnn.l1.fwd.f: Pearson r with number"  # the views ran: search and ranking
    assert torch_loaded == "False False False"


def test_help_names_the_keys():
    result = subprocess.run([sys.executable, "-c", "from gatescope.cli import main; main()", "browse", "--help"],
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0 and "Usage: gatescope browse [OPTIONS] TRACE" in result.stdout
    assert "--export-dir" in result.stdout and "Press ? for the keys" in result.stdout


def test_importing_the_package_does_not_load_textual():
    code = "import sys, gatescope, gatescope.tui; print('textual' in sys.modules, 'matplotlib' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.split() == ["False", "False"]


def test_a_saved_trace_browses_like_the_one_in_memory(tmp_path):
    trace = word_trace(hidden=600)  # rows of 600 units: several pages, released as they are read
    trace.save(tmp_path / "run.safetensors")

    async def scenario() -> None:
        # what `gatescope browse` opens: numpy memory maps
        app = GatescopeApp(tmp_path / "run.safetensors", start="rnn.l0.fwd.i:0")
        async with app.run_test(size=SIZE) as pilot:
            await pilot.press("right", "right", "down", "down", "down", "L", "pagedown", "left")
            await app.workers.wait_for_complete()
            await pilot.pause()
            heatmap = app.query_one(Heatmap)
            unit, row = heatmap.unit, heatmap.row
            assert app.name_shown == "rnn.l1.fwd.i" and unit == 3
            expected = {k: float(trace[f"rnn.l1.fwd.{k}"][row, unit]) for k in LSTM_KINDS}
            assert app.query_one(UnitDetail).values_at_cursor() == expected

    asyncio.run(scenario())
