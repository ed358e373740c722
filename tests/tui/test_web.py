"""`gatescope browse TRACE --web`: the page loads in a real headless browser and shows the trace's tokens.

Chromium (Debian's package) is driven over the DevTools protocol: it opens the page textual-serve
serves, the page's script opens its websocket and starts the app, and the frames the app sends to
the page (the terminal output xterm.js draws) must carry the trace's words. The page is opened at the URL
the command prints, with its token (tests/tui/test_web_server.py checks what the token, the Origin check and
the session limit refuse). Skipped, with the
reason, when chromium or textual-serve is not installed (.ci/run installs both).
"""
from __future__ import annotations

import asyncio
import base64
import json
import shutil
import socket
import subprocess
import sys
import time

import pytest
from tests.tui.test_app import word_trace

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(CHROMIUM is None, reason="needs chromium (apt-get install -y chromium)"),
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, process: subprocess.Popen, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"exited early: {process.communicate()[1]}")
        with socket.socket() as s:
            if s.connect_ex(("localhost", port)) == 0:
                return
        time.sleep(0.2)
    raise AssertionError(f"nothing listens on port {port} after {seconds} s")


async def frames_of_page(url: str, devtools: int, wanted: str, seconds: float) -> str:
    """Open ``url`` in the browser listening on ``devtools``; the websocket frames it received, until ``wanted``."""
    import aiohttp

    async with aiohttp.ClientSession() as session:
        async with session.get(f"http://localhost:{devtools}/json") as response:
            target = next(t for t in await response.json() if t["type"] == "page")
        async with session.ws_connect(target["webSocketDebuggerUrl"], max_msg_size=0) as ws:
            await ws.send_json({"id": 1, "method": "Network.enable"})
            await ws.send_json({"id": 2, "method": "Page.navigate", "params": {"url": url}})
            received = []
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline:
                try:
                    message = await asyncio.wait_for(ws.receive(), timeout=max(deadline - time.monotonic(), 0.1))
                except asyncio.TimeoutError:
                    break
                if message.type != aiohttp.WSMsgType.TEXT:
                    break
                event = json.loads(message.data)
                if event.get("method") == "Network.webSocketFrameReceived":
                    frame = event["params"]["response"]
                    data = frame["payloadData"]
                    if frame.get("opcode") == 2:
                        data = base64.b64decode(data).decode("utf-8", "replace")
                    received.append(data)
                    if wanted in "".join(received):
                        break
            return "".join(received)


def test_the_web_page_loads_and_shows_the_tokens(tmp_path):
    pytest.importorskip("textual_serve", reason="needs textual-serve (pip install 'gatescope[web]')")
    word_trace().save(tmp_path / "t.safetensors")
    port, devtools = free_port(), free_port()
    server = subprocess.Popen([sys.executable, "-c", "from gatescope.cli import main; main()", "browse",
                               str(tmp_path / "t.safetensors"), "--web", "--port", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    browser = None
    try:
        url = next((line.split(" at ")[1].split()[0] for line in server.stderr if line.startswith("serving ")), None)
        assert url is not None and url.startswith(f"http://127.0.0.1:{port}/?token="), server.wait()
        browser = subprocess.Popen([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                                    f"--remote-debugging-port={devtools}", f"--user-data-dir={tmp_path / 'profile'}",
                                    "--window-size=1400,900", "about:blank"],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for_port(devtools, browser, 30)
        shown = asyncio.run(frames_of_page(url, devtools, "greets", 60))  # the URL it printed, with its token
        assert "greets" in shown and "boys" in shown  # the sequence list and the text view, drawn in the page
    finally:
        for process in (browser, server):
            if process is not None:
                process.terminate()
                try:
                    process.wait(10)
                except subprocess.TimeoutExpired:
                    process.kill()
