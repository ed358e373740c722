"""The package's layers, read statically from the sources (lazy imports inside functions included).

Layers, bottom up (docs/architecture.md): the foundations and the door (errors, files, folders, numbers, kinds,
names, vocab, saturation, progress; validation/), traces/, recorder/, checkpoints/ and inputs/ (together the core), display/,
analysis/, the public API (gatescope/__init__.py, which re-exports from the layers below it), runs/ and
samples/, findings/, tui/, cli/ (and ``python -m gatescope``). Imports point
down or stay within a layer; the only way up is a notebook asking a Trace for its HTML (`_repr_html_` imports
gatescope.display, lazily). No module imports another that imports it back, however indirectly. Textual is
imported inside gatescope/tui/ only. The old flat import paths still answer, with a DeprecationWarning.
Every module has its row in the module map of docs/architecture.md, and every row there names a module.
"""
from __future__ import annotations

import ast
import importlib
import re
import sys
import warnings
from pathlib import Path

import pytest

from gatescope import _moved

PACKAGE = Path(__file__).resolve().parents[1] / "gatescope"
ARCHITECTURE = PACKAGE.parent / "docs" / "architecture.md"
RANKS = {
    "foundation": 0, "validation": 0, "traces": 1, "recorder": 2, "checkpoints": 3, "inputs": 3, "display": 4,
    "analysis": 5, "api": 5.5, "runs": 6, "samples": 6, "findings": 7, "tui": 8, "cli": 9,
}
CORE = {"foundation", "validation", "traces", "recorder", "checkpoints", "inputs"}
UPWARD = {("gatescope.traces.trace", "gatescope.display.summary")}  # Trace._repr_html_, for notebooks


def _modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


MODULES = _modules()


def _resolve(module: str, name: str) -> str:
    """The module that ``from MODULE import NAME`` reads: a submodule, the module a public name of the API
    is defined in (``from gatescope import record``), or MODULE itself."""
    if f"{module}.{name}" in MODULES or f"{module}.{name}" == "gatescope.sample_models":
        return f"{module}.{name}"
    if module == "gatescope":
        import gatescope

        return gatescope._EXPORTS.get(name, "gatescope.errors")  # the API, or the errors it defines eagerly
    return module


def _imports(path: Path) -> tuple[set[str], set[str]]:
    """(gatescope modules imported, other top-level packages imported) by the file, anywhere in it."""
    own, other = set(), set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module.split(".")[0] != "gatescope":
                other.add(node.module.split(".")[0])
                continue
            for alias in node.names:
                own.add(_resolve(node.module, alias.name))
        elif isinstance(node, ast.Import):
            for alias in node.names:
                (own if alias.name.split(".")[0] == "gatescope" else other).add(alias.name.split(".")[0]
                                                                               if alias.name.split(".")[0] != "gatescope"
                                                                               else alias.name)
    return {m for m in own if m in MODULES}, other


GRAPH = {name: _imports(path)[0] for name, path in MODULES.items()}


def layer(module: str) -> str:
    parts = module.split(".")
    if len(parts) == 1:
        return "api"
    if parts[1] == "__main__":
        return "cli"
    return parts[1] if parts[1] in RANKS else "foundation"


def test_imports_point_down():
    upward = [f"{m} ({layer(m)}) -> {d} ({layer(d)})" for m, deps in GRAPH.items() for d in deps
              if RANKS[layer(d)] > RANKS[layer(m)] and (m, d) not in UPWARD]
    assert not upward, "\n".join(upward)


def test_the_core_imports_neither_analysis_nor_textual():
    for name, path in MODULES.items():
        if layer(name) in CORE:
            own, other = _imports(path)
            assert not {d for d in own if layer(d) not in CORE and (name, d) not in UPWARD}, name
            assert not other & {"textual", "textual_serve"}, name


def test_textual_is_imported_inside_the_browser_only():
    outside = [name for name, path in MODULES.items()
               if layer(name) != "tui" and _imports(path)[1] & {"textual", "textual_serve"}]
    assert not outside


def test_no_import_circles():
    """Tarjan's strongly connected components of the module graph: every one a single module."""
    index, low, stack, on_stack, circles, counter = {}, {}, [], set(), [], [0]
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10 * len(GRAPH)))

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in GRAPH[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    for v in GRAPH:
        if v not in index:
            visit(v)
    assert not circles, circles


@pytest.mark.parametrize("old", sorted(_moved.MOVED))
def test_old_import_paths_answer_with_the_moved_module_and_a_warning(old):
    for name in [n for n in sys.modules if n == old or n.startswith(old + ".")]:
        del sys.modules[name]  # a test before may have imported it already
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        module = importlib.import_module(old)
    assert module is importlib.import_module(_moved.MOVED[old])
    assert any(issubclass(w.category, DeprecationWarning) and _moved.MOVED[old] in str(w.message) for w in caught)


def test_a_moved_packages_submodule_is_the_same_module():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        old = importlib.import_module("gatescope.formats.keras")
    assert old is importlib.import_module("gatescope.checkpoints.formats.keras")


def test_the_run_helpers_old_names_in_the_trace_command_warn():
    import gatescope.cli.trace as command
    from gatescope.runs.trace import record_inputs

    with pytest.warns(DeprecationWarning, match="gatescope.runs.trace"):
        assert command.record_inputs is record_inputs


# Modules the map need not name: a package's __init__.py (its docstring says what the package holds; the
# packages are the map's headings), ``python -m gatescope``, and the shim that answers the old import paths
# until the next release (gatescope/_moved.py: a finder and the table of old -> new, no code of its own).
UNMAPPED_NAMES = {"__init__.py", "__main__.py"}
UNMAPPED = {"_moved.py"}


def _mapped() -> set[str]:
    """The modules (paths under gatescope/) that the tables of docs/architecture.md's "Modules" section name
    in their first column. A name is read as the doc writes it: from ``gatescope/`` when it says so; from the
    package its heading names (``### recorder/``: ``cells.py`` is recorder/cells.py) unless it starts with one
    of the heading's packages (``### runs/, samples/, findings/``: ``runs/trace.py``)."""
    section = ARCHITECTURE.read_text().split("\n## Modules\n", 1)[1].split("\n## ", 1)[0]
    named, packages = set(), []
    for line in section.splitlines():
        if line.startswith("### "):
            packages = re.findall(r"(\w+)/", line)
        elif line.startswith("| `"):
            for name in re.findall(r"`([^`]+\.py)`", line.split(" | ")[0]):
                if name.startswith("gatescope/"):
                    named.add(name.removeprefix("gatescope/"))
                elif name.split("/")[0] in packages or len(packages) != 1:
                    named.add(name)
                else:
                    named.add(f"{packages[0]}/{name}")
    return named


def test_every_module_has_a_row_in_the_architecture_map():
    modules = {path.relative_to(PACKAGE).as_posix() for path in PACKAGE.rglob("*.py")
               if path.name not in UNMAPPED_NAMES}
    missing = sorted(modules - UNMAPPED - _mapped())
    assert not missing, ("modules without a row in the module map of docs/architecture.md (## Modules): "
                         + ", ".join(f"gatescope/{m}" for m in missing))


def test_every_row_of_the_architecture_map_names_a_module():
    stale = sorted(name for name in _mapped() if not (PACKAGE / name).is_file())
    assert not stale, ("docs/architecture.md's module map names modules that are not there: "
                       + ", ".join(f"gatescope/{name}" for name in stale))
