"""Every shell and Python block of README.md and docs/ runs as written, in order, in a fresh copy of the clone.

Each document runs on its own, in a new folder holding the repository's files (what a fresh clone holds,
sample_models/ included): its ```bash blocks each as one bash script (``set -euo pipefail``), its ```python
blocks each as one program, so a block stands alone, reading only the files that the blocks before it wrote.
A block that must not run there (installing, long training, an interactive terminal, a cluster) is preceded
by ``<!-- skip: why -->``; a block that needs an optional extra names its packages by import name,
``<!-- requires: nnsight -->``, and runs where they are installed (CI installs them). The blocks not run are
counted and listed. Other fences (```text, ```json, ...) are output or formats, not commands; a fence
without a language is refused, so none is left out unnoticed.

The runs are slow (minutes on two cores: docs/findings.md's `gatescope findings` alone takes one or two):
``python -m pytest -q -m slow tests/test_docs.py``; the checks of the markers run by default.
"""
from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RUN = {"bash": "bash", "sh": "bash", "shell": "bash", "python": "python"}
SKIP = re.compile(r"<!--\s*skip:\s*(.*?)\s*-->")
REQUIRES = re.compile(r"<!--\s*requires:\s*(.*?)\s*-->")  # an optional extra's packages, by import name
FENCE = re.compile(r"^```(\S*)[^\n]*\n(.*?)^```[ \t]*$", re.S | re.M)


@dataclass(frozen=True)
class Block:
    """One fenced block: its language, code, line in the document, why it must not run (None when it runs)
    and the optional packages it imports."""

    lang: str
    code: str
    line: int
    skip: str | None
    requires: tuple[str, ...] = ()

    def missing(self) -> list[str]:
        """The packages it requires that are not installed here."""
        return [name for name in self.requires if importlib.util.find_spec(name) is None]


def documents() -> list[Path]:
    """README.md, then every Markdown page of the documentation site, in path order."""
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def blocks(path: Path) -> list[Block]:
    """The fenced blocks of a Markdown file, in order, each with the skip reason written just above it."""
    text = path.read_text(encoding="utf-8")
    found = []
    for match in FENCE.finditer(text):
        before = text[:match.start()].rstrip().splitlines()
        skip = SKIP.fullmatch(before[-1].strip()) if before else None
        requires = REQUIRES.fullmatch(before[-1].strip()) if before else None
        found.append(Block(match.group(1).lower(), match.group(2), text.count("\n", 0, match.start()) + 1,
                           skip.group(1) if skip else None,
                           tuple(n.strip() for n in requires.group(1).split(",")) if requires else ()))
    return found


def runnable(path: Path) -> tuple[list[Block], list[Block]]:
    """(blocks to run, blocks not run) among the shell and Python blocks of a document: a block is not run
    when it is marked skipped, or when a package it requires (an optional extra's) is not installed."""
    code = [b for b in blocks(path) if b.lang in RUN]
    code = [b if b.skip or not b.missing() else Block(b.lang, b.code, b.line, f"{', '.join(b.missing())} not "
                                                      "installed", b.requires) for b in code]
    return [b for b in code if b.skip is None], [b for b in code if b.skip is not None]


def fresh_clone(folder: Path) -> Path:
    """The repository's files (tracked, and new ones git does not ignore) copied into a new folder."""
    try:
        listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                                cwd=ROOT, capture_output=True, check=True).stdout.decode().split("\0")
    except (OSError, subprocess.CalledProcessError):  # not a git checkout: everything but the usual outputs
        shutil.copytree(ROOT, folder, ignore=shutil.ignore_patterns(".git", "__pycache__", "*.trace.safetensors",
                                                                     "findings", "site", ".venv"))
        return folder
    for name in filter(None, listed):
        source = ROOT / name
        if source.is_file():
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, folder / name)
    return folder


def test_every_fence_says_its_language_and_every_skip_why():
    for path in documents():
        for block in blocks(path):
            where = f"{path.relative_to(ROOT)}:{block.line}"
            assert block.lang, f"{where}: a fence without a language (bash, python, text, json, ...)"
            assert block.skip is None or block.skip, f"{where}: a skip marker without a reason"
            assert block.skip is None or block.lang in RUN, f"{where}: a skip marker on a block that never runs"
            assert block.skip or "pip install" not in block.code, f"{where}: installs packages: mark it skipped"


def test_the_readme_and_the_guide_have_commands_to_run():
    counts = {path.name: len(runnable(path)[0]) for path in documents()}
    assert counts["README.md"] >= 3 and counts["tracing.md"] >= 3 and counts["analyses.md"] >= 3


@pytest.mark.slow
@pytest.mark.parametrize("doc", [p.relative_to(ROOT).as_posix() for p in documents()])
def test_every_block_runs_in_order_in_a_fresh_clone(doc, tmp_path, capsys):
    run, skipped = runnable(ROOT / doc)
    if not run and not skipped:
        pytest.skip(reason=f"{doc} has no shell or Python block")
    folder = fresh_clone(tmp_path / "clone")
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
               PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),  # this checkout's gatescope
               OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"), MPLBACKEND="Agg")
    for block in run:
        # never install into the interpreter running the tests: such a block must be marked skipped
        assert "pip install" not in block.code, f"{doc}:{block.line}: installs packages: mark it <!-- skip: why -->"
        args = (["bash", "-c", "set -euo pipefail\n" + block.code] if RUN[block.lang] == "bash"
                else [sys.executable, "-c", block.code])
        done = subprocess.run(args, cwd=folder, env=env, stdin=subprocess.DEVNULL, capture_output=True,
                              text=True, timeout=900)
        assert done.returncode == 0, (f"{doc}:{block.line} ({block.lang}) exit {done.returncode}\n{block.code}\n"
                                      f"--- stdout\n{done.stdout[-2000:]}\n--- stderr\n{done.stderr[-3000:]}")
    with capsys.disabled():
        reasons = "; ".join(f"line {b.line}: {b.skip}" for b in skipped)
        print(f"\n{doc}: {len(run)} blocks run, {len(skipped)} skipped" + (f" ({reasons})" if reasons else ""))
