"""Streaming statistics: mergeable accumulators for the analyses, computed in one pass over a corpus.

Each accumulator holds sufficient statistics (counts, sums, histograms), has ``update(batch)``,
``merge(other)`` and ``result()``, and its whole state is a dict of tensors that are *added* when
two halves of a corpus are merged (Chan, Golub & LeVeque 1979's pairwise combination, in its
simplest form: raw sums in float64, counts and histograms in int64). So merging two halves equals
one pass over the whole (exactly for counts and histograms, to float64 rounding for the sums, about
1e-12 relative), and several processes merge with one ``all_reduce(SUM)`` per tensor
(gatescope.runs.distributed).

What each computes, and how it relates to the in-memory analysis over a trace:

- `Moments`: per-unit count, mean and variance (population, as probes standardise with).
- `Association`: Pearson r (point-biserial for binary labels) or the correlation ratio eta²
  (categorical labels) from sums of x, x², y, y², xy or per-class sums: the ``corr`` / ``eta2`` of
  gatescope.analysis.ranking, equal to float rounding.
- `Histogram`: per-unit counts on a fixed grid per quantity, per label code. From it, ROC AUC with
  ties counted a half (the Mann-Whitney U of ranking.py), and mutual information with the unit
  binned at its quantiles (ranking.py's ``mi``). Values that share a grid bin are treated as tied,
  so the AUC is off by at most ``auc_bound`` = 0.5 * sum_b n1_b * n0_b / (n1 * n0) (the pairs that
  share a bin, each counted a half, could each be a win or a loss), reported per unit; both AUC and
  MI are exact when no grid bin holds two distinct values of a unit. The grid: ``bins`` equal bins
  over the kind's range in gatescope.kinds (0..1 for gates, -1..1 for tanh outputs; the unbounded
  cell state is binned on asinh(c) over -16..16, a monotone map, so ranks are kept), plus one bin
  below and one above.
- `Saturation`: Karpathy et al. 2015's left / right saturation fractions and the mean, counted with
  gatescope.saturation, the one definition that dynamics.saturation, inspect and the browser use.
- `GroupMeans`: per-unit means per group code (a feature value, a condition x position): the
  profiles of a unit across conditions.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from gatescope.analysis.stats import midranks, mutual_information_bits, quantile_bins
from gatescope.errors import GatescopeError
from gatescope.kinds import Range, kind_range
from gatescope.saturation import HIGH, LOW
from gatescope.saturation import Saturation as SaturationCounts

ASINH_LIMIT = 16.0  # the unbounded cell state is binned on asinh(c) in -16..16 (|c| up to ~4e6)
DEFAULT_GRID_BINS = 2048


class Accumulator:
    """Sufficient statistics held as a dict of tensors that add when two accumulators merge."""

    state: dict[str, torch.Tensor]

    def merge(self, other: "Accumulator") -> "Accumulator":
        """Add ``other``'s statistics (the same kind of accumulator, same shapes) into this one."""
        if type(other) is not type(self) or other.state.keys() != self.state.keys():
            raise GatescopeError(f"cannot merge a {type(other).__name__} into a {type(self).__name__}")
        for key, value in self.state.items():
            if value.shape != other.state[key].shape:
                raise GatescopeError(f"cannot merge accumulators of different shapes ({key})")
            value += other.state[key]
        return self


def _check_batch(x: torch.Tensor, units: int) -> torch.Tensor:
    """A batch [n, units] as float64; non-finite values are a one-line error (they would poison sums)."""
    if x.dim() != 2 or x.shape[1] != units:
        raise GatescopeError(f"a batch of shape {tuple(x.shape)} for an accumulator of {units} units")
    x = x.to(torch.float64)
    if not bool(torch.isfinite(x).all()):
        raise GatescopeError("the batch holds NaN or infinite values; statistics over them are undefined")
    return x


