"""The analyses of a trace, computed batch by batch from gatescope.analysis.streaming's accumulators.

A `StreamingRanking` or `StreamingSaturation` is built from the quantities a run records (name ->
number of units), fed each batch's recorded quantities with the row where the batch starts in the
corpus, merged with the same object of another process or another half of the corpus, and turned
into the same Table as `gatescope.analysis.ranking.rank_units` / `dynamics.saturation`:

- the ranking has corr (or eta2), auc with its ``auc_bound`` (binary labels), mi and n, equal to
  rank_units' values (see the accumulators' docstring for when they are exact); it has no
  permutation p-values (the shuffles need the whole trace at once) and no single-unit held-out
  ``probe`` column (that needs a second pass); asking for metric probe is a one-line error.
- the saturation table has rank_units' columns exactly; timescales come from the mean of f / z.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import torch

from gatescope.analysis.dynamics import GATE_KINDS, TANH_KINDS, TIMESCALE_KINDS, _timescale
from gatescope.analysis.labels import Labels
from gatescope.analysis.ranking import check_metric, sort_ranking
from gatescope.analysis.selection import parse_kinds, unit_row
from gatescope.analysis.streaming import (
    DEFAULT_GRID_BINS,
    Accumulator,
    Association,
    Grid,
    Histogram,
    Moments,
    Saturation,
    quantile_codes,
)
from gatescope.analysis.table import Table
from gatescope.errors import GatescopeError
from gatescope.names import parse_name

STREAM_METRICS = ("corr", "auc", "mi")


def _select(widths: Mapping[str, int], kinds: tuple[str, ...] | None) -> dict[str, int]:
    chosen = {n: w for n, w in widths.items() if kinds is None or parse_name(n).kind in kinds}
    if not chosen:
        have = sorted({parse_name(n).kind for n in widths})
        raise GatescopeError(f"the run records no quantity of kind {','.join(kinds or ())}; "
                             f"it records kinds {','.join(have) or 'none'}")
    return chosen


class StreamingAnalysis:
    """Accumulators per quantity; ``accumulators()`` lists them in one fixed order (for all_reduce)."""

    def accumulators(self) -> list[Accumulator]:
        raise NotImplementedError

    def names(self) -> list[str]:
        """The quantities ``update`` reads."""
        raise NotImplementedError

    def kinds(self) -> list[str]:
        """The kinds ``update`` reads: what a run needs to record."""
        return sorted({parse_name(n).kind for n in self.names()})

    def merge(self, other: "StreamingAnalysis") -> "StreamingAnalysis":
        mine, theirs = self.accumulators(), other.accumulators()
        if len(mine) != len(theirs):
            raise GatescopeError("cannot merge analyses of different quantities")
        for a, b in zip(mine, theirs):
            a.merge(b)
        return self


class StreamingRanking(StreamingAnalysis):
    """`rank_units` in one pass: per quantity an `Association` and a `Histogram` on the kind's grid."""

    def __init__(self, widths: Mapping[str, int], labels: Labels, *, kinds: str | Iterable[str] | None = None,
                 metric: str = "auto", bins: int = 16, grid_bins: int = DEFAULT_GRID_BINS) -> None:
        """widths: quantity name -> units, as the run records them; labels: one per token of the corpus."""
        self.labels, self.bins = labels, bins
        if metric == "probe":
            raise GatescopeError("metric probe is not computed in one pass (it holds out whole sequences and "
                                 "refits); use corr, auc or mi, or trace the corpus and rank the trace")
        self.metric = check_metric(labels, metric, bins, STREAM_METRICS)
        self.widths = _select(widths, parse_kinds(kinds))
        self.values = labels.values if labels.codes is None else torch.where(
            labels.codes >= 0, labels.codes.to(torch.float64), torch.nan)  # (N,) what Association takes
        self.codes = labels.codes if labels.codes is not None else quantile_codes(labels.values, bins)  # (N,)
        codes = labels.num_classes if labels.codes is not None else bins
        self.stats = {name: (Association(w, labels.kind, labels.num_classes),
                             Histogram(w, Grid.for_kind(parse_name(name).kind, grid_bins), codes))
                      for name, w in self.widths.items()}

    def update(self, quantities: Mapping[str, torch.Tensor], start: int) -> None:
        """quantities: name -> [n, units], the corpus's rows start..start+n."""
        for name, (assoc, hist) in self.stats.items():
            x = quantities[name]  # (n, units)
            rows = slice(start, start + x.shape[0])
            if rows.stop > self.values.numel():
                raise GatescopeError(f"the corpus has more tokens than the {self.values.numel()} labels "
                                     f"of {self.labels.name}")
            assoc.update(x, self.values[rows])
            hist.update(x, self.codes[rows])

    def accumulators(self) -> list[Accumulator]:
        return [acc for pair in self.stats.values() for acc in pair]

    def names(self) -> list[str]:
        return list(self.stats)

    def result(self) -> Table:
        lab = self.labels
        rows: list[dict[str, Any]] = []
        n = 0
        for name, (assoc, hist) in self.stats.items():
            values = assoc.result()
            n = int(values.pop("n"))
            values |= hist.result(self.bins)
            for j in range(self.widths[name]):
                rows.append(unit_row(name, j) | {k: float(v[j]) for k, v in values.items()})
        for row in rows:
            row.update(metric=self.metric, n=n)
        sort_ranking(rows, self.metric)
        value_cols = ["eta2" if lab.kind == "categorical" else "corr"] + (
            ["auc", "auc_bound"] if lab.kind == "binary" else [])
        columns = ["unit", "score", "metric", "name", "layer", "direction", "kind", "index", *value_cols, "mi", "n"]
        return Table([{c: row[c] for c in columns} for row in rows], columns)


