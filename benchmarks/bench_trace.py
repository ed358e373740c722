"""Where the time of `gatescope trace` goes, and its throughput in tokens per second, on the sample models.

Two runs, each through the trace command's own functions (in-process, so interpreter start-up is
left out):

* the agreement LSTM over the bundled agreement stimuli (``--stimuli``, 2,520 items);
* the char model (pysource_lstm) over gatescope's own top-level modules, one sequence a line (``--file``).

Phases, each timed on its own: ``load`` (the checkpoint), ``corpus`` (reading and tokenising, once),
``forward`` (the model's plain forward, logits and all, over batches in corpus order, as a user's loop
would run it), ``recurrent`` (the embedding and the recurrent module only, what the trace needs of the
forward, over the batches the trace runs: longest first, gatescope.runs.chunks.plan),
``write`` (the trace file's bytes alone, written from memory by the same TraceWriter, float32 and
float16), and ``trace`` (record every gate + convert to the storage dtype + write the file:
`write_inputs`) in float32 and float16; every file is a new one, as `gatescope trace` writes. Ratios
are to ``forward``, and the trace's to its floor, ``recurrent + write`` of the same dtype (target: at
most 1.5x, aim 1.2x); all in the same run, the phases interleaved round by round so that a shared
machine's noise falls on all alike; the best round of each is kept. The header gives the load average.
With ``--device cuda`` the models run on the GPU (every phase synchronised before its clock stops; the
recurrent floor is cuDNN's forward), the trace's file still written from the host.
Usage: python benchmarks/bench_trace.py [--threads 1] [--repeats 3] [--device cuda]
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import torch
from gatescope.sample_models import path as sample_path
from torch.nn.utils.rnn import pack_padded_sequence

from gatescope.checkpoints.loader import load
from gatescope.runs.chunks import plan
from gatescope.runs.trace import RunOptions, record_inputs, write_inputs
from gatescope.traces.trace import STORAGE_NAMES, storage_rows
from gatescope.traces.file import TraceWriter
from gatescope.inputs import corpus as corpora
from gatescope.inputs.features import stimuli_corpus

ROOT = Path(__file__).resolve().parent.parent


def best(fn, repeats: int, device: torch.device) -> float:
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return min(times)


def run(name: str, make_corpus, repeats: int, batch_size: int, device: torch.device) -> None:
    start = time.perf_counter()
    model = load(sample_path(name + ".safetensors"), device=device)
    loaded = time.perf_counter() - start
    start = time.perf_counter()
    corpus = make_corpus(model)
    read = time.perf_counter() - start
    batches = [(x.to(device), lengths) for x, lengths in corpus.batches(batch_size)]
    planned = [(x.to(device), lengths) for x, lengths in (corpus.padded(group)
                                                          for group in plan(corpus.lengths, batch_size, False))]
    padding = {k: sum(x.shape[0] * x.shape[1] for x, _ in b) / corpus.num_tokens
               for k, b in (("corpus order", batches), ("longest first", planned))}
    rnn = model.get_submodule(model.recurrent_names[0])

    def forward() -> None:
        for x, lengths in batches:
            model(x, lengths)

    def recurrent() -> None:
        for x, lengths in planned:
            x = model.embedding(x)  # (B, T, E)
            rnn(x if lengths is None else pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False))

    dtypes = {"float32": torch.float32, "float16": torch.float16}
    held = {d: record_inputs(model, corpus, RunOptions(batch_size, dtype=dtype, progress=False))
            for d, dtype in dtypes.items()}
    with tempfile.TemporaryDirectory() as folder:

        def trace(dtype: torch.dtype, path: Path) -> None:
            write_inputs(str(path), model, corpus, RunOptions(batch_size, dtype=dtype, progress=False))

        def write(d: str, path: Path) -> None:
            """The same file's bytes from memory: what any trace must pay to reach the disk."""
            part = held[d]
            widths = {n: part[n].shape[1] for n in part.names}
            writer = TraceWriter(path, widths, STORAGE_NAMES[dtypes[d]], corpus.offsets, True, part.meta)
            for n in part.names:
                writer.write(n, 0, storage_rows(part[n]))
            writer.write("token_ids", 0, part.token_ids.numpy())
            writer.close()

        phases = {"forward": lambda path: forward(), "recurrent": lambda path: recurrent(),
                  **{f"write {d}": (lambda path, d=d: write(d, path)) for d in dtypes},
                  **{f"trace {d}": (lambda path, d=d: trace(dtypes[d], path)) for d in dtypes}}
        with torch.no_grad():
            rounds = {phase: [] for phase in phases}
            for _ in range(repeats):  # interleaved, so that a shared machine's noise falls on all alike
                for phase, fn in phases.items():
                    # a new file each time, as `gatescope trace` writes one (rewriting an old one would
                    # add the file system's cost of truncating it), removed outside the timing
                    path = Path(folder) / "t.safetensors"
                    rounds[phase].append(best(lambda: fn(path), 1, device))
                    path.unlink(missing_ok=True)
        trace(torch.float16, Path(folder) / "t.safetensors")
        size = (Path(folder) / "t.safetensors").stat().st_size
    times = {k: min(v) for k, v in rounds.items()}
    tokens = corpus.num_tokens
    print(f"{name}: {corpus.num_sequences} sequences, {tokens} tokens, batch {batch_size}; "
          f"load {loaded:.2f}s, corpus read and tokenised once {read:.2f}s; float16 file {size / 1e6:.0f} MB; "
          f"steps computed per token: {', '.join(f'{v:.2f} in {k}' for k, v in padding.items())}")
    for phase, seconds in times.items():
        ratio = seconds / times["forward"]
        floor = ""
        if phase.startswith("trace"):
            d = phase.split()[1]
            floor = f" {seconds / (times['recurrent'] + times[f'write {d}']):6.2f}x recurrent + write"
        print(f"  {phase:15} {seconds:7.3f}s {ratio:6.2f}x forward {tokens / seconds:10.0f} tokens/s{floor}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=None, help="torch's intra-op threads (default: torch's)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=64, help="gatescope trace's default")
    parser.add_argument("--device", default="cpu", help="where the models run (cuda: the GPU figures)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    load_avg = " ".join(f"{v:.2f}" for v in os.getloadavg())
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"{where}, {torch.get_num_threads()} CPU threads, torch {torch.__version__}; best of {args.repeats} "
          f"interleaved rounds; load average {load_avg}")
    stimuli = ROOT / "gatescope" / "inputs" / "stimuli" / "agreement_stimuli.tsv"
    run("agreement_lstm", lambda model: stimuli_corpus(model, str(stimuli), False), args.repeats, args.batch_size,
        device)
    sources = sorted(str(p) for p in (ROOT / "gatescope").glob("*.py"))
    run("pysource_lstm", lambda model: corpora.gather(model, (), (), sources, False, (), None, False),
        args.repeats, args.batch_size, device)


if __name__ == "__main__":
    main()