class Moments(Accumulator):
    """Per-unit count, sum and sum of squares -> mean and (population) variance."""

    def __init__(self, units: int) -> None:
        self.units = units
        self.state = {"n": torch.zeros((), dtype=torch.int64), "sx": torch.zeros(units, dtype=torch.float64),
                      "sxx": torch.zeros(units, dtype=torch.float64)}

    def update(self, x: torch.Tensor) -> None:
        """x: [n, units]."""
        x = _check_batch(x, self.units)
        self.state["n"] += x.shape[0]
        self.state["sx"] += x.sum(0)
        self.state["sxx"] += (x * x).sum(0)

    def result(self) -> dict[str, torch.Tensor]:
        n = int(self.state["n"])
        if n == 0:
            raise GatescopeError("no rows were accumulated")
        mean = self.state["sx"] / n
        return {"n": torch.tensor(n), "mean": mean, "var": (self.state["sxx"] / n - mean**2).clamp_min(0)}


def _centred_ss(n: torch.Tensor, s: torch.Tensor, ss: torch.Tensor) -> torch.Tensor:
    """sum (x - mean)² from n, sum x and sum x², with what is rounding (a constant unit) set to 0."""
    out = ss - s * s / n
    return torch.where(out > 1e-12 * ss.abs().clamp_min(1e-300), out, torch.zeros_like(out))


class Association(Accumulator):
    """Per-unit association with a label: Pearson r (binary or continuous labels) or eta² (categorical).

    update(x [n, units], y [n] float): rows with a NaN label are skipped. For class labels pass the
    class codes 0..C-1 as y (binary: code 1 is the larger value, so r has the sign of ranking.py's).
    """

    def __init__(self, units: int, kind: str, num_classes: int = 0) -> None:
        self.units, self.kind = units, kind
        classes = num_classes if kind != "continuous" else 0
        if kind != "continuous" and classes < 2:
            raise GatescopeError(f"{kind} labels need at least two classes")
        zeros = lambda *shape: torch.zeros(*shape, dtype=torch.float64)  # noqa: E731
        self.state = {"n": torch.zeros((), dtype=torch.int64), "sx": zeros(units), "sxx": zeros(units)}
        if kind == "continuous":
            self.state |= {"sy": zeros(()), "syy": zeros(()), "sxy": zeros(units)}
        else:
            self.state |= {"nc": torch.zeros(classes, dtype=torch.int64), "sxc": zeros(classes, units)}

    def update(self, x: torch.Tensor, y: torch.Tensor) -> None:
        y = torch.as_tensor(y, dtype=torch.float64).reshape(-1)
        keep = torch.isfinite(y)
        x, y = _check_batch(x[keep], self.units), y[keep]
        st = self.state
        st["n"] += y.numel()
        st["sx"] += x.sum(0)
        st["sxx"] += (x * x).sum(0)
        if self.kind == "continuous":
            st["sy"] += y.sum()
            st["syy"] += (y * y).sum()
            st["sxy"] += y @ x
        else:
            codes = y.to(torch.int64)
            st["nc"] += torch.bincount(codes, minlength=st["nc"].numel())
            st["sxc"].index_add_(0, codes, x)

    def result(self) -> dict[str, torch.Tensor]:
        """{"corr": (units,)} or {"eta2": (units,)}, 0 where the unit is constant; and "n"."""
        st = self.state
        n = st["n"].to(torch.float64)
        if int(st["n"]) < 2:
            raise GatescopeError(f"only {int(st['n'])} labelled rows were accumulated")
        ssx = _centred_ss(n, st["sx"], st["sxx"])  # (units,)
        if self.kind == "categorical":
            nc = st["nc"].to(torch.float64)[:, None].clamp_min(1)
            between = (st["sxc"] ** 2 / nc).sum(0) - st["sx"] ** 2 / n  # sum_c n_c (mean_c - mean)²
            return {"n": st["n"], "eta2": torch.where(ssx > 0, between.clamp_min(0) / ssx.clamp_min(1e-300), 0.0)}
        if self.kind == "continuous":
            sy, syy, sxy = st["sy"], st["syy"], st["sxy"]
        else:  # y = the class code, 0 or 1
            sy, syy, sxy = st["nc"][1].to(torch.float64), st["nc"][1].to(torch.float64), st["sxc"][1]
        ssy = _centred_ss(n, sy, syy)
        cov = sxy - st["sx"] * sy / n
        denom = (ssx * ssy).sqrt()
        return {"n": st["n"], "corr": torch.where(denom > 0, cov / denom.clamp_min(1e-300), 0.0)}


