"""gatescope's terminal trace browser (Textual): `run_browser(trace_or_path)`, `gatescope browse TRACE`.

Only the commands that open it import it (`gatescope browse`, and `gatescope inspect` on a
terminal); the core and the analysis layer never do, and Textual is loaded only when it runs.
"""
from __future__ import annotations

import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gatescope.traces.trace import Trace


def run_browser(
    trace_or_path: Trace | str | os.PathLike,
    export_dir: str | os.PathLike | None = None,
    ranking: str | os.PathLike | None = None,
) -> None:
    """Open the browser on a Trace or a trace file (see gatescope.tui.app.run_browser)."""
    from gatescope.tui.app import run_browser as run

    run(trace_or_path, export_dir=export_dir, ranking=ranking)
