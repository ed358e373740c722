"""Benchmark the trace browser on a big trace: first screen, key latency, resident memory.

Drives `GatescopeApp` headless (Textual's Pilot, at a given terminal size) on TRACE and, as
the baseline of the same run, on a 10,000-token trace written by make_big_trace.py with
TRACE's layers and units, and prints each figure for both with their ratio (about 1 means
the cost does not grow with the trace). A key's latency is the time from the key press until
the last frame it caused has been rendered and encoded for the terminal (the app's
`_display` is wrapped to print each frame, as escape codes, into a buffer and note the time).
TRACE's pages are dropped from the page cache first (posix_fadvise DONTNEED), so the first
screen is read from disk. The first screen is timed in a fresh process from before the
browser's imports (Textual, numpy; the browser reads the file without torch), as
`gatescope browse TRACE` starts. Select-and-match is timed as a user does it (v, then
shift+right to a 6-token span) until the match list is filled: the first time (which loads the
analysis layer, and torch, in the worker) and again elsewhere (warm). Targets: first screen
< 1 s, cursor and page moves < 50 ms at p95, a match < 1 s, RSS < 500 MB.

    python benchmarks/make_big_trace.py /tmp/big.safetensors     # 1M tokens x 2 x 650, 15.6 GB
    python benchmarks/make_big_trace.py /tmp/mid.safetensors --layers 1 --hidden 128   # 1M x 128, 1.5 GB
    python benchmarks/bench_browser.py /tmp/big.safetensors [--rank]
"""
from __future__ import annotations

