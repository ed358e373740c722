"""`gatescope browse TRACE`: open a trace file in the terminal browser (gatescope.tui), or serve it to a web browser."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from gatescope.cli.params import WholeNumber
from gatescope.tui.web import MAX_SESSIONS  # (no textual-serve import until --web runs)

WEB_DRIVER = "TEXTUAL_DRIVER"  # set by textual-serve for the app it runs behind a web page


@click.command()
@click.argument("trace", type=click.Path(path_type=Path))
@click.option(
    "--export-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
    help="Folder for SVG and PNG exports (e and E keys), made if missing. Default: the current folder.",
)
@click.option(
    "--ranking", type=click.Path(dir_okay=False, path_type=Path), default=None,
    help="Fill the ranked-units panel from this file (the output of `gatescope analyze units --json`).",
)
@click.option(
    "--model", type=click.Path(dir_okay=False, path_type=Path), default=None,
    help="The checkpoint for the explain panel (x): default, the one the trace's metadata names.",
)
@click.option("--web", is_flag=True, help="Serve the browser to a web browser on 127.0.0.1 (textual-serve), at a "
              "URL with a secret token.")
@click.option("--port", type=WholeNumber(1, 65535), default=None, help="Port for --web (default 8000).")
@click.option("--max-sessions", type=WholeNumber(1, 100), default=None,
              help=f"Pages --web serves at once, each its own process (default {MAX_SESSIONS}).")
def browse(trace: Path, export_dir: Path | None, ranking: Path | None, model: Path | None, web: bool,
           port: int | None, max_sessions: int | None) -> None:
    """Browse TRACE (a file written by `gatescope trace` or Trace.save) in the terminal.

    Heatmap of units x tokens for one quantity, the text coloured by the selected unit, every
    gate of that unit, the features as tracks, the sequences, units ranked by a feature, and
    LSTMVis's select-and-match (v or shift+arrows select a span). Press ? for the keys.
    With --web, open the URL it prints instead (http://127.0.0.1:PORT/?token=...: the token keeps other
    users and other web pages out); on a remote machine through an SSH tunnel, ssh -L PORT:127.0.0.1:PORT HOST,
    then the same URL.
    """
    from gatescope.errors import GatescopeError

    if port is not None and not web:
        raise GatescopeError("--port is the port of --web; add --web to serve the browser on it")
    if max_sessions is not None and not web:
        raise GatescopeError("--max-sessions is a limit of --web; add --web to serve the browser")
    from gatescope.tui.arrays import trace_file
    from gatescope.tui.ranking_file import read_ranking

    data = trace_file(trace)  # a bad file is a one-line error before anything else
    if ranking is not None:
        read_ranking(ranking, data)
    if export_dir is not None:
        try:
            export_dir.mkdir(parents=True, exist_ok=True)  # made now, so the first e or E does not fail
        except OSError as exc:
            raise GatescopeError(f"--export-dir {export_dir}: cannot make the folder ({exc.strerror})") from None
    if web:
        from gatescope.tui.web import serve

        serve(trace, export_dir, ranking, 8000 if port is None else port,
              MAX_SESSIONS if max_sessions is None else max_sessions)
        return
    if WEB_DRIVER not in os.environ and not all(f.isatty() for f in (sys.stdin, sys.stdout, sys.stderr)):
        # Textual draws on stderr: redirected, the screen would go into the file and the terminal stay blank
        raise GatescopeError("gatescope browse needs a terminal (stdin, stdout and stderr are not all one); "
                             "use --web to open it in a web browser, or `gatescope analyze` for text output")
    from gatescope.tui.app import GatescopeApp

    GatescopeApp(data, title=str(trace), export_dir=export_dir, ranking=ranking, model=model).run()


