"""Every command's ``--json`` is strict JSON, through the one printer (gatescope.cli.output): a NaN or an infinity
in a result prints as null, never as the ``NaN`` JSON parsers refuse; no command prints JSON its own way."""
from __future__ import annotations

import ast
import json
from pathlib import Path

from tests.cli_helpers import cli

CLI = Path(__file__).resolve().parents[2] / "gatescope" / "cli"
AGREEMENT_LSTM = Path(__file__).resolve().parents[2] / "sample_models" / "agreement_lstm.safetensors"


def strict(text: str):
    """``text`` parsed as JSON proper: Python's parser takes NaN and Infinity unless told not to."""
    def refuse(constant: str):
        raise AssertionError(f"not JSON: {constant}")

    return json.loads(text, parse_constant=refuse)


def test_agreement_json_prints_a_nan_as_null(capsys, monkeypatch):
    from gatescope.analysis import agreement

    result = {"n": 0, "accuracy": float("nan"), "ci95": [float("-inf"), float("inf")], "without_distance": 0}
    monkeypatch.setattr(agreement, "evaluate_agreement", lambda *args, **kwargs: dict(result))
    out = cli(capsys, "agreement", AGREEMENT_LSTM, "--json").out
    assert strict(out) == {"n": 0, "accuracy": None, "ci95": [None, None], "without_distance": 0}


def test_inspect_json_prints_a_nan_as_null_in_its_indented_format(capsys, monkeypatch):
    from gatescope.cli import inspect

    monkeypatch.setattr(inspect, "build_report", lambda *args: ({"file": "m", "spectral_radius": float("nan")}, None))
    out = cli(capsys, "inspect", AGREEMENT_LSTM, "--json").out
    assert strict(out) == {"file": "m", "spectral_radius": None}
    assert out == '{\n  "file": "m",\n  "spectral_radius": null\n}\n'


def _printed_json(path: Path) -> list[str]:
    """The places in ``path`` that turn a value into JSON text (json.dump(s), Table.to_json), other than a value
    quoted in a GatescopeError or a checkpoint's metadata: neither is a command's output."""
    tree = ast.parse(path.read_text())
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}

    def not_output(node: ast.AST) -> bool:
        while node in parents:
            node = parents[node]
            if isinstance(node, ast.keyword) and node.arg == "metadata":
                return True
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "GatescopeError":
                return True
        return False

    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module == "json":
            found.append(f"{path.name}:{node.lineno} from json import ...")
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and not not_output(node):
            func = node.func
            if func.attr == "to_json" or (func.attr in ("dump", "dumps") and isinstance(func.value, ast.Name)
                                          and func.value.id == "json"):
                found.append(f"{path.name}:{node.lineno} {ast.unparse(func)}")
    return found


def test_no_command_prints_json_but_through_the_one_printer():
    found = [place for path in sorted(CLI.glob("*.py")) for place in _printed_json(path)]
    assert not found, "JSON made outside gatescope.cli.output.print_json: " + ", ".join(found)


def test_the_check_finds_json_printed_by_hand(tmp_path):
    module = tmp_path / "command.py"
    module.write_text("import json\nimport click\n\n\ndef run(table, result):\n"
                      "    click.echo(json.dumps(result))\n    click.echo(table.to_json())\n")
    assert _printed_json(module) == ["command.py:6 json.dumps", "command.py:7 table.to_json"]
