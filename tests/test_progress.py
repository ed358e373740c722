"""gatescope.progress: what each display leaves on stderr, on a terminal and in a log."""
from __future__ import annotations

import ast
import re
from pathlib import Path

from gatescope.progress import stages, task_bars

PACKAGE = Path(__file__).resolve().parents[1] / "gatescope"


def test_stages_in_a_log_are_one_line_each_with_wall_and_cpu_time(capsys):
    with stages("gatescope job", enabled=True) as stage:
        with stage("first"):
            sum(range(1000))
        with stage("second"):
            pass
    lines = capsys.readouterr().err.splitlines()
    assert [re.sub(r"\d+\.\d s", "T", line) for line in lines] == [
        "gatescope job: first: T (CPU T)", "gatescope job: second: T (CPU T)"]


def test_stages_on_a_terminal_are_a_live_display_each_done_with_its_time(capsys, monkeypatch):
    monkeypatch.setattr("sys.stderr.isatty", lambda: True)
    with stages("gatescope job", enabled=True) as stage:
        with stage("first"):
            pass
    err = capsys.readouterr().err
    assert re.search(r"done.*first.*0:00:00", err), err
    assert "gatescope job:" not in err  # the plain lines are for logs


def test_stages_not_enabled_show_nothing(capsys):
    with stages("gatescope job", enabled=False) as stage:
        with stage("first"):
            pass
    assert capsys.readouterr().err == ""


def test_task_bars_keep_a_bar_a_task_with_its_count(capsys):
    with task_bars() as start:
        start("agreement_gru")(3, 3)
        start("pysource_lstm")(1, 4)
    lines = capsys.readouterr().err.splitlines()
    assert [line.split()[0] for line in lines] == ["agreement_gru", "pysource_lstm"]
    assert " 3/3 " in lines[0] and " 1/4 " in lines[1]


def test_rich_progress_displays_are_built_here_only():
    """A command shows progress by calling gatescope.progress, never by building its own rich display."""
    def imports_rich_progress(path: Path) -> bool:
        return any(isinstance(node, ast.ImportFrom) and (node.module or "").startswith(("rich.progress", "rich.live"))
                   or isinstance(node, ast.Import) and any(a.name.startswith(("rich.progress", "rich.live"))
                                                           for a in node.names)
                   for node in ast.walk(ast.parse(path.read_text())))

    builders = sorted(str(path.relative_to(PACKAGE)) for path in PACKAGE.rglob("*.py") if imports_rich_progress(path))
    assert builders == ["progress.py"]
