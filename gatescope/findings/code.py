"""The char LSTM on Python source (Karpathy, Johnson & Fei-Fei 2015's quote, comment, bracket and indent
cells), the fifth finding of `gatescope findings` (gatescope.findings.study): for each code feature the c and h
units are ranked on training files (ROC AUC for ``in_string`` and ``in_comment``, Pearson r for
``bracket_depth`` and ``indent_level``), and the best unit's score is reported on the held-out stdlib files
(pooled, per file, and for the binary features against code and against the other feature's characters
apart: a unit for prose shows as one for both), with bits per character on those files and a probe for
``in_string`` on all cells with its control task (Hewitt & Liang 2019).
"""
from __future__ import annotations

import contextlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

import gatescope
from gatescope.analysis.probes import probe_units
from gatescope.analysis.ranking import rank_units
from gatescope.analysis.stats import mann_whitney_auc, midranks
from gatescope.errors import GatescopeError
from gatescope.progress import Stage
from gatescope.traces.trace import Trace

CODE_MODEL = "pysource_lstm"
# Karpathy et al. 2015's code features: binary ones scored by ROC AUC, graded ones by Pearson correlation
CODE_FEATURES = {"in_string": "auc", "in_comment": "auc", "bracket_depth": "corr", "indent_level": "corr"}
BINARY_CODE_FEATURES = tuple(f for f, metric in CODE_FEATURES.items() if metric == "auc")
PROBE_KEYS = ("name", "baseline", "score", "control", "selectivity", "k95", "curve")


def code_trace(model: torch.nn.Module, paths: Sequence[Path], chunk: int = 4000,
               kinds: Sequence[str] = ("c", "h")) -> Trace:
    """Record a char model over source files, in sequences of ``chunk`` characters (each from a
    zero state), with the code features of gatescope.inputs.stimuli.code_features."""
    from gatescope.inputs.stimuli.code_features import code_features

    feats: dict[str, list[np.ndarray]] = {}
    with torch.no_grad(), gatescope.record(model, kinds=list(kinds)) as rec:
        for path in paths:
            source = path.read_text(encoding="utf-8")
            for name, values in code_features(source, str(path)).items():
                feats.setdefault(name, []).append(values)
            ids = _char_ids(model, source, path)
            for start in range(0, len(ids), chunk):
                model(torch.tensor([ids[start : start + chunk]]))
    trace = rec.trace
    for name, parts in feats.items():
        trace.add_feature(name, np.concatenate(parts))
    return trace


def _char_ids(model: torch.nn.Module, source: str, path: Path) -> list[int]:
    ids = model.encode(source)
    if len(ids) != len(source):
        raise GatescopeError(f"{path}: the model's tokenizer is not one token per character")
    return ids


def bits_per_char(model: torch.nn.Module, paths: Sequence[Path]) -> dict[str, float]:
    """Cross-entropy of a char model's next-character predictions in bits, each file read from a zero
    state: ``{file name: bits, ..., "pooled": bits over all predicted characters}``."""
    out, total, count = {}, 0.0, 0
    with torch.no_grad():
        for path in paths:
            ids = torch.tensor([_char_ids(model, path.read_text(encoding="utf-8"), path)])  # (1, N)
            logits = model(ids[:, :-1])  # (1, N-1, V)
            nats = float(torch.nn.functional.cross_entropy(logits[0].double(), ids[0, 1:], reduction="sum"))
            out[path.name] = nats / (ids.shape[1] - 1) / np.log(2)
            total, count = total + nats, count + ids.shape[1] - 1
    return out | {"pooled": total / count / np.log(2)}


def code_findings(model_path: Path, train_chars: int = 60000, permutations: int = 200,
                  save_trace: Path | None = None, stage: Stage = lambda description: contextlib.nullcontext()) -> dict[str, Any]:
    """For each code feature, the best c or h unit chosen on training files and its score on the
    held-out stdlib files (pooled and per file), with the best unit chosen on the held-out files for
    comparison; bits per character on the held-out files; probes for in_string on all cells with their
    control task."""
    from gatescope.samples.data import stdlib_files

    model = gatescope.load(model_path).eval()
    train_paths, total = [], 0
    for path in stdlib_files():  # sorted training files, until train_chars characters
        if total >= train_chars:
            break
        train_paths.append(path)
        total += len(path.read_text(encoding="utf-8"))
    with stage(f"{model_path.stem}: ranking units on {len(train_paths)} training files"):
        train = code_trace(model, train_paths)
        chosen = {f: _rank_feature(train, f, 0).head(5) for f in CODE_FEATURES}
        del train
    held_paths = stdlib_files(heldout=True)
    with stage(f"{model_path.stem}: bits per character on {len(held_paths)} held-out files"):
        bits = bits_per_char(model, held_paths)
    with stage(f"{model_path.stem}: recording {len(held_paths)} held-out files"):
        held = code_trace(model, held_paths)
        if save_trace is not None:  # then read it memory-mapped: only the columns in use stay resident
            held.save(save_trace)
            del held
            held = gatescope.load_trace(save_trace)
    lengths = [len(p.read_text(encoding="utf-8")) for p in held_paths]
    with stage(f"{model_path.stem}: scoring units on the held-out files ({permutations} permutations for in_string)"):
        units = {f: _heldout_units(held, f, chosen[f], held_paths, lengths, permutations if f == "in_string" else 0)
                 for f in CODE_FEATURES}
    with stage(f"{model_path.stem}: probe on the cells with a control task"):
        probes = probe_units(held, feature="in_string", kinds="c", ks=(1, 4, 16, 64), epochs=3)
    return {"model": model_path.name, "train_files": [p.name for p in train_paths],
            "heldout_files": [p.name for p in held_paths], "heldout_tokens": held.num_tokens,
            "bits_per_char": bits.pop("pooled"), "bits_per_char_by_file": bits, "units": units,
            "probes": [{k: r[k] for k in PROBE_KEYS} for r in probes]}


