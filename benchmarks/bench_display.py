"""Benchmark the notebook display on a million-token trace: it reads only what it draws, as on a small trace.

Writes (with make_big_trace.py) a 1,000,000-token memory-mapped trace and, as the baseline of the same run, a
10,000-token one of the same shape, drops the big file's pages from the page cache (the first figure reads
from disk), then times on both: `gatescope.show(trace, unit=...)` over one sequence, the same over the whole
corpus seen as one sequence (cut to its first 2000 tokens, and says so), a 16-unit heatmap of a window, and
``Trace._repr_html_``. Prints each figure for both and their ratio (about 1: the cost does not grow with the
trace). Target (the notebook issue): under 1 s on the million-token trace.

    python benchmarks/bench_display.py                      # traces in a temporary folder (about 1.5 GB)
    python benchmarks/bench_display.py --trace BIG.safetensors --baseline SMALL.safetensors
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent


def make(path: Path, tokens: int, hidden: int) -> Path:
    subprocess.run([sys.executable, str(HERE / "make_big_trace.py"), str(path), "--tokens", str(tokens),
                    "--layers", "1", "--hidden", str(hidden)], check=True)
    return path


def drop_cache(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def timed(fn: Callable[[], object], repeats: int) -> tuple[float, float, object]:
    """(first call, best of the rest) in seconds, and the first call's result."""
    began = time.perf_counter()
    result = fn()
    first = time.perf_counter() - began
    best = first
    for _ in range(repeats - 1):
        began = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - began)
    return first, best, result


def cases(path: Path) -> dict[str, Callable[[], object]]:
    import gatescope

    trace = gatescope.load_trace(path)
    corpus = gatescope.Trace(dict(trace.items()), [0, trace.num_tokens], token_ids=trace.token_ids, meta=trace.meta)
    middle = trace.num_tokens // 2
    return {
        "show unit, one sequence": lambda: gatescope.show(trace, unit="rnn.l0.fwd.c:7",
                                                          sequences=[trace.sequence_of(middle)]),
        "show unit, whole corpus": lambda: gatescope.show(corpus, unit="rnn.l0.fwd.c:7"),
        "heatmap 16 units x 200": lambda: gatescope.show(corpus, units=[f"rnn.l0.fwd.h:{i}" for i in range(16)],
                                                        window=(middle, middle + 200)),
        "Trace._repr_html_": lambda: trace._repr_html_(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trace", type=Path, help="a big trace (default: write a 1M-token one)")
    parser.add_argument("--baseline", type=Path, help="a small trace of the same shape (default: write one)")
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        big = args.trace or make(Path(tmp) / "big.safetensors", 1_000_000, args.hidden)
        small = args.baseline or make(Path(tmp) / "small.safetensors", 10_000, args.hidden)
        drop_cache(big)
        results = {}
        for label, path in (("big", big), ("small", small)):
            for name, fn in cases(path).items():
                first, best, figure = timed(fn, args.repeats)
                results[label, name] = (first, best, getattr(figure, "cut", None))
    print(f"{'figure':<26} {'1M first':>9} {'1M best':>8} {'10k best':>9} {'ratio':>6}  cut (1M)")
    for name in [k[1] for k in results if k[0] == "big"]:
        first, best, cut = results["big", name]
        base = results["small", name][1]
        print(f"{name:<26} {first * 1e3:7.1f}ms {best * 1e3:6.1f}ms {base * 1e3:7.1f}ms {best / base:6.2f}  {cut}")


if __name__ == "__main__":
    main()
