"""The analyses of a trace, computed batch by batch from gatescope.analysis.streaming's accumulators.

A `StreamingRanking` or `StreamingSaturation` is built from the quantities a run records (name ->
number of units), fed each batch's recorded quantities with the row where the batch starts in the
corpus, merged with the same object of another process or another half of the corpus, and turned
into the same Table as `gatescope.analysis.ranking.rank_units` / `dynamics.saturation`:

- the ranking has corr (or eta2), auc with its ``auc_bound`` (binary labels), mi and n, equal to
  rank_units' values (see the accumulators' docstring for when they are exact); it has no
  permutation p-values (the shuffles need the whole trace at once) and no single-unit held-out
  ``probe`` column (that needs a second pass); asking for metric probe is a one-line error.
- the saturation table has dynamics.saturation's columns exactly; timescales come from the mean of f / z.
- the probes (`StreamingProbes`) train `probes.fit_probe`'s probe with its code, over several passes.
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
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
from gatescope.names import format_unit, parse_name
from gatescope.saturation import HIGH, LOW

STREAM_METRICS = ("corr", "auc", "mi")


def _select(widths: Mapping[str, int], kinds: tuple[str, ...] | None) -> dict[str, int]:
    chosen = {n: w for n, w in widths.items() if kinds is None or parse_name(n).kind in kinds}
    if not chosen:
        have = sorted({parse_name(n).kind for n in widths})
        raise GatescopeError(f"the run records no quantity of kind {','.join(kinds or ())}; "
                             f"it records kinds {','.join(have) or 'none'}")
    return chosen


@contextmanager
def _naming(name: str) -> Iterator[None]:
    """Prefix an accumulator's one-line error with the quantity it was reading."""
    try:
        yield
    except GatescopeError as exc:
        raise GatescopeError(f"{name}: {exc}") from None


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
        self.codes = labels.codes if labels.codes is not None else quantile_codes(labels.values, bins)  # (N,)
        codes = labels.num_classes if labels.codes is not None else bins
        self.stats = {name: (Association(w, labels.kind, labels.num_classes),
                             Histogram(w, Grid.for_kind(parse_name(name).kind, grid_bins), codes))
                      for name, w in self.widths.items()}

    def update(self, quantities: Mapping[str, torch.Tensor], start: int) -> None:
        """quantities: name -> [n, units], the corpus's rows start..start+n."""
        rows = slice(start, start + next(iter(quantities.values())).shape[0])
        if rows.stop > self.codes.numel():
            raise GatescopeError(f"the corpus has more tokens than the {self.codes.numel()} labels "
                                 f"of {self.labels.name}")
        values, codes = self._values(rows), self.codes[rows]  # (n,) each
        for name, (assoc, hist) in self.stats.items():
            with _naming(name):
                assoc.update(quantities[name], values)
                hist.update(quantities[name], codes)

    def _values(self, rows: slice) -> torch.Tensor:
        """What `Association` takes for rows: the values, or the class codes (NaN where unlabelled)."""
        if self.labels.codes is None:
            return self.labels.values[rows]
        codes = self.labels.codes[rows]
        return torch.where(codes >= 0, codes.to(torch.float64), torch.nan)

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
    the tanh outputs present, else the cell state (read as tanh(c))."""
    if kinds is None:
        present = {parse_name(n).kind for n in names}
        kinds = [k for k in GATE_KINDS if k in present] or sorted(present & TANH_KINDS) or sorted(present)
    return parse_kinds(kinds)


class StreamingSaturation(StreamingAnalysis):
    """`dynamics.saturation` and `dynamics.timescales` in one pass."""

    def __init__(self, widths: Mapping[str, int], *, kinds: str | Iterable[str] | None = None,
                 low: float = LOW, high: float = HIGH) -> None:
        self.widths = _select(widths, saturation_kinds(widths, kinds))
        self.stats = {name: Saturation(w, parse_name(name).kind, low, high) for name, w in self.widths.items()}
        self.means = {name: Moments(w) for name, w in widths.items() if parse_name(name).kind in TIMESCALE_KINDS}

    def update(self, quantities: Mapping[str, torch.Tensor], start: int = 0) -> None:
        for name, acc in [*self.stats.items(), *self.means.items()]:
            with _naming(name):
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


class StreamingProbes(StreamingAnalysis):
    """`probe_units`' probe per quantity over a corpus, in passes: ``passes()`` names them in order.

    "moments": the units' sums over the training rows (mergeable); "train" (``epochs`` times): Adam
    steps on minibatches of each batch's training rows, shuffled within the batch, as `fit_probe`
    shuffles within a chunk of a trace (`ProbeTrainer`, the same code); "evaluate": held-out accuracy
    or R² from counts and sums (mergeable). Training is sequential, so it runs in one process. Rows:
    name, layer, direction, kind, units, n_train, n_test, baseline, score, top_units; the control
    task and the top-k curve (more probes, more passes) are not computed.
    """

    def __init__(self, widths: Mapping[str, int], labels: Labels, held: torch.Tensor, *,
                 kinds: str | Iterable[str] | None = None, epochs: int = 10, l1: float = 1e-3, l2: float = 1e-4,
                 seed: int = 0, batch_size: int = 256, lr: float = 0.05) -> None:
        """held: bool [N], the held-out rows (whole sequences: `selection.heldout_from_offsets`)."""
        self.widths = _select(widths, parse_kinds(kinds))
        self.labels, self.epochs, self.seed, self.batch_size = labels, epochs, seed, batch_size
        self.options = {"l1": l1, "l2": l2, "lr": lr, "seed": seed}
        self.train, self.test = ~held & labels.valid, held & labels.valid  # (N,)
        if not bool(self.train.any()) or not bool(self.test.any()):
            raise GatescopeError("probes need labelled tokens in both training and held-out sequences")
        self.regression = labels.kind == "continuous"
        self.target = labels.values.to(torch.float32) if self.regression else labels.codes  # (N,)
        self.moments = {name: Moments(w) for name, w in self.widths.items()}
        self.scores = {name: Moments(2 if self.regression else 1) for name in self.widths}
        self.trainers: dict[str, Any] = {}
        self.phase = "moments"

    def passes(self) -> list[str]:
        return ["moments"] + ["train"] * self.epochs + ["evaluate"]

    def begin(self, phase: str) -> None:
        """Start a pass; the first "train" builds the trainers from the (merged) moments."""
        from gatescope.analysis.probes import ProbeTrainer

        if phase == "train" and not self.trainers:
            for name, acc in self.moments.items():
                st = acc.state
                if int(st["n"]) < 2:
                    raise GatescopeError(f"too few labelled training rows to fit a probe on {name}")
                self.trainers[name] = (ProbeTrainer(self.labels, self.target[self.train], int(st["n"]), st["sx"],
                                                    st["sxx"], **self.options),
                                       torch.Generator().manual_seed(self.seed))
        self.phase = phase

    def update(self, quantities: Mapping[str, torch.Tensor], start: int) -> None:
        for name in self.widths:
            x = quantities[name]  # (n, units)
            rows = slice(start, start + x.shape[0])
            keep = (self.test if self.phase == "evaluate" else self.train)[rows]
            if not bool(keep.any()):
                continue
            x, t = x[keep].to(torch.float32), self.target[rows][keep]
            if self.phase == "moments":
                self.moments[name].update(x)
            elif self.phase == "train":
                trainer, gen = self.trainers[name]
                order = torch.randperm(x.shape[0], generator=gen)
                for b in range(0, x.shape[0], self.batch_size):
                    idx = order[b : b + self.batch_size]
                    trainer.step(x[idx], t[idx])
            else:
                pred = self._probe(name).predict(x)
                if self.regression:  # columns: the squared error, the target (for R²'s denominator)
                    self.scores[name].update(torch.stack([pred - t, t], 1))
                else:
                    self.scores[name].update((pred == t).to(torch.float64)[:, None])

    def _probe(self, name: str):
        trainer, _ = self.trainers[name]
        return trainer.probe(name, torch.arange(self.widths[name]))

    def accumulators(self) -> list[Accumulator]:
        if self.phase == "moments":
            return list(self.moments.values())
        return list(self.scores.values()) if self.phase == "evaluate" else []

    def names(self) -> list[str]:
        return list(self.widths)

    def result(self) -> Table:
        from gatescope.analysis.probes import _baseline

        baseline = _baseline(self.labels, self.train, self.test)
        rows = []
        for name, acc in self.scores.items():
            st = acc.state
            n = int(st["n"])
            if self.regression:  # 1 - sse / sum (y - mean)²
                sse, sy, syy = float(st["sxx"][0]), float(st["sx"][1]), float(st["sxx"][1])
                score = 1 - sse / max(syy - sy * sy / n, 1e-12)
            else:
                score = float(st["sx"][0]) / n
            qn = parse_name(name)
            rows.append({"name": name, "layer": qn.layer, "direction": qn.direction, "kind": qn.kind,
                         "units": self.widths[name], "n_train": int(self.train.sum()), "n_test": n,
                         "baseline": baseline, "score": score,
                         "top_units": [format_unit(name, u) for u in self._probe(name).unit_ranking()[:10]]})
        return Table(rows)
