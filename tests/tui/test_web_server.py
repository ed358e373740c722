"""`gatescope browse TRACE --web` over HTTP and its websocket (aiohttp's client, which textual-serve depends on):
only the printed URL's token opens the page and the websocket, a foreign Origin is refused, pages are limited,
a closed websocket ends its process, a stopped server leaves none, and a port in use is one line."""
from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from tests.tui.test_app import word_trace

pytestmark = [
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads the server's children from /proc"),
]
aiohttp = pytest.importorskip("aiohttp", reason="the web view needs textual-serve (the web extra), which brings aiohttp")
pytest.importorskip("textual_serve", reason="needs textual-serve (pip install 'gatescope[web]')")


def children(pid: int) -> set[int]:
    """The live child processes of ``pid`` (from /proc)."""
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        fields = text[text.rindex(")") + 2:].split()
        if int(fields[1]) == pid and fields[0] != "Z":
            found.add(int(stat.parent.name))
    return found


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def wait_until(check, seconds: float = 30) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.1)
    return False


def start_server(tmp_path, *options) -> tuple[subprocess.Popen, str]:
    """Start `gatescope browse --web` on a free port -> (its process, the URL it printed)."""
    word_trace().save(tmp_path / "t.safetensors")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "gatescope", "browse", str(tmp_path / "t.safetensors"), "--web",
                               "--port", str(port), *map(str, options)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    for line in server.stderr:
        if line.startswith("serving "):
            return server, line.split(" at ")[1].split()[0]
    raise AssertionError(f"the server did not start: {server.wait()}")


def stop(server: subprocess.Popen) -> None:
    if server.poll() is None:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


async def page_status(session, url: str, **headers) -> int:
    async with session.get(url, headers=headers) as response:
        return response.status


async def websocket_refusal(session, url: str, **headers) -> int | None:
    """The HTTP status that refused the websocket, or None when it opened (it is closed again)."""
    try:
        async with session.ws_connect(url, headers=headers):
            return None
    except aiohttp.WSServerHandshakeError as exc:
        return exc.status


@pytest.mark.slow
def test_the_token_the_origin_and_the_session_limit_guard_the_page_and_its_websocket(tmp_path):
    server, url = start_server(tmp_path, "--max-sessions", 1)
    try:
        base, token = url.split("/?token=")
        ws = f"ws://{base.split('://')[1]}/ws/{token}"

        async def probe():
            async with aiohttp.ClientSession() as session:
                assert await page_status(session, url) == 200
                assert await page_status(session, f"{base}/") == 403
                assert await page_status(session, f"{base}/?token=x{token}") == 403
                assert await page_status(session, url, Origin="http://evil.example") == 403
                assert await page_status(session, url, Origin=base) == 200
                assert await page_status(session, url, Host="evil.example") == 403  # DNS rebinding
                assert await websocket_refusal(session, f"{ws[:-1]}x") == 403
                assert await websocket_refusal(session, f"{base.replace('http', 'ws')}/ws") == 404
                assert await websocket_refusal(session, ws, Origin="http://evil.example") == 403
                async with session.ws_connect(f"{ws}?width=80&height=24") as first:
                    assert wait_until(lambda: len(children(server.pid)) == 1)
                    (app,) = children(server.pid)
                    assert await websocket_refusal(session, ws) == 503  # one page at a time
                    await first.send_json(["stdin", "j"])
                await asyncio.sleep(0)
                return app

        app = asyncio.run(probe())
        assert wait_until(lambda: not alive(app))  # the closed page's process ended
    finally:
        stop(server)


@pytest.mark.slow
def test_stopping_the_server_ends_every_session(tmp_path):
    server, url = start_server(tmp_path)
    base, token = url.split("/?token=")
    ws = f"ws://{base.split('://')[1]}/ws/{token}?width=80&height=24"
    apps = set()
    try:
        async def open_two_and_stop():
            async with aiohttp.ClientSession() as session:
                async with session.ws_connect(ws), session.ws_connect(ws):
                    assert wait_until(lambda: len(children(server.pid)) == 2)
                    apps.update(children(server.pid))
                    server.send_signal(signal.SIGTERM)
                    await asyncio.get_running_loop().run_in_executor(None, server.wait, 30)

        asyncio.run(open_two_and_stop())
        assert server.returncode == 0 and len(apps) == 2
        assert wait_until(lambda: not any(alive(pid) for pid in apps), 10), "a session outlived the server"
    finally:
        stop(server)
        for pid in apps:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)


def test_a_port_in_use_is_one_line(tmp_path, capsys):
    from gatescope.cli import main

    word_trace().save(tmp_path / "t.safetensors")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))  # bound, not listening: nothing answers a probe
        with pytest.raises(SystemExit) as exit_info:
            main(["browse", str(tmp_path / "t.safetensors"), "--web", "--port", str(taken.getsockname()[1])])
    err = capsys.readouterr().err
    assert exit_info.value.code == 1 and len(err.splitlines()) == 1
    assert err.startswith("gatescope: error: cannot serve on 127.0.0.1:") and "in use" in err