def _rank_feature(trace: Trace, feature: str, permutations: int) -> Any:
    """The c and h units ranked for a code feature by its metric (CODE_FEATURES)."""
    from gatescope.analysis.labels import resolve_labels

    metric = CODE_FEATURES[feature]
    if metric == "auc":
        return rank_units(trace, feature=feature, metric="auc", permutations=permutations)
    labels = resolve_labels(trace, feature=feature, kind="continuous")  # a depth is graded, not categorical
    return rank_units(trace, labels, metric="corr", permutations=permutations)


def _heldout_units(held: Trace, feature: str, chosen: Any, paths: Sequence[Path], lengths: Sequence[int],
                   permutations: int) -> dict[str, Any]:
    """The units chosen on the training files, scored on the held-out ones in the direction the training
    files gave them (a unit low inside strings separates them as well as a high one); their family-wise
    p-value from ``permutations`` label shuffles (None without any)."""
    metric = CODE_FEATURES[feature]
    scored = _rank_feature(held, feature, permutations)
    by_unit = {r["unit"]: r for r in scored}
    top = []
    for r in chosen:
        high = r[metric] >= (0.5 if metric == "auc" else 0.0)
        held_row = by_unit[r["unit"]]
        top.append({"unit": r["unit"], "direction": "high" if high else "low", "train_score": r["score"],
                    "heldout_score": _oriented(held_row[metric], high, metric),
                    "heldout_p_fwer": held_row["p_fwer"] if permutations else None})
    best = top[0]
    per_file = _per_file_scores(held, best["unit"], feature, metric, lengths)
    best["heldout_by_file"] = {p.name: None if v is None else _oriented(v, best["direction"] == "high", metric)
                               for p, v in zip(paths, per_file)}
    if feature in BINARY_CODE_FEATURES:
        best["heldout_against"] = _against(held, best["unit"], feature, best["direction"] == "high")
    best_held = scored[0]
    return {"metric": metric, "top": top,
            "best_heldout_unit": {"unit": best_held["unit"], "score": best_held["score"]}}


def _against(trace: Trace, unit: str, feature: str, high: bool) -> dict[str, float | None]:
    """``unit``'s held-out ROC AUC for a binary code feature against each kind of character outside it:
    code (neither feature) and the other binary feature's (a string unit against comment characters);
    None where there is none of a kind. A unit that codes prose rather than strings scores high against code only."""
    column = _unit_column(trace, unit)  # (N,)
    inside = trace.features[feature] == 1  # (N,)
    other = next(f for f in BINARY_CODE_FEATURES if f != feature)
    in_other = (trace.features[other] == 1) & ~inside  # (N,)
    kinds = {"code": ~inside & ~in_other, other: in_other}
    return {kind: None if not bool(negative.any()) else _oriented(_auc(column, inside, negative), high)
            for kind, negative in kinds.items()}


def _auc(x: torch.Tensor, positive: torch.Tensor, negative: torch.Tensor) -> float:
    """ROC AUC of scores ``x`` (N,) for the rows in ``positive`` against those in ``negative`` (masks)."""
    rows = positive | negative
    return float(mann_whitney_auc(midranks(x[rows][:, None]), positive[rows])[0])


def _unit_column(trace: Trace, unit: str) -> torch.Tensor:
    """One unit's values over every token of ``trace``, in float64: (N,)."""
    from gatescope.names import parse_unit

    parsed = parse_unit(unit)
    return trace[parsed.name][:, parsed.index].to(torch.float64)  # (N,)


def _per_file_scores(trace: Trace, unit: str, feature: str, metric: str, lengths: Sequence[int]) -> list[float | None]:
    """``metric`` (ROC AUC for class 1, or Pearson r) of ``unit`` for ``feature`` over each consecutive run
    of ``lengths`` rows; None where a file has one value only (no comment in it: the score is undefined)."""
    column = _unit_column(trace, unit)  # (N,)
    labels = trace.features[feature].to(torch.float64)  # (N,)
    out: list[float | None] = []
    start = 0
    for n in lengths:
        x, y = column[start : start + n], labels[start : start + n]
        start += n
        if torch.unique(y).numel() < 2:
            out.append(None)
        elif metric == "auc":
            out.append(_auc(x, y == y.max(), y != y.max()))
        else:
            out.append(float(torch.corrcoef(torch.stack([x, y]))[0, 1]))
    return out


def _oriented(value: float, high: bool, metric: str = "auc") -> float:
    """A unit's score in the direction it was chosen in: 1 - AUC or -r for a unit low on the feature."""
    if high:
        return value
    return 1 - value if metric == "auc" else -value
