"""gatescope's decomposition beside diagNNose's: the same numbers, and the time each takes.

On the sample agreement LSTM (Embedding(121, 32) -> LSTM(32, 128) -> Linear(128, 121)), sentences of 5 to 8
tokens (one batch per length), "shapley" against diagNNose's ShapleyDecomposer and "gcd" against its
ContextualDecomposer. diagNNose runs in its own environment (``--diagnnose PYTHON``; see
tests/diagnnose_reference.py, which this script uses): its time is the decomposition alone, measured in
its interpreter, not the start-up. Prints the largest |difference| of every part's logits and the two times
as a ratio (best of ``--repeats`` for gatescope; diagNNose once, it is the slow one).

Usage: python benchmarks/bench_decompose.py --diagnnose ENV/bin/python [--repeats 3]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
import gatescope  # noqa: E402
from gatescope.analysis.decomposition import decompose  # noqa: E402
from tests.diagnnose_reference import run_diagnnose  # noqa: E402

SENTENCES = {
    5: ["the boys near the car", "the girl behind the dogs"],
    6: ["the boys near the old car", "the girl behind the old dogs"],
    7: ["the boys near the old car greet", "the girl behind the old dogs greets"],
    8: ["the boys near the old car never greet", "the girl behind the old dogs never greets"],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--diagnnose", metavar="PYTHON", required=True, help="an interpreter with diagNNose")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    model = gatescope.load(ROOT / "sample_models" / "agreement_lstm.safetensors")
    print(f"sample agreement LSTM, 2 sentences a length; CPU, {torch.get_num_threads()} threads, torch "
          f"{torch.__version__}")
    print(f"{'method':8} {'tokens':>6} {'parts':>5} {'max |diff|':>11} {'gatescope s':>12} {'diagNNose s':>12} "
          f"{'ratio':>7}")
    for method in ("shapley", "gcd"):
        for length, texts in SENTENCES.items():
            ids = torch.tensor([model.encode(t) for t in texts])
            theirs, their_seconds = run_diagnnose(args.diagnnose, model, ids, method)
            best = float("inf")
            for _ in range(args.repeats):
                start = time.perf_counter()
                ours = decompose(model, ids, method)
                best = min(best, time.perf_counter() - start)
            diff = float((ours.logits - theirs).abs().max())
            print(f"{method:8} {length:6} {length + 1:5} {diff:11.1e} {best:12.3f} {their_seconds:12.3f} "
                  f"{their_seconds / best:6.0f}x")


if __name__ == "__main__":
    main()