@dataclass(frozen=True)
class Grid:
    """A fixed grid: ``bins`` equal bins over [low, high] of ``transform(x)``, one more below and above."""

    low: float
    high: float
    bins: int
    transform: str = "identity"  # or "asinh"

    @classmethod
    def for_kind(cls, kind: str, bins: int = DEFAULT_GRID_BINS, value_range: Range | None = None) -> "Grid":
        """The grid of a recorded kind, from its range in gatescope.kinds (``value_range``: its range in its
        cell type, `CellType.range_of`; default the kind's own): the range itself when bounded, else asinh."""
        if bins < 2:
            raise GatescopeError(f"a grid needs at least 2 bins, not {bins}")
        rng = kind_range(kind) if value_range is None else value_range
        if rng.bounded and rng.high > rng.low:
            return cls(rng.low, rng.high, bins)
        return cls(-ASINH_LIMIT, ASINH_LIMIT, bins, "asinh")

    @property
    def size(self) -> int:
        return self.bins + 2

    def index(self, x: torch.Tensor) -> torch.Tensor:
        """Bin of each value of ``x`` (float64): 0 below low, 1..bins inside, bins+1 at or above high."""
        t = torch.asinh(x) if self.transform == "asinh" else x
        scaled = torch.floor((t - self.low) * (self.bins / (self.high - self.low)))
        return (scaled.clamp(-1, self.bins) + 1).to(torch.int64)


