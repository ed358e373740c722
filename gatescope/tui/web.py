"""The browser in a web page: `gatescope browse --web`, served with textual-serve on 127.0.0.1 to its user only.

Each page that connects gets its own `gatescope browse` process (textual-serve's model); the files were
checked by the command before the server starts. What keeps the page its user's:

- a secret token, made when the server starts and printed in the URL it serves (as Jupyter does): the page
  (``/?token=...``) and its websocket (``/ws/TOKEN``) are refused without it, so another user of the machine
  can neither read the trace nor press keys;
- the Origin of a browser's request must be the address the page was loaded from, on a loopback name, so
  a web page the user visits elsewhere (or a DNS name rebound to 127.0.0.1) cannot drive it;
- at most ``max_sessions`` pages at once (each is a process);
- a session's process runs in its own process group and ends when its websocket closes (asked to quit,
  then SIGTERM, then SIGKILL: textual's web driver ignores SIGTERM while its loop is busy), every one ends
  when the server stops, and on Linux one also ends when the server is killed (PR_SET_PDEATHSIG).
"""
from __future__ import annotations

import asyncio
import os
import secrets
import shlex
import signal
import sys
from pathlib import Path
from typing import Any

from gatescope.errors import GatescopeError

HOST = "127.0.0.1"
LOOPBACK = {"127.0.0.1", "localhost", "[::1]"}  # names a browser on this machine (or an ssh -L tunnel) uses
QUIT_SECONDS = 2.0  # a session's process is asked to quit, then terminated, then killed, this long apart
MAX_SESSIONS = 3  # pages open at once, by default


def serve(trace: Path, export_dir: Path | None, ranking: Path | None, port: int, max_sessions: int = MAX_SESSIONS
          ) -> None:
    """Serve `gatescope browse` (the files already checked) to a web browser on 127.0.0.1, until Ctrl+C or SIGTERM."""
    try:
        import textual_serve  # noqa: F401
    except ImportError:
        raise GatescopeError("--web needs textual-serve: pip install 'gatescope[web]'") from None
    command = [sys.executable, "-c", "from gatescope.cli import main; main()", "browse", str(trace.resolve())]
    if export_dir is not None:
        command += ["--export-dir", str(export_dir.resolve())]
    if ranking is not None:
        command += ["--ranking", str(ranking.resolve())]
    server = _server_class()(command, port, f"gatescope {trace.name}", max_sessions)
    server.run(lambda url: print(f"serving {trace} at {url} (Ctrl+C stops; at most {max_sessions} pages at once)",
                                 file=sys.stderr, flush=True))


def _die_with_parent() -> None:
    """In a session's process before it starts: be killed when the server dies, however it dies (Linux)."""
    if sys.platform.startswith("linux"):
        import ctypes

        try:
            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass


