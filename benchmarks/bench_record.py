"""Cost of recording every gate, as ratios to the plain torch forward measured in the same run.

For LSTM and GRU at T=256, B=32, H=650, 2 layers (the Gulordava et al. 2018 LM in which Lakretz et
al. 2019 found number units) and at T=1024, B=1, H=256, it times:

* plain:      torch.nn.LSTM/GRU forward (the fused native kernel), nothing recorded;
* record:     ``gatescope.record`` keeping every gate of every layer (route "auto");
* intervene:  the same with one h unit of layer 0 ablated (set to 0) at every step: on an LSTM on a CPU
              the split route folds it into W_hh and stays on oneDNN's fused kernel, elsewhere it steps;
* edit c:     the same with one c unit of layer 0 scaled at every step (a GRU: one z unit), which no kernel
              can fold: layer 0 steps (an LSTM at batch < 8 in the TorchScript-compiled loop,
              gatescope.recorder.compiled; otherwise the step route's loop), layer 1, unedited, fused;
* naive loop: the usual hooked implementation, a per-timestep Python loop over F.linear that
              appends every gate (what one writes by hand to get the gates).

Targets: record <= 1.5x plain on a CPU and <= 2x on a GPU; intervene <= 3x on a CPU; edit c/z <= 2x at
T=1024, B=1, H=256.
Usage: python benchmarks/bench_record.py [--device cuda] [--repeats 3] [--threads N] [--quick]
The header says the machine's load average: on a shared machine take the ratios, not the times.
"""
from __future__ import annotations

import argparse
import os
import time

import torch
import torch.nn.functional as F
from torch import nn

import gatescope


def naive_loop(module: nn.Module, x: torch.Tensor) -> dict[str, list[torch.Tensor]]:
    """Per-step F.linear for each layer, appending every gate; the hand-written baseline."""
    is_lstm = isinstance(module, nn.LSTM)
    kept: dict[str, list[torch.Tensor]] = {}
    layer_in = x
    for layer in range(module.num_layers):
        w_ih, w_hh = getattr(module, f"weight_ih_l{layer}"), getattr(module, f"weight_hh_l{layer}")
        b_ih, b_hh = getattr(module, f"bias_ih_l{layer}"), getattr(module, f"bias_hh_l{layer}")
        h = x.new_zeros(x.shape[1], module.hidden_size)
        c = torch.zeros_like(h)
        outs = []
        for xt in layer_in:
            gi, gh = F.linear(xt, w_ih, b_ih), F.linear(h, w_hh, b_hh)
            if is_lstm:
                i, f, g, o = (gi + gh).chunk(4, 1)
                i, f, g, o = i.sigmoid(), f.sigmoid(), g.tanh(), o.sigmoid()
                c = f * c + i * g
                h = o * c.tanh()
                step = {"i": i, "f": f, "g": g, "o": o, "c": c, "h": h}
            else:
                ir, iz, in_ = gi.chunk(3, 1)
                hr, hz, hn = gh.chunk(3, 1)
                r, z = (ir + hr).sigmoid(), (iz + hz).sigmoid()
                n = (in_ + r * hn).tanh()
                h = (1 - z) * n + z * h
                step = {"r": r, "z": z, "n": n, "h": h}
            for kind, value in step.items():
                kept.setdefault(f"l{layer}.{kind}", []).append(value)
            outs.append(h)
        layer_in = torch.stack(outs)
    return {k: torch.stack(v) for k, v in kept.items()}


def timed(fns: dict, repeats: int, device: torch.device) -> dict[str, float]:
    """Best seconds of each function over ``repeats`` rounds, run in turn within each round so
    that the noise of a shared machine falls on all of them alike; one warm-up round first."""
    best = {name: float("inf") for name in fns}
    for round_ in range(repeats + 1):
        for name, fn in fns.items():
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            fn()
            if device.type == "cuda":
                torch.cuda.synchronize()
            if round_:
                best[name] = min(best[name], time.perf_counter() - start)
    return best


def bench(cell: str, steps: int, batch: int, hidden: int, layers: int, device: torch.device, repeats: int) -> dict:
    torch.manual_seed(0)
    module = getattr(nn, cell)(hidden, hidden, num_layers=layers).to(device).eval()
    x = torch.randn(steps, batch, hidden, device=device)

    def record_all(interventions=()):
        with gatescope.record(module, interventions=interventions) as rec:
            module(x)
        return rec.trace

    root = cell.lower()
    ablate = [gatescope.Intervention(f"{root}.l0.fwd.h", units=[0], value=0.0)]
    memory = "c" if cell == "LSTM" else "z"  # the GRU has no c: its memory gate
    edit = [gatescope.Intervention(f"{root}.l0.fwd.{memory}", units=[0], op="scale", value=0.5)]
    with torch.no_grad():
        t = timed(
            {
                "plain": lambda: module(x),
                "record": record_all,
                "intervene": lambda: record_all(ablate),
                "edit_c": lambda: record_all(edit),
                "naive_loop": lambda: naive_loop(module, x),
            },
            repeats,
            device,
        )
    return {"plain_s": t["plain"], **{k: v / t["plain"] for k, v in t.items() if k != "plain"}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch's intra-op threads (default: torch's)")
    parser.add_argument("--quick", action="store_true", help="small sizes, to check the script runs")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    sizes = [(256, 32, 650, 2), (1024, 1, 256, 2)] if not args.quick else [(16, 4, 32, 2)]
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    load = " ".join(f"{v:.2f}" for v in os.getloadavg())
    print(f"device: {name}; torch {torch.__version__}; best of {args.repeats} interleaved rounds; ratios to plain; "
          f"load average {load}")
    print(f"{'cell':5} {'T':>5} {'B':>3} {'H':>4} {'L':>2} {'plain':>9} {'record':>8} {'intervene':>10} "
          f"{'edit c/z':>9} {'naive loop':>11}")
    for cell in ("LSTM", "GRU"):
        for steps, batch, hidden, layers in sizes:
            r = bench(cell, steps, batch, hidden, layers, device, args.repeats)
            print(
                f"{cell:5} {steps:5} {batch:3} {hidden:4} {layers:2} {r['plain_s'] * 1000:7.1f}ms "
                f"{r['record']:7.2f}x {r['intervene']:9.2f}x {r['edit_c']:8.2f}x {r['naive_loop']:10.2f}x",
                flush=True,
            )


if __name__ == "__main__":
    main()