class Histogram(Accumulator):
    """Per-unit counts on a `Grid`, per label code: counts [units, grid.size, codes] int64.

    update(x [n, units], codes [n] int, -1 = skip). For binary labels the codes are the classes;
    for MI against a continuous label, its quantile-bin codes (`quantile_codes`).
    """

    def __init__(self, units: int, grid: Grid, num_codes: int) -> None:
        self.units, self.grid, self.num_codes = units, grid, num_codes
        self._counts = {"counts": torch.zeros(units, grid.size, num_codes, dtype=torch.int64)}
        self._base = torch.arange(units) * (grid.size * num_codes)  # (units,) where each unit's counts start
        self._pending: list[torch.Tensor] = []  # flat bins of recent batches, counted together
        self._pending_size = 0

    @property
    def state(self) -> dict[str, torch.Tensor]:
        self._flush()
        return self._counts

    def update(self, x: torch.Tensor, codes: torch.Tensor) -> None:
        codes = torch.as_tensor(codes, dtype=torch.int64).reshape(-1)
        keep = codes >= 0
        x, codes = _check_batch(x[keep], self.units), codes[keep]
        flat = (self.grid.index(x) * self.num_codes).add_(self._base).add_(codes[:, None])  # (n, units)
        self._pending.append(flat.reshape(-1))
        self._pending_size += flat.numel()
        if 2 * self._pending_size >= self._counts["counts"].numel():  # one bincount pays for the whole grid
            self._flush()

    def _flush(self) -> None:
        if self._pending:
            counts = self._counts["counts"]
            counts.view(-1).add_(torch.bincount(torch.cat(self._pending), minlength=counts.numel()))
            self._pending, self._pending_size = [], 0

    def result(self, bins: int = 16) -> dict[str, torch.Tensor]:
        """{"mi": (units,)}, and "auc", "auc_bound" when there are two codes."""
        out = {"mi": self.mutual_information(bins)}
        if self.num_codes == 2:
            out["auc"], out["auc_bound"] = self.auc()
        return out

    def auc(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(AUC of each unit as a score for code 1 vs code 0, its bound from ties within a bin): (units,) each."""
        if self.num_codes != 2:
            raise GatescopeError("AUC needs binary labels")
        c = self.state["counts"].to(torch.float64)
        neg, pos = c[:, :, 0], c[:, :, 1]  # (units, bins)
        n0, n1 = neg.sum(1), pos.sum(1)
        if bool((n0 == 0).any()) or bool((n1 == 0).any()):
            raise GatescopeError("AUC needs rows of both classes")
        below = torch.cumsum(neg, 1) - neg  # negatives in lower bins
        ties = (pos * neg).sum(1)
        auc = ((pos * below).sum(1) + 0.5 * ties) / (n1 * n0)
        return auc, 0.5 * ties / (n1 * n0)

    def mutual_information(self, bins: int) -> torch.Tensor:
        """MI in bits between each unit, binned at its ``bins`` quantiles (midranks of its grid bins), and the codes."""
        counts = self.state["counts"]  # (units, G, C)
        per_bin = counts.sum(2)  # (units, G)
        n = int(per_bin[0].sum())
        if n == 0:
            raise GatescopeError("no labelled rows were accumulated")
        cum = torch.cumsum(per_bin, 1)
        midrank = (cum - per_bin).to(torch.float64) + (per_bin.to(torch.float64) + 1) / 2
        qbin = ((midrank - 0.5) * bins / n).floor().clamp(0, bins - 1).to(torch.int64)  # (units, G)
        joint = torch.zeros(self.units, bins, self.num_codes, dtype=torch.int64)
        joint.scatter_add_(1, qbin[:, :, None].expand(-1, -1, self.num_codes), counts)
        return mutual_information_bits(joint)


def quantile_codes(values: torch.Tensor, bins: int) -> torch.Tensor:
    """Quantile-bin code 0..bins-1 of each finite value of ``values`` [N] by midranks (-1 where NaN),
    as ranking.py bins a continuous label for MI."""
    values = torch.as_tensor(values, dtype=torch.float64)
    valid = torch.isfinite(values)
    codes = torch.full(values.shape, -1, dtype=torch.int64)
    codes[valid] = quantile_bins(midranks(values[valid][:, None])[:, 0], bins)
    return codes


class Saturation(Accumulator):
    """Per-unit left / right saturation counts, counted values and their sum: gatescope.saturation's
    one definition (its thresholds, its reading of each kind on 0..1, NaN neither saturated nor counted)."""

    def __init__(self, units: int, kind: str, low: float = LOW, high: float = HIGH) -> None:
        self.units, self.kind, self.low, self.high = units, kind, low, high
        zeros = lambda: torch.zeros(units, dtype=torch.int64)  # noqa: E731
        self.state = {"left": zeros(), "right": zeros(), "counted": zeros(),
                      "sum": torch.zeros(units, dtype=torch.float64)}

    def update(self, block: torch.Tensor) -> None:
        if block.dim() != 2 or block.shape[1] != self.units:
            raise GatescopeError(f"a batch of shape {tuple(block.shape)} for an accumulator of {self.units} units")
        x = block.to(torch.float64)  # (rows, H); NaN kept: the definition leaves it out
        counts = SaturationCounts.of(x.numpy(), self.kind, self.low, self.high)
        for key in ("left", "right", "counted"):
            self.state[key] += torch.from_numpy(np.asarray(getattr(counts, key), dtype=np.int64))
        self.state["sum"] += torch.nansum(x, 0)

    def result(self) -> dict[str, torch.Tensor]:
        """{"left", "right", "mean"}: (units,) each, over a unit's counted values (NaN where none)."""
        st = self.state
        counts = SaturationCounts(st["left"].numpy(), st["right"].numpy(), st["counted"].numpy())
        counted = st["counted"].to(torch.float64)
        return {"left": torch.from_numpy(counts.left_fraction), "right": torch.from_numpy(counts.right_fraction),
                "mean": torch.where(counted > 0, st["sum"] / counted.clamp_min(1), torch.nan)}


class GroupMeans(Accumulator):
    """Per-unit means per group code 0..groups-1 (a feature value, a condition x position): profiles."""

    def __init__(self, units: int, groups: int) -> None:
        self.units, self.groups = units, groups
        self.state = {"count": torch.zeros(groups, dtype=torch.int64),
                      "sum": torch.zeros(groups, units, dtype=torch.float64)}

    def update(self, x: torch.Tensor, groups: torch.Tensor) -> None:
        """x [n, units]; groups [n] int (-1 = in no group)."""
        groups = torch.as_tensor(groups, dtype=torch.int64).reshape(-1)
        if bool((groups >= self.groups).any()):
            raise GatescopeError(f"a group code above {self.groups - 1}")
        keep = groups >= 0
        x, groups = _check_batch(x[keep], self.units), groups[keep]
        self.state["count"] += torch.bincount(groups, minlength=self.groups)
        self.state["sum"].index_add_(0, groups, x)

    def result(self) -> dict[str, torch.Tensor]:
        """{"count": (groups,), "mean": (groups, units), NaN for an empty group}."""
        count = self.state["count"]
        mean = self.state["sum"] / count[:, None].to(torch.float64)
        return {"count": count, "mean": torch.where(count[:, None] > 0, mean, math.nan)}

