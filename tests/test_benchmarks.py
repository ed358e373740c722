"""The benchmark scripts measure the speed targets, so they must keep up with the package: every name they
import from gatescope, at any depth of a function, resolves (a benchmark is run by hand, not by the suite,
so a name removed from gatescope would otherwise go unseen until someone times something)."""
from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

BENCHMARKS = sorted((Path(__file__).resolve().parent.parent / "benchmarks").glob("*.py"))


def gatescope_imports(path: Path) -> list[tuple[int, str, str | None]]:
    """(line, module, name) of each import of gatescope in the file; name None for `import gatescope.x`."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "gatescope":
            found += [(node.lineno, node.module, alias.name) for alias in node.names]
        elif isinstance(node, ast.Import):
            found += [(node.lineno, a.name, None) for a in node.names if a.name.split(".")[0] == "gatescope"]
    return found


def test_there_are_benchmarks():
    assert {"bench_record.py", "bench_trace.py", "bench_stream.py"} <= {p.name for p in BENCHMARKS}


@pytest.mark.parametrize("path", BENCHMARKS, ids=lambda p: p.name)
def test_every_gatescope_name_a_benchmark_imports_exists(path):
    missing = []
    for line, module, name in gatescope_imports(path):
        imported = importlib.import_module(module)
        if name is not None and not hasattr(imported, name):
            try:
                importlib.import_module(f"{module}.{name}")
            except ImportError:
                missing.append(f"{path.name}:{line}: {module}.{name}")
    assert not missing, missing
