"""Helpers for the checkpoint-format tests: run the CLI on a file, read back its trace or report."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from gatescope.cli import main
from gatescope.traces.trace import Trace, load_trace


def cli_trace(tmp_path: Path, model: Path, *argv: str, name: str = "run.safetensors") -> Trace:
    """``gatescope trace MODEL -o TRACE ARGV...`` and the trace it wrote."""
    out = tmp_path / name
    main(["trace", str(model), "-o", str(out), *argv])
    return load_trace(out)


def inspect_json(capsys, model: Path) -> dict:
    capsys.readouterr()
    main(["inspect", str(model), "--json", "--no-tui"])
    return json.loads(capsys.readouterr().out)


def modules(report: dict) -> list[dict]:
    """The architecture part of each module entry of an `inspect --json` report."""
    keep = ("name", "cell", "input_size", "hidden_size", "num_layers", "bidirectional", "proj_size", "bias",
            "reset_after")
    return [{k: m[k] for k in keep if k in m} for m in report["modules"]]


def fails(capsys, *argv: str) -> str:
    """Run the CLI, expect exit status 1, return what it printed on stderr."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        main([str(a) for a in argv])
    assert exit_info.value.code == 1
    err = capsys.readouterr().err
    assert err.startswith("gatescope: error: ") and "Traceback" not in err
    return err


def convert_round_trip(tmp_path: Path, capsys, source: Path, *argv: str) -> tuple[Path, dict, dict]:
    """Convert ``source``, then inspect both: (output, report of the source, report of the output)."""
    direct = inspect_json(capsys, source)
    out = tmp_path / f"{source.name}.safetensors"
    main(["convert", str(source), "-o", str(out), *argv])
    capsys.readouterr()
    return out, direct, inspect_json(capsys, out)


def each_truncation(path: Path, tmp_path: Path, cuts: int = 12):
    """Copies of ``path`` cut short at ``cuts`` points (and one with a flipped byte midway), same suffix."""
    data = path.read_bytes()
    for i, cut in enumerate(sorted({max(1, len(data) * k // cuts) for k in range(cuts)})):
        damaged = tmp_path / f"cut{i}{''.join(path.suffixes)}"
        damaged.write_bytes(data[:cut])
        yield damaged
    flipped = bytearray(data)
    flipped[len(data) // 2] ^= 0xFF
    damaged = tmp_path / f"flipped{''.join(path.suffixes)}"
    damaged.write_bytes(bytes(flipped))
    yield damaged


def assert_loads_or_one_line(path: Path) -> None:
    """A damaged checkpoint either still loads (a flipped byte may land in a weight) or is a one-line error."""
    import gatescope

    try:
        gatescope.load(path)
    except gatescope.GatescopeError as exc:
        assert str(exc) and "\n" not in str(exc), str(exc)
