"""The browser in a web page: `gatescope browse --web` served with textual-serve on localhost.

Each page that connects gets its own `gatescope browse` process (textual-serve's model); the files were
checked by the command before the server starts.
"""
from __future__ import annotations

import shlex
import sys
from pathlib import Path

from gatescope.errors import GatescopeError


def serve(trace: Path, export_dir: Path | None, ranking: Path | None, port: int) -> None:
    """Serve `gatescope browse` (the files already checked) to a web browser on localhost, with textual-serve."""
    import socket

    try:
        from textual_serve.server import Server
    except ImportError:
        raise GatescopeError("--web needs textual-serve: pip install 'gatescope[web]'") from None
    with socket.socket() as probe:
        if probe.connect_ex(("localhost", port)) == 0:
            raise GatescopeError(f"port {port} is in use; choose another with --port")
    command = [sys.executable, "-c", "from gatescope.cli import main; main()", "browse", str(trace.resolve())]
    if export_dir is not None:
        command += ["--export-dir", str(export_dir.resolve())]
    if ranking is not None:
        command += ["--ranking", str(ranking.resolve())]
    print(f"serving {trace} on http://localhost:{port} (Ctrl+C stops)", file=sys.stderr)
    Server(shlex.join(command), host="localhost", port=port, title=f"gatescope {trace.name}").serve()