def saturation_kinds(names: Iterable[str], kinds: str | Iterable[str] | None) -> tuple[str, ...]:
    """The kinds `dynamics.saturation` measures: the given ones, else the sigmoid gates present, else
    the tanh outputs present; c is refused."""
    if kinds is None:
        present = {parse_name(n).kind for n in names}
        kinds = [k for k in GATE_KINDS if k in present] or sorted(present & TANH_KINDS)
        if not kinds:
            raise GatescopeError("the trace holds no gate or tanh output to measure saturation on (only c)")
    kinds = parse_kinds(kinds)
    if "c" in kinds:
        raise GatescopeError("the cell state c is unbounded; saturation applies to gates and tanh outputs")
    return kinds


class StreamingSaturation(StreamingAnalysis):
    """`dynamics.saturation` and `dynamics.timescales` in one pass."""

    def __init__(self, widths: Mapping[str, int], *, kinds: str | Iterable[str] | None = None,
                 low: float = 0.1, high: float = 0.9) -> None:
        self.widths = _select(widths, saturation_kinds(widths, kinds))
        self.stats = {name: Saturation(w, parse_name(name).kind, low, high) for name, w in self.widths.items()}
        self.means = {name: Moments(w) for name, w in widths.items() if parse_name(name).kind in TIMESCALE_KINDS}

    def update(self, quantities: Mapping[str, torch.Tensor], start: int = 0) -> None:
        for name, acc in self.stats.items():
            acc.update(quantities[name])
        for name, acc in self.means.items():
            acc.update(quantities[name])

    def accumulators(self) -> list[Accumulator]:
        return [*self.stats.values(), *self.means.values()]

    def names(self) -> list[str]:
        return list(dict.fromkeys([*self.stats, *self.means]))

    def result(self) -> Table:
        rows = []
        for name, acc in self.stats.items():
            values = acc.result()
            rows += [unit_row(name, j) | {k: float(v[j]) for k, v in values.items()} for j in range(self.widths[name])]
        return Table(rows, ["unit", "name", "layer", "direction", "kind", "index", "left", "right", "mean"])

    def timescales(self) -> Table | None:
        """`dynamics.timescales` over the stream; None when the run records no f or z."""
        if not self.means:
            return None
        rows = []
        for name, acc in self.means.items():
            rows += [unit_row(name, j) | {"mean": m, "timescale": _timescale(m)}
                     for j, m in enumerate(acc.result()["mean"].tolist())]
        return Table(rows, ["unit", "name", "layer", "direction", "kind", "index", "mean", "timescale"])
