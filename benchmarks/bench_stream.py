"""Streaming a corpus: tokens/s of the one-pass ranking against tracing then ranking, 1 vs 2 processes
under torchrun (gloo), and the streaming pass's peak memory at two corpus sizes.

The model is the bundled agreement LSTM (1 x 128 units, all six kinds recorded = 768 units); the
corpus is its training grammar (gatescope.inputs.stimuli.agreement.training_corpus), one sentence a line,
with a binary label per token (a plural-looking word). Measured, in this order:

* stream:         ``analyze units MODEL --file CORPUS --labels L`` in this process (imports excluded);
* trace+analyze:  ``trace MODEL --file CORPUS -o T`` then ``analyze units T --permutations 0``,
                  the same ranking from a stored trace (ratio = its time / the stream's);
* torchrun K:     the streaming command under ``torchrun --standalone --nproc-per-node K``, K = 1, 2,
                  timed in rank 0 from after its imports and the process group's rendezvous;
* peak memory:    VmHWM of a fresh process streaming corpora of each --memory-tokens size; flat
                  means memory is bounded by the batch and the accumulators, not the corpus (the
                  corpus and its labels are read a line at a time; ``--memory-only`` measures just this).

With ``--device cuda --size 2x650`` (an untrained 2 x 650 word LSTM, Gulordava et al.'s shape) it gives
the GPU figure for one process.
Usage: python benchmarks/bench_stream.py [--tokens 50000] [--memory-tokens 100000,1000000] [--quick]
       [--memory-only] [--device cuda] [--size 2x650]
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from gatescope import sample_models
from gatescope.cli import main
from gatescope.inputs.stimuli.agreement import training_corpus

MODEL = sample_models.path("agreement_lstm.safetensors")


def big_model(folder: Path, hidden: int, layers: int) -> Path:
    """An untrained word LSTM of ``layers`` x ``hidden`` with the agreement LSTM's vocabulary (speed only)."""
    import json

    import torch
    from safetensors import safe_open

    from gatescope.samples.model import LanguageModel
    from gatescope.samples.train import save_checkpoint

    with safe_open(str(MODEL), "pt") as f:
        meta = json.loads(f.metadata()["gatescope"])
    torch.manual_seed(0)
    model = LanguageModel("LSTM", len(meta["vocab"]), hidden, hidden, layers)
    path = folder / f"lstm_{layers}x{hidden}.safetensors"
    keep = ("format", "version", "vocab", "tokenizer", "unk", "eos", "roles")
    save_checkpoint(model, path, {k: meta[k] for k in keep})
    return path


