"""Per-token labels for the analyses: from a trace's features, a .npy file or a text file.

A label vector has one value per token row of the trace (NaN = not applicable: those rows are
left out of every analysis). Labels are binary (two distinct values), categorical (a few
integer codes, or words in a text file) or continuous; `Labels` records which.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gatescope.errors import GatescopeError
from gatescope.inputs.features import read_labels_file
from gatescope.traces.trace import Trace
from gatescope.validation.text import label_kind, label_values



@dataclass(frozen=True)
class Labels:
    """Labels aligned with a trace's rows.

    values: float64 [N], NaN where not applicable. kind: "binary", "categorical" or "continuous".
    codes: int64 [N] class index per row (-1 where NaN) for binary/categorical, else None.
    classes: the original value of each class code (binary: the larger value is class 1).
    """

    values: torch.Tensor  # (N,)
    kind: str
    codes: torch.Tensor | None  # (N,)
    classes: tuple[float, ...]
    name: str

    @property
    def valid(self) -> torch.Tensor:
        """Bool [N]: rows with a label."""
        return torch.isfinite(self.values)

    @property
    def num_classes(self) -> int:
        return len(self.classes)


def resolve_labels(
    trace: Trace,
    labels: Any = None,
    *,
    feature: str | None = None,
    kind: str | None = None,
) -> Labels:
    """Align labels with ``trace``: exactly one of ``labels`` (array-like, path) or ``feature``.

    kind: force "binary", "categorical" or "continuous" (default: inferred from the values).
    """
    if (labels is None) == (feature is None):
        raise GatescopeError("give exactly one of a feature name or labels")
    if isinstance(labels, Labels):
        if labels.values.numel() != trace.num_tokens:
            raise GatescopeError(
                f"{labels.name} has {labels.values.numel()} values but the trace has {trace.num_tokens} tokens"
            )
        return labels
    if feature is not None:
        if feature not in trace.features:
            have = ", ".join(sorted(trace.features)) or "none"
            raise GatescopeError(f"the trace has no feature {feature!r}; its features: {have}")
        values, name = trace.features[feature], feature
    elif isinstance(labels, (str, os.PathLike)):
        values, name = read_labels_file(labels), Path(labels).name
    else:
        values, name = labels, "labels"
    values = torch.as_tensor(label_values(np.asarray(values), name))  # (N,)
    if values.numel() != trace.num_tokens:
        raise GatescopeError(
            f"{name} has {values.numel()} values but the trace has {trace.num_tokens} tokens (one label a token)"
        )
    return make_labels(values, name=name, kind=kind)


def make_labels(values: torch.Tensor | np.ndarray | Sequence[float], name: str = "labels",
                kind: str | None = None) -> Labels:
    """Classify ``values`` (float [N], NaN = none; a tensor, a numpy array or a list) as binary, categorical or
    continuous."""
    try:
        values = torch.as_tensor(np.asarray(values, dtype=np.float64) if not torch.is_tensor(values) else values,
                                 dtype=torch.float64)  # (N,)
    except (TypeError, ValueError) as exc:
        raise GatescopeError(f"{name}: labels are numbers, one per token (NaN: none); {exc}") from None
    if values.ndim != 1:
        raise GatescopeError(f"{name}: labels are one number per token, shape [N]; got shape {tuple(values.shape)}")
    valid = torch.isfinite(values)
    if not bool(valid.any()):
        raise GatescopeError(f"{name}: no token has a label (all NaN)")
    distinct = torch.unique(values[valid])
    if distinct.numel() < 2:
        raise GatescopeError(f"{name}: every labelled token has the same value {float(distinct[0])}")
    kind = label_kind(distinct.numpy()) if kind is None else kind
    if kind not in ("binary", "categorical", "continuous"):
        raise GatescopeError(f"unknown label kind {kind!r}: binary, categorical or continuous")
    if kind == "continuous":
        return Labels(values, kind, None, (), name)
    if kind == "binary" and distinct.numel() != 2:
        raise GatescopeError(f"{name}: binary labels need exactly two values, found {distinct.numel()}")
    codes = torch.full(values.shape, -1, dtype=torch.int64)
    codes[valid] = torch.searchsorted(distinct, values[valid])
    return Labels(values, kind, codes, tuple(distinct.tolist()), name)
