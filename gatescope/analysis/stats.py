"""The statistics every analysis shares: midranks, the Mann-Whitney AUC, quantile bins, mutual information,
false-discovery adjustment, and the choice and order of a ranking's metric.

One place for each: the in-memory ranking (ranking.py), the streamed analyses (streaming/) and the findings
read them here. Conventions: ties share their average rank (midranks); AUC is Mann-Whitney's U / (n1 n0)
(Hanley & McNeil 1982); MI is the plug-in estimate in bits; p-values adjusted by Benjamini & Hochberg 1995;
an accuracy's 95% interval is Wilson's, an intervention's effect on the same items a paired bootstrap's.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from gatescope.analysis.labels import Labels
from gatescope.errors import GatescopeError

METRICS = ("corr", "auc", "mi", "probe")


DEFAULT_METRIC = {"binary": "auc", "categorical": "mi", "continuous": "corr"}


def check_metric(lab: Labels, metric: str, bins: int, metrics: tuple[str, ...] = METRICS) -> str:
    """The metric to rank by ("auto" resolved for the labels' kind); a wrong one is a one-line error."""
    metric = DEFAULT_METRIC[lab.kind] if metric == "auto" else metric
    if metric not in metrics:
        raise GatescopeError(f"unknown metric {metric!r}; choose from auto, {', '.join(metrics)}")
    if metric == "auc" and lab.kind != "binary":
        raise GatescopeError(f"metric auc needs binary labels; {lab.name} is {lab.kind}")
    if metric == "corr" and lab.kind == "categorical":
        raise GatescopeError(f"metric corr needs binary or continuous labels; {lab.name} is categorical (use mi)")
    if bins < 2:
        raise GatescopeError(f"bins must be at least 2, not {bins}")
    return metric


def sort_ranking(rows: list[dict[str, Any]], metric: str) -> None:
    """Give each row its ``score`` for ``metric`` and sort best first (NaN scores last)."""
    for row in rows:
        row["score"] = _score(row, metric)
    rows.sort(key=lambda r: -r["score"] if r["score"] == r["score"] else float("inf"))


def _score(row: dict[str, Any], metric: str) -> float:
    if metric == "corr":
        return abs(row["corr"])
    if metric == "auc":
        return max(row["auc"], 1 - row["auc"])
    return row[metric]


def benjamini_hochberg(p: torch.Tensor) -> torch.Tensor:
    """Benjamini-Hochberg adjusted p-values (false discovery rate), same order as ``p``."""
    m = p.numel()
    if m == 0:
        return p.clone()
    order = torch.argsort(p)
    scaled = p[order] * m / torch.arange(1, m + 1, dtype=p.dtype)
    adjusted = torch.flip(torch.cummin(torch.flip(scaled, [0]), 0).values, [0]).clamp(max=1.0)
    out = torch.empty_like(p)
    out[order] = adjusted
    return out


def tie_groups(s: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """For rows ``s`` [u, n] sorted ascending: each element's tie group (ids unique across rows),
    and per group the mean and the last of the 1-based positions its elements hold."""
    u, n = s.shape
    starts = torch.ones(u, n, dtype=torch.bool)
    starts[:, 1:] = s[:, 1:] != s[:, :-1]
    group = torch.cumsum(starts.flatten(), 0) - 1  # (u*n,)
    groups = int(group[-1]) + 1
    pos = torch.arange(1, n + 1, dtype=torch.float64).repeat(u)  # (u*n,)
    mean = torch.zeros(groups, dtype=torch.float64).index_add_(0, group, pos) / torch.bincount(group, minlength=groups)
    last = torch.zeros(groups, dtype=torch.float64).scatter_reduce_(0, group, pos, "amax")
    return group.view(u, n), mean, last


def midranks(x: torch.Tensor) -> torch.Tensor:
    """Per-column ranks 1..n of ``x`` [n, u], ties sharing their average rank."""
    s, order = torch.sort(x.T.contiguous(), dim=1)  # (u, n)
    group, mean, _ = tie_groups(s)
    return torch.empty_like(s).scatter_(1, order, mean[group]).T  # (n, u)


def mann_whitney_auc(ranks: torch.Tensor, positive: torch.Tensor) -> torch.Tensor:
    """Per-column ROC AUC from midranks ``ranks`` [n, u] and the positive rows ``positive`` (n,), every
    other row negative: the Mann-Whitney U over n1 * n0 (ties count half, through the midranks)."""
    n1 = int(positive.sum())
    n0 = positive.numel() - n1
    return (ranks[positive].sum(0) - n1 * (n1 + 1) / 2) / (n1 * n0)  # (u,)


def quantile_bins(ranks: torch.Tensor, bins: int) -> torch.Tensor:
    """Bin index 0..bins-1 from midranks (ties share a bin)."""
    n = ranks.shape[0]
    return ((ranks - 0.5) * bins / n).floor().clamp(0, bins - 1).to(torch.int64)


def mutual_information_bits(joint: torch.Tensor) -> torch.Tensor:
    """Plug-in MI in bits of each joint count table [u, bx, by] -> (u,); the one MI of the analysis layer."""
    joint = joint.to(torch.float64)
    joint = joint / joint.sum((1, 2), keepdim=True).clamp_min(1)
    px, py = joint.sum(2, keepdim=True), joint.sum(1, keepdim=True)
    ratio = torch.where(joint > 0, joint / (px * py).clamp_min(1e-300), torch.ones_like(joint))
    return (joint * torch.log2(ratio)).sum((1, 2))


Z95 = 1.959963984540054  # the normal quantile of a two-sided 95% interval


def wilson_interval(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of a binomial proportion (Wilson 1927; Brown, Cai & DasGupta 2001 recommend
    it over the normal approximation for small n and proportions near 0 or 1); (nan, nan) when n is 0."""
    if n == 0:
        return (math.nan, math.nan)
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (max(0.0, centre - half), min(1.0, centre + half))


def paired_bootstrap_interval(before: np.ndarray, after: np.ndarray, resamples: int = 2000,
                              seed: int = 0) -> tuple[float, float]:
    """95% percentile interval of mean(before) - mean(after) over items resampled with replacement, each item
    keeping its pair (Efron & Tibshirani 1993): the interval of an intervention's effect on the same items."""
    before, after = np.asarray(before, dtype=np.float64), np.asarray(after, dtype=np.float64)
    n = before.size
    if n == 0:
        return (math.nan, math.nan)
    draws = np.random.default_rng(seed).integers(0, n, size=(resamples, n))  # (R, n)
    effects = (before[draws] - after[draws]).mean(axis=1)  # (R,)
    low, high = np.quantile(effects, [0.025, 0.975])
    return (float(low), float(high))
