"""Every command of the README's "Finding and testing units" section, in order, in a fresh folder
holding what a clone's root holds for them (sample_models/).

Slow (it runs `gatescope findings`, about a minute on two cores): `python -m pytest -q -m slow
tests/findings/test_readme_analysis.py`.
"""
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SECTION = "### Finding and testing units"


def section_blocks() -> list[tuple[str, str]]:
    """(language, code) of each fenced block of the section, in order."""
    text = (ROOT / "README.md").read_text()
    start = text.index(SECTION)
    end = text.index("\n## ", start)
    return re.findall(r"```(\w+)\n(.*?)```", text[start:end], re.S)


def bash_commands(code: str) -> list[str]:
    """One command per line, backslash continuations joined."""
    return [c for c in code.replace("\\\n", " ").splitlines() if c.strip() and not c.lstrip().startswith("#")]


def test_the_section_starts_from_gatescope_findings():
    blocks = section_blocks()
    assert [lang for lang, _ in blocks] == ["bash", "python"]
    first = bash_commands(blocks[0][1])[0]
    assert first.startswith("gatescope findings --out findings")


@pytest.mark.slow
def test_every_analysis_command_works_in_order(tmp_path):
    shutil.copytree(ROOT / "sample_models", tmp_path / "sample_models")  # the paths a fresh clone has
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
               OMP_NUM_THREADS="1")
    for lang, code in section_blocks():
        commands = bash_commands(code) if lang == "bash" else [code]
        for command in commands:
            args = ["bash", "-c", command] if lang == "bash" else [sys.executable, "-c", command]
            done = subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
            assert done.returncode == 0, f"{command}\n{done.stderr[-2000:]}"
    assert (tmp_path / "findings" / "findings.json").is_file() and (tmp_path / "nounpp_69.png").is_file()
