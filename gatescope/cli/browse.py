"""`gatescope browse TRACE`: open a trace file in the terminal browser (gatescope.tui)."""
from __future__ import annotations

from pathlib import Path

import click


@click.command()
@click.argument("trace", type=click.Path(path_type=Path))
@click.option(
    "--export-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
    help="Folder for SVG and PNG exports (e and E keys). Default: the current folder.",
)
def browse(trace: Path, export_dir: Path | None) -> None:
    """Browse TRACE (a file written by `gatescope trace` or Trace.save) in the terminal.

    Heatmap of units x tokens for one quantity, the text coloured by the selected unit, every
    gate of that unit, the sequences, and units ranked by a feature. Press ? for the keys.
    """
    from gatescope.errors import GatescopeError
    from gatescope.tui.app import run_browser

    if export_dir is not None and not export_dir.is_dir():
        raise GatescopeError(f"--export-dir {export_dir} is not a folder")
    run_browser(trace, export_dir=export_dir)
