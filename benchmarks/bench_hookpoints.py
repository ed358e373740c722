"""Cost of hook points (gatescope.hook_points), as ratios to the plain torch forward measured in the same run.

For a 2-layer LSTM it times, in interleaved rounds (benchmarks/bench_record.py's `timed`):

* plain:          torch.nn.LSTM forward, nothing recorded;
* record:         ``gatescope.record`` keeping every gate, on a copy of the model never given hook points;
* record after:   the same on an identical copy that has been run through hook points before: nothing
                  they attached may linger, so this ratio must match ``record``'s;
* step points:    ``hook_points(model)`` (per step, every quantity, no hooks on them);
* sequence points: ``hook_points(model, per="sequence")`` (two forwards), no hooks;
* sequence edit:  the same with a forward hook zeroing one unit of one gate;
* intervention:   the `Intervention` making that edit.

Usage: python benchmarks/bench_hookpoints.py [--repeats 3] [--quick]
"""
from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path

import torch
from torch import nn

import gatescope

sys.path.insert(0, str(Path(__file__).parent))
from bench_record import timed  # noqa: E402  (one timing loop for the benchmarks)


def bench(steps: int, batch: int, hidden: int, layers: int, repeats: int) -> dict[str, float]:
    torch.manual_seed(0)
    module = nn.LSTM(hidden, hidden, num_layers=layers).eval()
    fresh, used = copy.deepcopy(module), copy.deepcopy(module)  # twins: one never given hook points
    x = torch.randn(steps, batch, hidden)
    name = "lstm.l0.fwd.f"

    def record_all(model):
        with gatescope.record(model) as rec:
            model(x)
        return rec.trace

    step_points = gatescope.hook_points(used)
    sequence_points = gatescope.hook_points(used, per="sequence")
    edited = gatescope.hook_points(copy.deepcopy(module), per="sequence")

    def zero(point, args, out):
        out = out.clone()
        out[..., 0] = 0.0
        return out

    edited.points[name].register_forward_hook(zero)
    intervention = [gatescope.Intervention(name, units=[0], value=0.0)]

    def intervene():
        with gatescope.record(module, kinds=(), interventions=intervention):
            return module(x)

    with torch.no_grad():
        step_points(x), sequence_points(x)  # ``used`` has been through hook points of both kinds
        t = timed({
            "plain": lambda: module(x),
            "record": lambda: record_all(fresh),
            "record after": lambda: record_all(used),
            "step points": lambda: step_points(x),
            "sequence points": lambda: sequence_points(x),
            "sequence edit": lambda: edited(x),
            "intervention": intervene,
        }, repeats, torch.device("cpu"))
    return {"plain_s": t["plain"], **{k: v / t["plain"] for k, v in t.items() if k != "plain"}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="small sizes, to check the script runs")
    args = parser.parse_args()
    sizes = [(128, 16, 256, 2), (512, 1, 128, 2)] if not args.quick else [(16, 4, 32, 2)]
    print(f"CPU, {torch.get_num_threads()} threads; torch {torch.__version__}; best of {args.repeats} interleaved "
          "rounds; ratios to plain")
    for steps, batch, hidden, layers in sizes:
        r = bench(steps, batch, hidden, layers, args.repeats)
        cols = "  ".join(f"{k} {v:.2f}x" for k, v in r.items() if k != "plain_s")
        print(f"T={steps} B={batch} H={hidden} L={layers}: plain {r['plain_s'] * 1000:.1f}ms  {cols}", flush=True)


if __name__ == "__main__":
    main()