def write_corpus(folder: Path, tokens: int, name: str) -> tuple[Path, Path, int]:
    """A corpus of about ``tokens`` tokens and its labels file -> (corpus, labels, exact token count)."""
    sentences = training_corpus(max(1, tokens // 7), seed=0)
    corpus, labels = folder / f"{name}.txt", folder / f"{name}.labels.txt"
    corpus.write_text("\n".join(" ".join(s) for s in sentences) + "\n")
    labels.write_text("\n".join("1" if w.endswith("s") else "0" for s in sentences for w in s) + "\n")
    return corpus, labels, sum(map(len, sentences))


def quiet(argv: list[str]) -> float:
    """Seconds to run the gatescope command ``argv`` here, its output dropped."""
    with open(os.devnull, "w") as null:
        out, err = sys.stdout, sys.stderr
        sys.stdout = sys.stderr = null
        try:
            start = time.perf_counter()
            main(argv)
            return time.perf_counter() - start
        finally:
            sys.stdout, sys.stderr = out, err


def worker(argv: list[str]) -> None:
    """In a process of its own (under torchrun or not): run gatescope ``argv`` after the imports, then
    print, from rank 0, the seconds it took and this process's peak resident memory (VmHWM)."""
    import gatescope.analysis.streaming.analyses  # noqa: F401  (imports are not the pass)
    import gatescope.checkpoints.loader  # noqa: F401
    import gatescope.cli.analyze  # noqa: F401
    from gatescope.runs.distributed import join

    gatescope.checkpoints.loader.load(MODEL)  # warm-up: the first load pays one-off imports inside torch
    world = join()  # under torchrun: the process group, once every rank has imported torch
    if world.size > 1:
        import torch.distributed as dist

        dist.barrier()
    with open(os.devnull, "w") as null:
        out, sys.stdout = sys.stdout, null
        start = time.perf_counter()
        main(argv)
        elapsed = time.perf_counter() - start
        sys.stdout = out
    if os.environ.get("RANK", "0") == "0":
        peak = next(line for line in Path("/proc/self/status").read_text().splitlines() if line.startswith("VmHWM"))
        print(f"WORKER {elapsed} {int(peak.split()[1]) / 1024}", file=sys.stderr)


def in_process(argv: list[str], nproc: int | None = None) -> tuple[float, float]:
    """(seconds, peak MB) of gatescope ``argv`` in a fresh process, or under torchrun with ``nproc``."""
    launch = [sys.executable] if nproc is None else [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(nproc)]
    done = subprocess.run([*launch, __file__, "--worker", *argv], check=True, capture_output=True, text=True,
                          env=dict(os.environ, OMP_NUM_THREADS="1"))
    line = next(x for x in done.stderr.splitlines() if x.startswith("WORKER "))
    seconds, peak = map(float, line.split()[1:])
    return seconds, peak


ARGS: list[str] = []  # --device and the model, set by main_bench


def stream_argv(corpus: Path, labels: Path) -> list[str]:
    return ["analyze", "units", *ARGS, "--file", str(corpus), "--labels", str(labels), "--json", "--top", "1"]


def main_bench() -> None:
    if sys.argv[1:2] == ["--worker"]:
        return worker(sys.argv[2:])
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=50_000, help="corpus for the throughput comparison")
    parser.add_argument("--memory-tokens", default="100000,1000000", help="corpus sizes for the peak memory")
    parser.add_argument("--quick", action="store_true", help="10k tokens; memory at 20k and 100k")
    parser.add_argument("--memory-only", action="store_true", help="only the peak memory at --memory-tokens")
    parser.add_argument("--device", default="cpu", help="where the model runs (cuda: the GPU figure, 1 process)")
    parser.add_argument("--size", default=None, metavar="LAYERSxHIDDEN",
                        help="an untrained word LSTM of this shape instead of the sample, e.g. 2x650")
    args = parser.parse_args()
    if args.quick:
        args.tokens, args.memory_tokens = 10_000, "20000,100000"
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        model, shape = MODEL, "1 x 128 LSTM, 768 units recorded"
        if args.size:
            layers, hidden = (int(v) for v in args.size.lower().split("x"))
            model, shape = big_model(folder, hidden, layers), f"untrained {layers} x {hidden} LSTM, every kind"
        ARGS[:] = [str(model), "--device", args.device]
        corpus, labels, n = write_corpus(folder, args.tokens, "corpus")
        print(f"model {model.name} ({shape}) on {args.device}; corpus {n:,} tokens; "
              f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}; load {os.getloadavg()[0]:.1f}")
        for size in (int(s) for s in args.memory_tokens.split(",")):
            big, big_labels, m = write_corpus(folder, size, f"mem{size}")
            seconds, peak = in_process(stream_argv(big, big_labels))
            print(f"peak memory     {peak:7.0f} MB streaming {m:,} tokens ({m / seconds:,.0f} tokens/s)")
            big.unlink()
            big_labels.unlink()
        if args.memory_only:
            return
        quiet(stream_argv(corpus, labels))  # warm-up: imports, caches
        stream = quiet(stream_argv(corpus, labels))
        trace = folder / "corpus.trace.safetensors"
        traced = quiet(["trace", str(model), "--device", args.device, "--file", str(corpus), "-o", str(trace)])
        analysed = quiet(["analyze", "units", str(trace), "--labels", str(labels), "--permutations", "0",
                          "--json", "--top", "1"])
        print(f"stream          {n / stream:10,.0f} tokens/s  ({stream:.1f} s)")
        print(f"trace+analyze   {n / (traced + analysed):10,.0f} tokens/s  ({traced:.1f} s + {analysed:.1f} s; "
              f"{trace.stat().st_size / 1e6:.0f} MB trace)  {(traced + analysed) / stream:.2f}x the stream's time")
        trace.unlink()
        for k in (1, 2) if args.device == "cpu" else ():  # one GPU here: the torchrun figures are CPU ones
            seconds, _ = in_process(stream_argv(corpus, labels), nproc=k)
            print(f"torchrun x{k}     {n / seconds:10,.0f} tokens/s  ({seconds:.1f} s: load, pass, all_reduce)")

if __name__ == "__main__":
    main_bench()
