"""gatescope beside what people do without it: recording every gate of a language model over a corpus.

The model is the shape of the Gulordava et al. 2018 LM in which Lakretz et al. 2019 found number
units: Embedding(10000, 650) -> 2-layer LSTM(650) -> Linear(650, 10000), random weights (the cost
does not depend on what was learnt). The corpus is 2,000 sentences of 20 random words. Timed in one
run, on the same batches (``--batch-size``, gatescope trace's default):

* plain:       the model's forward under torch.no_grad, nothing kept (the floor);
* record:      ``gatescope.record`` over the same batches, every gate of both layers kept in memory;
* trace CLI:   ``gatescope trace MODEL --file CORPUS -o TRACE --dtype DTYPE``, the whole command in a
               fresh interpreter: reading and tokenising the corpus, the forward, writing the trace file
               (its interpreter start-up and imports are timed separately and reported, not subtracted);
* naive loop:  the per-timestep Python loop over F.linear that appends every gate, the usual
               hand-written way (benchmarks/bench_record.py's ``naive_loop``), on the same batches.

* diagNNose:   (Jumelet 2020) its ForwardLSTM, which computes the same gates in its own per-step loop,
               over the same batches. Its last release (1.1, 2021) pins torchtext 0.6 and imports
               ``collections.MutableMapping`` (gone in Python 3.10), so it lives in a separate
               environment: ``python -m venv --system-site-packages ENV && ENV/bin/pip install
               diagnnose``; ``--diagnnose ENV/bin/python`` runs it there (with the shim) on a torch
               state dict of the same model that this script writes for it. Without the option the
               row says so.

Ratios are to ``plain`` measured in the same run (this machine is shared: best of ``--repeats``).
Usage: python benchmarks/bench_peers.py [--sentences 2000] [--repeats 2] [--quick]
"""
from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn

import gatescope

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_record import naive_loop  # noqa: E402


class LM(nn.Module):
    def __init__(self, vocab: int, hidden: int, layers: int) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab, hidden)
        self.rnn = nn.LSTM(hidden, hidden, layers, batch_first=True)
        self.decoder = nn.Linear(hidden, vocab)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.rnn(self.embedding(ids))[0])


def make_inputs(folder: Path, vocab: int, hidden: int, layers: int, sentences: int, length: int):
    torch.manual_seed(0)
    model = LM(vocab, hidden, layers).eval()
    words = [f"w{k}" for k in range(vocab)]
    meta = {"format": "gatescope.model", "version": 1, "tokenizer": "word", "vocab": words,
            "roles": {"embedding": "embedding.weight", "recurrent": ["rnn"], "decoder": "decoder"}}
    tensors = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    save_file(tensors, folder / "lm.safetensors", metadata={"gatescope": json.dumps(meta)})
    rng = random.Random(0)
    ids = [[rng.randrange(vocab) for _ in range(length)] for _ in range(sentences)]
    (folder / "corpus.txt").write_text("\n".join(" ".join(words[i] for i in s) for s in ids) + "\n")
    return model, torch.tensor(ids)


DIAGNNOSE = """
import collections, collections.abc, sys, time
collections.MutableMapping = collections.abc.MutableMapping  # diagNNose 1.1 predates Python 3.10
import torch
from diagnnose.models.init_states import set_init_states
from diagnnose.models.wrappers.forward_lstm import ForwardLSTM
state, ids, batch, repeats = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
lm = ForwardLSTM(state, encoder_name="embedding")
set_init_states(lm)
batches = torch.load(ids).split(batch)
best = float("inf")
with torch.no_grad():
    for _ in range(repeats):
        start = time.perf_counter()
        for b in batches:
            lm(input_ids=b)
        best = min(best, time.perf_counter() - start)
print(best)
"""


def diagnnose_seconds(python: str, folder: Path, model: nn.Module, ids: torch.Tensor, batch: int, repeats: int) -> float:
    """diagNNose's ForwardLSTM over the same batches, in its own environment (files written here)."""
    torch.save(model.state_dict(), folder / "lm.pt")  # this script's own tensors, for diagNNose's loader
    torch.save(ids, folder / "ids.pt")
    result = subprocess.run([python, "-c", DIAGNNOSE, str(folder / "lm.pt"), str(folder / "ids.pt"), str(batch),
                             str(repeats)], check=True, capture_output=True, text=True)
    return float(result.stdout.strip().splitlines()[-1])


def best_of(fn, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sentences", type=int, default=2000)
    parser.add_argument("--length", type=int, default=20)
    parser.add_argument("--hidden", type=int, default=650)
    parser.add_argument("--vocab", type=int, default=10000)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--dtype", default="float16", choices=["float32", "float16"], help="of the trace file")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--diagnnose", metavar="PYTHON", help="an interpreter whose environment has diagNNose")
    parser.add_argument("--quick", action="store_true", help="small sizes, to check the script runs")
    args = parser.parse_args()
    if args.quick:
        args.sentences, args.hidden, args.vocab = 64, 32, 100
    tokens = args.sentences * args.length
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        model, ids = make_inputs(folder, args.vocab, args.hidden, args.layers, args.sentences, args.length)
        batches = ids.split(args.batch_size)

        def plain():
            for batch in batches:
                model(batch)

        def record():
            with gatescope.record(model) as rec:
                plain()
            return rec.trace

        def naive():
            for batch in batches:
                naive_loop(model.rnn, model.embedding(batch).transpose(0, 1))

        cli = [sys.executable, "-c", "from gatescope.cli import main; main()"]
        trace_cmd = cli + ["trace", str(folder / "lm.safetensors"), "--file", str(folder / "corpus.txt"),
                           "-o", str(folder / "t.safetensors"), "--dtype", args.dtype,
                           "--batch-size", str(args.batch_size)]

        def trace_cli():
            subprocess.run(trace_cmd, check=True, capture_output=True)

        def startup():
            subprocess.run(cli + ["--help"], check=True, capture_output=True)

        with torch.no_grad():
            times = {name: best_of(fn, args.repeats) for name, fn in
                     [("plain", plain), ("record", record), ("naive loop", naive)]}
        times["trace CLI"] = best_of(trace_cli, args.repeats)
        times["(interpreter start-up + CLI import)"] = best_of(startup, args.repeats)
        if args.diagnnose:
            times["diagNNose ForwardLSTM"] = diagnnose_seconds(args.diagnnose, folder, model, ids, args.batch_size,
                                                               args.repeats)
        size = (folder / "t.safetensors").stat().st_size
        print(f"LSTM LM: vocabulary {args.vocab}, {args.layers} x {args.hidden}; {args.sentences} sentences x "
              f"{args.length} tokens = {tokens} tokens, batch {args.batch_size}; CPU, {torch.get_num_threads()} "
              f"threads, torch {torch.__version__}; best of {args.repeats}")
        print(f"{'':38} {'seconds':>8} {'x plain':>8} {'tokens/s':>10}")
        for name, seconds in times.items():
            print(f"{name:38} {seconds:8.2f} {seconds / times['plain']:7.2f}x {tokens / seconds:10.0f}")
        print(f"trace file: {size / 1e6:.0f} MB ({args.dtype}, every gate of every layer)")
        if not args.diagnnose:
            print("diagNNose: not run (it needs its own environment; see --help)")


if __name__ == "__main__":
    main()
