"""The `gatescope inspect` report as data: a JSON-able dict about a loaded checkpoint.

From the weights alone: each recurrent module and layer, per row block the weight norms and
bias statistics (torch's gate order: LSTM i f g o, GRU r z n, RNN h; a cell type's own blocks,
gatescope.kinds), and the timescale of each unit's memory at zero input and state, 1/(1 - g) with g
the memory gate's value there: the LSTM forget gate f (the "chrono" reading of Tallec & Ollivier
2018; 1 - i when f is coupled to i) or the GRU update gate z (which weights the previous state),
through the cell type's gate activation (sigmoid(b) for torch's cells); none for the plain RNN. Warnings flag non-finite weights and recurrent matrices whose
spectral radius is far above 1. From a trace: gate saturation as in Karpathy, Johnson &
Fei-Fei 2015, the fraction of time a gate is left-saturated (< 0.1) or right-saturated (> 0.9).
"""
from __future__ import annotations

import math
from typing import Any

import torch

from gatescope.checkpoints.loader import LoadedModel
from gatescope.analysis.timescale import memory_at_rest, timescale_of
from gatescope.kinds import DIRECTIONS, SIGMOID_KINDS, CellType, cell_type_of, param_suffix
from gatescope.names import parse_name
from gatescope.traces.trace import Trace

SPECTRAL_RADIUS_WARNING = 10.0  # "far above 1" (an untrained gate has about 0.6): it may saturate or explode


def weight_report(model: LoadedModel) -> dict[str, Any]:
    """Architecture, per-layer gate statistics, timescales and warnings, from the weights alone."""
    modules = [_module_report(model, info) for info in model.modules_info]
    embedding, decoder = model.embedding, model.decoder
    warnings = [w for module in modules for layer in module["layers"] for w in layer.pop("warnings")]
    warnings += _non_finite(model)
    return {
        "modules": modules,
        "embedding": None if embedding is None else {
            "name": model.embedding_name,
            "num_embeddings": embedding.num_embeddings,
            "embedding_dim": embedding.embedding_dim,
        },
        "decoder": None if decoder is None else {
            "name": model.decoder_name,
            "in_features": decoder.in_features,
            "out_features": decoder.out_features,
            "bias": decoder.bias is not None,
        },
        "recurrent": list(model.recurrent_names),
        "vocab": None if model.vocab is None else {"size": len(model.vocab), "tokenizer": model.vocab.tokenizer},
        "parameters": sum(p.numel() for p in model.parameters()),
        "warnings": warnings,
    }


def _module_report(model: LoadedModel, info: dict[str, Any]) -> dict[str, Any]:
    module = model.get_submodule(info["name"])
    cell = cell_type_of(info)
    layers = []
    for layer in range(info["num_layers"]):
        for direction in DIRECTIONS[: 1 + info["bidirectional"]]:
            suffix = param_suffix(layer, direction, is_cell=info["cell"].endswith("Cell"))
            params = {
                kind: getattr(module, f"{kind}{suffix}")
                for kind in ("weight_ih", "weight_hh", "bias_ih", "bias_hh", "weight_hr")
                if hasattr(module, f"{kind}{suffix}")
            }
            layers.append(_layer_report(info, cell, layer, direction, params))
    return {**info, "parameters": sum(p.numel() for p in module.parameters()), "layers": layers}


