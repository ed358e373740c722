"""Long sequences: peak memory and tokens/s of `gatescope trace --whole` against the same text one line a sequence.

The char model (pysource_lstm) traces Python source built from the standard library's own modules
(argparse.py first, then others, repeated where a file must be longer than its source), in three
shapes, each `gatescope trace` in a fresh process:

* one file of 150,000 characters, ``--whole`` (one sequence, run in chunks of ``--chunk-steps``);
* 17 files of 444 KB in all, the longest 149,005 characters, ``--whole`` (batched by length, chunked);
* the same 17 files one line a sequence (``--file`` without ``--whole``): the short-line case, the
  baseline of the ratio.

For each: wall time, tokens/s, and the process's peak resident memory (VmHWM, from the kernel's rusage
of the child). The header gives the load average: on a shared machine compare within one run.
Usage: python benchmarks/bench_long.py [--chunk-steps 4096] [--dtype float16] [--repeats 1]
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

from gatescope import sample_models

MODEL = sample_models.path("pysource_lstm.safetensors")
SIZES = [149_005] + [18_500] * 15 + [17_495]  # 17 files, 444,000 characters


def stdlib_text() -> str:
    """Python source from the standard library, argparse.py first, as one long string."""
    lib = Path(sysconfig.get_paths()["stdlib"])
    names = ["argparse.py", "typing.py", "inspect.py", "pathlib/__init__.py", "dataclasses.py", "functools.py"]
    return "".join((lib / n).read_text(encoding="utf-8") for n in names if (lib / n).is_file())


def write_files(folder: Path, sizes: list[int], text: str) -> list[Path]:
    """Files of ``sizes`` characters cut from ``text`` (repeated when too short), each from its own start."""
    while len(text) < max(sizes) * 2:
        text += text
    paths = []
    for k, size in enumerate(sizes):
        start = (k * 7919) % (len(text) - size)
        path = folder / f"source_{k:02d}.py"
        path.write_text(text[start:start + size], encoding="utf-8")
        paths.append(path)
    return paths


# the command in a fresh process, timed from after its imports (interpreter start-up left out)
CHILD = """
import sys, time
from gatescope.cli import main
start = time.perf_counter()
try:
    main(sys.argv[1:])
except SystemExit as exc:
    if exc.code:
        raise
print(f"seconds {time.perf_counter() - start}")
"""


def traced(files: list[Path], whole: bool, out: Path, args) -> tuple[float, int, str]:
    """Run `gatescope trace` in a fresh process -> (seconds, peak RSS in bytes, its summary line)."""
    command = [sys.executable, "-c", CHILD, "trace", str(MODEL), *[a for f in files for a in ("--file", str(f))],
               "--chunk-steps", str(args.chunk_steps), "--dtype", args.dtype, "-o", str(out)]
    if whole:
        command.append("--whole")
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(process.pid, 0)
    lines, errors = process.stdout.read().strip().splitlines(), process.stderr.read().strip()
    if status:
        raise SystemExit(f"gatescope trace failed: {errors.splitlines()[-1] if errors else status}")
    return float(lines[-1].split()[1]), usage.ru_maxrss * 1024, lines[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--chunk-steps", type=int, default=4096)
    parser.add_argument("--dtype", default="float16", choices=["float32", "float16", "bfloat16"])
    parser.add_argument("--repeats", type=int, default=1, help="take each shape's fastest of this many runs")
    args = parser.parse_args()
    load = " ".join(f"{v:.2f}" for v in os.getloadavg())
    print(f"{os.cpu_count()} CPUs, load average {load}; pysource_lstm, --dtype {args.dtype}, "
          f"--chunk-steps {args.chunk_steps}; best of {args.repeats}")
    text = stdlib_text()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "one").mkdir()
        (folder / "many").mkdir()
        one, many = write_files(folder / "one", [150_000], text), write_files(folder / "many", SIZES, text)
        shapes = [("short lines (17 files)", many, False), ("--whole, 1 file of 150,000 chars", one, True),
                  ("--whole, 17 files, 444 KB", many, True)]
        results = {}
        for name, files, whole in shapes:
            runs = [traced(files, whole, folder / "t.safetensors", args) for _ in range(args.repeats)]
            seconds = min(r[0] for r in runs)
            peak = max(r[1] for r in runs)
            tokens = int(runs[0][2].split(" sequence")[1].split(", ")[1].split()[0].replace(",", ""))
            results[name] = tokens / seconds
            base = results[shapes[0][0]]
            print(f"  {name:34} {tokens:8d} tokens {seconds:7.2f}s {tokens / seconds:9.0f} tokens/s "
                  f"({base / (tokens / seconds):4.2f}x the short-line time a token)  peak RSS {peak / 2**20:6.0f} MiB")


if __name__ == "__main__":
    main()