import argparse
import asyncio
import io
import math
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def rss_mb(field: str = "VmRSS") -> float:
    """Resident memory from /proc/self/status: VmRSS (all), RssAnon (heap), RssFile (mapped files:
    the shared libraries and any trace pages still mapped)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


def drop_cache(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def trace_shape(path: Path) -> tuple[int, int]:
    """(layers, units) of a trace file, read from its header, for a baseline of the same shape."""
    from gatescope.names import parse_name
    from gatescope.traces.file import read_trace_file

    data = read_trace_file(path)
    layers = {(q.path, q.layer) for q in map(parse_name, data.names)}
    return len(layers), max(int(array.shape[1]) for array in data.arrays.values())


def import_seconds() -> float:
    """Seconds a fresh interpreter takes to import the browser."""
    code = "import time; t = time.perf_counter(); import gatescope.tui.app; print(time.perf_counter() - t)"
    return float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)


async def measure(path: Path, size: tuple[int, int], keys: int, rank: bool) -> dict[str, float]:
    drop_cache(path)
    began = time.perf_counter()
    from rich.console import Console

    from gatescope.tui.app import GatescopeApp
    from gatescope.tui.messages import SequenceChosen

    imported = time.perf_counter()
    app = GatescopeApp(path)  # as `gatescope browse` opens it
    figures: dict[str, float] = {"torch imported (1 yes, 0 no)": float("torch" in sys.modules)}
    terminal = Console(file=io.StringIO(), force_terminal=True, color_system="truecolor", width=size[0])
    frames: list[float] = []
    display = app._display

    def display_and_time(screen, renderable) -> None:
        display(screen, renderable)
        if renderable is not None:
            terminal.file = io.StringIO()
            terminal.print(renderable, end="")  # what a real terminal would be sent
            frames.append(time.perf_counter())

    app._display = display_and_time
    async with app.run_test(size=size) as pilot:
        await pilot.pause()
        app.screen._compositor.render_update(full=True)  # the whole first frame, heatmap lines included
        figures["first screen (load + mount + paint), s"] = time.perf_counter() - imported
        figures["first screen from launch (imports + load + mount + paint), s"] = time.perf_counter() - began

        async def latency(action, count: int) -> tuple[list[float], list[float]]:
            """Times to the first frame (the key answered) and to the last (every view caught up)."""
            first, last = [], []
            for _ in range(count):
                frames.clear()
                start = time.perf_counter()
                await action()
                await pilot.pause()  # until idle: every frame the key caused is in `frames`
                first.append(frames[0] - start if frames else math.nan)
                last.append(frames[-1] - start if frames else math.nan)
            return sorted(first), sorted(last)

        def press(key: str):
            return lambda: pilot.press(key)

        rng = random.Random(0)
        sequences = app.source.num_sequences

        async def jump() -> None:
            app.post_message(SequenceChosen(rng.randrange(sequences)))

        for label, action, count in [
            ("cursor right", press("right"), keys),
            ("cursor down", press("down"), keys // 2),
            ("page scroll (PgDn)", press("pagedown"), keys // 4),
            ("page back (PgUp)", press("pageup"), keys // 8),
            ("jump to a random sequence", jump, keys // 8),
            ("switch kind (k)", press("k"), 12),
        ]:
            first, last = await latency(action, count)
            figures[f"{label}: first frame median, ms"] = statistics.median(first) * 1e3
            figures[f"{label}: first frame p95, ms"] = first[int(0.95 * (len(first) - 1))] * 1e3
            figures[f"{label}: all views median, ms"] = statistics.median(last) * 1e3
            figures[f"{label}: all views p95, ms"] = last[int(0.95 * (len(last) - 1))] * 1e3
        figures["resident memory after browsing, MB"] = rss_mb()
        figures["  of which heap (RssAnon), MB"] = rss_mb("RssAnon")
        figures["  of which mapped files: libraries + trace (RssFile), MB"] = rss_mb("RssFile")

        async def matched() -> None:
            while app.result is None or app.selection is None or app.result.selection != app.selection:
                await asyncio.sleep(0.002)

        async def select_and_match() -> tuple[float, list[float]]:
            """A 6-token span built with v and shift+right as a user does: the times of the extending keys'
            first frames, and the seconds from the last key to the filled match list."""
            keys = []
            for key in ("v", *["shift+right"] * 4):
                frames.clear()
                start = time.perf_counter()
                await pilot.press(key)
                keys.append(frames[0] - start if frames else math.nan)
            await matched()
            start = time.perf_counter()
            await pilot.press("shift+right")  # the span is complete: now the user waits for the list
            await matched()
            await pilot.pause()
            return time.perf_counter() - start, keys

        first, keys = await select_and_match()
        figures["match list after the span's last key, first time (loads the analysis layer), s"] = first
        figures["  matches listed"] = len(app.result.starts)
        figures["  candidate spans"] = app.result.candidates
        figures["  units selected"] = len(app.selection.units)
        warm = []
        for _ in range(3):
            await pilot.press("escape", "pagedown")
            seconds, more = await select_and_match()
            warm.append(seconds)
            keys += more
        keys.sort()
        figures["match list after the span's last key, warm (median of 3), s"] = statistics.median(warm)
        figures["selection keys (v, shift+right): first frame median, ms"] = statistics.median(keys) * 1e3
        figures["selection keys (v, shift+right): first frame p95, ms"] = keys[int(0.95 * (len(keys) - 1))] * 1e3
        figures["resident memory after matching (torch loaded), MB"] = rss_mb()
        if rank:
            start = time.perf_counter()
            app.action_rank("number")
            await pilot.pause()  # the Select posts Changed; the ranking worker starts on it
            await app.workers.wait_for_complete()
            figures["rank one quantity by a feature, s"] = time.perf_counter() - start
            figures["resident memory after ranking, MB"] = rss_mb()
            figures["  of which mapped files after ranking, MB"] = rss_mb("RssFile")
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("trace", type=Path)
    parser.add_argument("--size", default="200x50", help="terminal WIDTHxHEIGHT")
    parser.add_argument("--keys", type=int, default=200, help="cursor moves to time")
    parser.add_argument("--rank", action="store_true", help="also time ranking one quantity (streams it all)")
    parser.add_argument("--run-one", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    size = tuple(int(v) for v in args.size.split("x"))
    if args.run_one:  # a fresh process per trace, so memory figures do not mix
        for name, value in asyncio.run(measure(args.trace, size, args.keys, args.rank)).items():
            print(f"{name}\t{value}")
        return

    def run(path: Path) -> dict[str, float]:
        cmd = [sys.executable, __file__, str(path), "--size", args.size, "--keys", str(args.keys), "--run-one"]
        out = subprocess.run(cmd + (["--rank"] if args.rank else []), capture_output=True, text=True, check=True)
        return {k: float(v) for k, v in (line.split("\t") for line in out.stdout.splitlines())}

    layers, hidden = trace_shape(args.trace)
    with tempfile.TemporaryDirectory() as tmp:
        small = Path(tmp) / "small.safetensors"
        subprocess.run([sys.executable, str(HERE / "make_big_trace.py"), str(small), "--tokens", "10000",
                        "--layers", str(layers), "--hidden", str(hidden)], check=True, capture_output=True)
        baseline = run(small)
    figures = run(args.trace)
    imports = import_seconds()
    print(f"trace: {args.trace} ({args.trace.stat().st_size / 1e9:.1f} GB); baseline: a 10,000-token trace of the "
          f"same shape; terminal {args.size}; python {sys.version.split()[0]}, {os.cpu_count()} CPUs")
    print(f"{'figure':<60}{'big':>10}{'baseline':>10}{'ratio':>8}")
    for name, value in figures.items():
        ratio = f"{value / baseline[name]:>8.2f}" if baseline[name] else f"{'-':>8}"
        print(f"{name:<60}{value:>10.2f}{baseline[name]:>10.2f}{ratio}")
    print(f"{'import gatescope.tui.app (fresh interpreter), s':<60}{imports:>10.2f}")
    print(f"{'import + first screen (the two measured apart), s':<60}"
          f"{imports + figures['first screen (load + mount + paint), s']:>10.2f}")


if __name__ == "__main__":
    main()