@torch.no_grad()
def _layer_report(
    info: dict[str, Any], ctype: CellType, layer: int, direction: str, params: dict[str, torch.Tensor]
) -> dict[str, Any]:
    """One layer and direction: gate norms, bias statistics, memory timescale, spectral radii."""
    hidden = info["hidden_size"]
    w_ih = params["weight_ih"].double()  # (G*H, in)
    w_hh = params["weight_hh"].double()  # (G*H, P)
    bias = torch.zeros(w_ih.shape[0], dtype=torch.float64)  # (G*H,)
    if "bias_ih" in params:
        bias = params["bias_ih"].double() + params["bias_hh"].double()
    w_hr = params["weight_hr"].double() if "weight_hr" in params else None  # (P, H)
    where = f"{info['name']} l{layer} {direction}"
    gates, warnings = {}, []
    for gate in ctype.gate_kinds:
        rows = ctype.rows(gate, hidden)
        b = bias[rows]  # (H,)
        recurrent = w_hh[rows] if w_hr is None else w_hh[rows] @ w_hr  # (H, H): h_{t-1} -> gate
        radius = _spectral_radius(recurrent)
        gates[gate] = {
            "weight_ih_norm": _finite(w_ih[rows].norm()),
            "weight_hh_norm": _finite(w_hh[rows].norm()),
            "bias_mean": _finite(b.mean()),
            "bias_std": _finite(b.std(correction=0)),
            "bias_min": _finite(b.min()),
            "bias_max": _finite(b.max()),
            "spectral_radius": radius,
        }
        if radius is not None and radius > SPECTRAL_RADIUS_WARNING:
            warnings.append(
                f"{where}: the recurrent matrix of gate {gate} has spectral radius {radius:.2f} (far above 1)"
            )
    memory = ctype.memory_gate  # the gate whose bias sets how long a unit remembers
    at_rest = memory_at_rest(ctype, bias, hidden)
    timescale = None if at_rest is None else timescale_of(at_rest)  # (H,) steps
    return {
        "layer": layer,
        "direction": direction,
        "input_size": w_ih.shape[1],
        "parameters": sum(p.numel() for p in params.values()),
        "gates": gates,
        "timescale": None if timescale is None else {
            "gate": memory,
            "min": _finite(timescale.min()),
            "median": _finite(timescale.quantile(0.5)),  # the mean of the middle two for even H
            "max": _finite(timescale.max()),
        },
        "warnings": warnings,
    }


def _finite(value: torch.Tensor) -> float | None:
    """A statistic as a JSON-able float; None where non-finite weights make it meaningless."""
    value = float(value)
    return value if math.isfinite(value) else None


def _spectral_radius(matrix: torch.Tensor) -> float | None:
    """Largest |eigenvalue| of a square matrix; None when it holds non-finite values."""
    if not bool(torch.isfinite(matrix).all()):
        return None
    return float(torch.linalg.eigvals(matrix).abs().max())


def _non_finite(model: LoadedModel) -> list[str]:
    warnings = []
    for name, param in model.state_dict().items():
        nan, inf = int(torch.isnan(param).sum()), int(torch.isinf(param).sum())
        if nan or inf:
            warnings.append(f"{name} holds {nan} NaN and {inf} infinite values")
    return warnings


def saturation_report(trace: Trace) -> dict[str, dict[str, float | int]]:
    """Per recorded sigmoid gate: the mean over units of the fraction of time a unit is < 0.1
    ("left") and > 0.9 ("right"), and how many units are left- or right-saturated more than half
    the time (summarising gatescope.analysis.dynamics.saturation's per-unit table)."""
    from gatescope.analysis.dynamics import saturation

    gates = sorted({parse_name(n).kind for n in trace.names} & SIGMOID_KINDS)
    if not gates:  # a plain RNN: no gate to saturate
        return {}
    units: dict[str, list[dict]] = {}
    for row in saturation(trace, kinds=gates):
        units.setdefault(row["name"], []).append(row)
    report = {}
    for name, rows in units.items():
        left = torch.tensor([row["left"] for row in rows])  # (H,)
        right = torch.tensor([row["right"] for row in rows])  # (H,)
        report[name] = {
            "left": _finite(left.nanmean()),  # units with no counted value (all NaN) left out
            "right": _finite(right.nanmean()),
            "units": len(rows),
            "units_mostly_left": int((left > 0.5).sum()),
            "units_mostly_right": int((right > 0.5).sum()),
        }
    return report