async def _end(process: asyncio.subprocess.Process) -> None:
    """End a session's process group: SIGTERM, then SIGKILL if it is still there after QUIT_SECONDS."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        if process.returncode is not None:
            return
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            await asyncio.wait_for(process.wait(), QUIT_SECONDS)
        except asyncio.TimeoutError:
            continue


def _server_class() -> type:
    """The server, defined once textual-serve is known to be installed (the `web` extra)."""
    import aiohttp_jinja2
    import jinja2
    from aiohttp import web
    from aiohttp.web_runner import GracefulExit
    from textual_serve.app_service import AppService
    from textual_serve.server import Server, to_int

    class Session(AppService):
        """One page's `gatescope browse` process: started without a shell in its own process group, ended
        with it."""

        def __init__(self, argv: list[str], **kwargs: Any) -> None:
            super().__init__(shlex.join(argv), **kwargs)
            self.argv = argv

        async def _open_app_process(self, width: int = 80, height: int = 24) -> asyncio.subprocess.Process:
            self._process = process = await asyncio.create_subprocess_exec(
                *self.argv, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE, env=self._build_environment(width=width, height=height),
                start_new_session=True, preexec_fn=_die_with_parent)
            self._stdin = process.stdin
            return process

        async def stop(self) -> None:
            """Ask the app to quit; end its process group if it has not within QUIT_SECONDS."""
            try:
                await asyncio.wait_for(super().stop(), QUIT_SECONDS)
            except (asyncio.TimeoutError, ConnectionError):
                pass
            if self._process is not None:
                await _end(self._process)

    class GatescopeServer(Server):
        """textual-serve's server with a token, an Origin check, a session limit and sessions that end."""

        def __init__(self, argv: list[str], port: int, title: str, max_sessions: int) -> None:
            super().__init__(shlex.join(argv), host=HOST, port=port, title=title)
            self.argv = argv
            self.token = secrets.token_urlsafe(32)
            self.max_sessions = max_sessions
            self.sessions: set[Session] = set()

        def run(self, announce) -> None:
            """Serve until Ctrl+C or SIGTERM; ``announce(url)`` once listening. A port in use is one line."""
            loop = asyncio.new_event_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, self.request_exit)
            url = f"http://{HOST}:{self.port}/?token={self.token}"
            try:
                web.run_app(self._make_app(), host=HOST, port=self.port, handle_signals=False, loop=loop,
                            print=lambda *_: announce(url), access_log=None, shutdown_timeout=2 * QUIT_SECONDS)
            except OSError as exc:
                reason = os.strerror(exc.errno).lower() if exc.errno else str(exc)
                raise GatescopeError(f"cannot serve on {HOST}:{self.port}: {reason}; "
                                     "choose another port with --port") from None
            finally:
                for session in self.sessions:  # what shutdown did not end (it ends them all)
                    if session._process is not None and session._process.returncode is None:
                        try:
                            os.killpg(session._process.pid, signal.SIGKILL)
                        except ProcessLookupError:
                            pass
                loop.close()

        async def _make_app(self) -> web.Application:
            app = web.Application(middlewares=[self._guard])
            aiohttp_jinja2.setup(app, loader=jinja2.FileSystemLoader(self.templates_path))
            app.add_routes([
                web.get("/", self.handle_index, name="index"),
                web.get("/ws/{token}", self.handle_websocket, name="websocket"),
                web.static("/static", self.statics_path, name="static"),  # textual-serve's own scripts and fonts
            ])
            app.on_shutdown.append(self.on_shutdown)
            return app

        @web.middleware
        async def _guard(self, request: web.Request, handler) -> web.StreamResponse:
            """Refuse a request addressed to another name (DNS rebinding) or sent by a page of another origin."""
            host = request.host.rpartition(":")[0] if request.host.rpartition(":")[2].isdigit() else request.host
            if host not in LOOPBACK:
                raise web.HTTPForbidden(text="gatescope browse --web answers on 127.0.0.1 only\n")
            origin = request.headers.get("Origin")
            if origin is not None and origin != f"http://{request.host}":
                raise web.HTTPForbidden(text=f"a page of {origin} may not open gatescope browse --web\n")
            return await handler(request)

        def _check_token(self, given: str | None) -> None:
            if given is None or not secrets.compare_digest(given.encode(), self.token.encode()):
                raise web.HTTPForbidden(text="open the URL gatescope browse --web printed: it carries the token\n")

        @aiohttp_jinja2.template("app_index.html")
        async def handle_index(self, request: web.Request) -> dict[str, Any]:
            self._check_token(request.query.get("token"))
            base = f"{request.host}"  # the address the page was loaded from (an ssh -L tunnel's own port)
            return {
                "font_size": to_int(request.query.get("fontsize", "16"), 16),
                "app_websocket_url": f"ws://{base}/ws/{self.token}",
                "config": {"static": {"url": f"http://{base}/static/"}},
                "application": {"name": self.title},
            }

        async def handle_websocket(self, request: web.Request) -> web.StreamResponse:
            self._check_token(request.match_info["token"])
            if len(self.sessions) >= self.max_sessions:
                raise web.HTTPServiceUnavailable(
                    text=f"{self.max_sessions} pages are open already (browse --web --max-sessions N allows more)\n")
            websocket = web.WebSocketResponse(heartbeat=15)
            width = to_int(request.query.get("width", "80"), 80)
            height = to_int(request.query.get("height", "24"), 24)
            session = Session(self.argv, write_bytes=websocket.send_bytes, write_str=websocket.send_str,
                              close=websocket.close, download_manager=self.download_manager)
            self.sessions.add(session)
            try:
                await websocket.prepare(request)
                await session.start(width, height)
                await self._process_messages(websocket, session)
            except (asyncio.CancelledError, ConnectionError):
                pass
            finally:
                await session.stop()
                self.sessions.discard(session)
                if not websocket.closed:
                    await websocket.close()
            return websocket

        async def on_shutdown(self, app: web.Application) -> None:
            await asyncio.gather(*(session.stop() for session in list(self.sessions)), return_exceptions=True)

        def request_exit(self) -> None:
            raise GracefulExit()

    return GatescopeServer
