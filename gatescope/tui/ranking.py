"""Unit scores for the ranked-units table, streamed over a trace in blocks of rows.

Two scores per unit of one quantity, computed without materialising it (a trace file is
memory-mapped, gatescope.traces.file; a block of rows is read, reduced to running sums, and dropped):
- `correlation`: Pearson's r between the unit's value and a per-token feature, over the rows
  where both are finite (the probeless "correlation with a label" ranking used by Karpathy
  et al. 2015 and Lakretz et al. 2019 to find cells that track a property);
- `saturation`: the fraction of rows where the unit is saturated, Karpathy et al. 2015's
  left + right saturation (< 0.1 or > 0.9), as defined once in gatescope.saturation (tanh-range
  kinds read as (x + 1) / 2, the cell state as tanh(c), NaN rows not counted).

gatescope.analysis.ranking ranks every layer of a kind with permutation tests, which is the
tool for a finding; this module is the interactive, single-quantity, cancellable version
that keeps memory flat on a memory-mapped trace (mapped pages are released as it goes).
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np

from gatescope.kinds import described_range
from gatescope.names import parse_name
from gatescope.saturation import saturation as count_saturation
from gatescope.traces.file import TraceFile
from gatescope.tui.pages import copy_rows, file_backed

CHUNK = 4096  # rows per read: a few CHUNK x H float64 arrays at a time
Progress = Callable[[float], bool]  # called with the fraction done; returns False to stop


def _chunks(data: TraceFile, name: str, progress: Progress | None):
    """(first row, rows as float64 (C, H)) for each chunk; mapped pages are released once copied."""
    n = data.arrays[name].shape[0]
    mapped = file_backed(data.arrays[name])
    for start in range(0, n, CHUNK):
        if progress is not None and not progress(start / n):
            return
        yield start, copy_rows(data, name, start, start + CHUNK, mapped).astype(np.float64)  # (C, H)


def correlation(data: TraceFile, name: str, feature: np.ndarray, progress: Progress | None = None) -> np.ndarray:
    """Pearson r of every unit of ``name`` with ``feature`` [N] (NaN rows skipped): (H,), NaN if undefined."""
    feature = np.asarray(feature, dtype=np.float64)
    hidden = int(data.arrays[name].shape[1])
    n, sx, sy, sxx, syy, sxy = (np.zeros(hidden) for _ in range(6))
    for start, x in _chunks(data, name, progress):
        y = feature[start:start + len(x), None]  # (C, 1)
        valid = np.isfinite(x) & np.isfinite(y)  # (C, H)
        x = np.where(valid, x, 0.0)
        y = np.where(valid, y, 0.0)  # (C, H)
        n += valid.sum(0)
        sx += x.sum(0)
        sy += y.sum(0)
        sxx += (x * x).sum(0)
        syy += (y * y).sum(0)
        sxy += (x * y).sum(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        cov = n * sxy - sx * sy
        r = cov / np.sqrt((n * sxx - sx * sx) * (n * syy - sy * sy))
    return np.where(n > 1, r, np.nan)


def saturation(data: TraceFile, name: str, progress: Progress | None = None) -> np.ndarray:
    """Fraction of counted rows where each unit of ``name`` is saturated (see the module docstring): (H,)."""
    blocks = (x for _, x in _chunks(data, name, progress))
    q = parse_name(name)
    value_range = described_range(data.meta.get("modules"), q.path, q.kind)  # the kind's range in its cell
    return count_saturation(blocks, q.kind, int(data.arrays[name].shape[1]), value_range=value_range).fraction
