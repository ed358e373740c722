"""The analyses of a trace, computed batch by batch from gatescope.analysis.streaming.accumulators's accumulators.

A `StreamingRanking` or `StreamingSaturation` is built from the quantities a run records (name ->
number of units), fed each batch's recorded quantities with the row where the batch starts in the
corpus, merged with the same object of another process or another half of the corpus, and turned
into the same Table as `gatescope.analysis.ranking.rank_units` / `dynamics.saturation`:

- the ranking has corr (or eta2), auc with its ``auc_bound`` (binary labels), mi and n, equal to
  rank_units' values (see the accumulators' docstring for when they are exact); it has no
  permutation p-values (the shuffles need the whole trace at once) and no single-unit held-out
  ``probe`` column (that needs a second pass); asking for metric probe is a one-line error.
- the saturation table has dynamics.saturation's columns exactly; timescales come from the mean of f / z.
- the probes (`StreamingProbes`) train `probes.fit_probe`'s probe with its code, over several passes,
  and the same probe on Hewitt & Liang's control task (`probes.control_draws`) for selectivity.

Labels come whole (a `labels.Labels`, ``update(quantities, start_row)``) or batch by batch with the
corpus (a `stream_labels.LabelScheme` and ``update(quantities, Rows(...))``), the same codes either way.
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch

from gatescope.analysis.dynamics import TIMESCALE_COLUMNS, TIMESCALE_KINDS, saturation_kinds, timescale_rows
from gatescope.analysis.labels import Labels
from gatescope.analysis.selection import parse_kinds, unit_row
from gatescope.analysis.stats import check_metric, sort_ranking
from gatescope.analysis.streaming.accumulators import (
    DEFAULT_GRID_BINS,
    Accumulator,
    Association,
    Grid,
    Histogram,
    Moments,
    Saturation,
)
from gatescope.analysis.streaming.labels import LabelScheme
from gatescope.analysis.table import Table
from gatescope.errors import GatescopeError
from gatescope.names import format_unit, parse_name
from gatescope.saturation import HIGH, LOW

STREAM_METRICS = ("corr", "auc", "mi")


@dataclass(frozen=True)
class Rows:
    """The corpus rows of one batch: where they start, and per row its label value, token id and whether
    it is held out (each [n], or None where the analysis reads none)."""

    start: int
    values: torch.Tensor | None = None  # (n,) float64, NaN = no label
    ids: torch.Tensor | None = None  # (n,) int64
    held: torch.Tensor | None = None  # (n,) bool


def _scheme(labels: Labels | LabelScheme) -> LabelScheme:
    """The scheme of whole labels (their distinct values and counts), or the scheme itself."""
    if isinstance(labels, LabelScheme):
        return labels
    distinct, counts = torch.unique(labels.values[labels.valid], return_counts=True)
    return LabelScheme.from_counts(labels.name, distinct, counts, labels.kind)


def _rows(labels: Labels | LabelScheme, held: torch.Tensor | None, at: int | Rows, n: int) -> Rows:
    """``at`` as Rows: a start row slices whole labels (and held-out rows); Rows are checked for length."""
    if isinstance(at, Rows):
        for name in ("values", "ids", "held"):
            got = getattr(at, name)
            if got is not None and got.numel() != n:
                raise GatescopeError(f"a batch of {n} rows with {got.numel()} {name}")
        return at
    if isinstance(labels, LabelScheme):
        raise GatescopeError("labels given batch by batch (a LabelScheme) need update(quantities, Rows(...))")
    if at + n > labels.values.numel():
        raise GatescopeError(f"the corpus has more tokens than the {labels.values.numel()} labels of {labels.name}")
    return Rows(at, labels.values[at:at + n], None, None if held is None else held[at:at + n])


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

    def __init__(self, widths: Mapping[str, int], labels: Labels | LabelScheme, *,
                 kinds: str | Iterable[str] | None = None, metric: str = "auto", bins: int = 16,
                 grid_bins: int = DEFAULT_GRID_BINS) -> None:
        """widths: quantity name -> units, as the run records them; labels: one per token of the corpus,
        or their scheme (the values then come with each batch's Rows)."""
        self.labels, self.scheme, self.bins = labels, _scheme(labels), bins
        if metric == "probe":
            raise GatescopeError("metric probe is not computed in one pass (it holds out whole sequences and "
                                 "refits); use corr, auc or mi, or trace the corpus and rank the trace")
        self.metric = check_metric(self.scheme, metric, bins, STREAM_METRICS)
        self.widths = _select(widths, parse_kinds(kinds))
        classes = self.scheme.kind != "continuous"
        codes = self.scheme.num_classes if classes else bins
        self.stats = {name: (Association(w, self.scheme.kind, self.scheme.num_classes),
                             Histogram(w, Grid.for_kind(parse_name(name).kind, grid_bins), codes))
                      for name, w in self.widths.items()}

    def update(self, quantities: Mapping[str, torch.Tensor], at: int | Rows) -> None:
        """quantities: name -> [n, units], the corpus's rows from ``at`` (a start row into whole labels,
        or the batch's Rows with their values)."""
        rows = _rows(self.labels, None, at, next(iter(quantities.values())).shape[0])
        values = rows.values.to(torch.float64)  # (n,)
        if self.scheme.kind == "continuous":  # Association reads the values, MI their quantile codes
            codes = self.scheme.quantile_codes(values, self.bins)
        else:  # both read the class codes (Association as floats, NaN where unlabelled)
            codes = self.scheme.codes(values)
            values = torch.where(codes >= 0, codes.to(torch.float64), torch.nan)
        for name, (assoc, hist) in self.stats.items():
            with _naming(name):
                assoc.update(quantities[name], values)
                hist.update(quantities[name], codes)

    def accumulators(self) -> list[Accumulator]:
        return [acc for pair in self.stats.values() for acc in pair]

    def names(self) -> list[str]:
        return list(self.stats)

    def result(self) -> Table:
        lab = self.scheme
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
            rows += timescale_rows(name, torch.as_tensor(acc.result()["mean"], dtype=torch.float64))
        return Table(rows, TIMESCALE_COLUMNS)


class StreamingProbes(StreamingAnalysis):
    """`probe_units`' probe per quantity over a corpus, in passes: ``passes()`` names them in order.

    "moments": the units' sums over the training rows (mergeable), the class counts of the baseline,
    and the control task's labels; "train" (``epochs`` times): Adam steps on minibatches of each
    batch's training rows, shuffled within the batch, as `fit_probe` shuffles within a chunk of a trace
    (`ProbeTrainer`, the same code); "evaluate": held-out accuracy or R² from counts and sums. Training
    is sequential, so it runs in one process. Rows: name, layer, direction, kind, units, n_train,
    n_test, baseline, score, control, selectivity, top_units; the top-k curve is not computed.

    With ``control_types`` (the corpus's largest token id + 1), a second probe per quantity learns
    Hewitt & Liang's control task, each token type's label drawn as `probes.control_labels` draws it
    (`probes.control_draws`: a position among the labelled tokens, whose label the moments pass
    reads), on the same rows and minibatches; ``control`` is its held-out score and ``selectivity``
    score - control. Without it both are NaN. The control needs each batch's token ids (Rows.ids).
    """

    def __init__(self, widths: Mapping[str, int], labels: Labels | LabelScheme, held: torch.Tensor | None = None, *,
                 kinds: str | Iterable[str] | None = None, epochs: int = 10, l1: float = 1e-3, l2: float = 1e-4,
                 seed: int = 0, batch_size: int = 256, lr: float = 0.05, control_types: int | None = None) -> None:
        """labels: whole labels with held, bool [N], the held-out rows (whole sequences:
        `selection.heldout_from_offsets`); or their scheme, the values and held-out rows then coming
        with each batch's Rows."""
        from gatescope.analysis.probes import control_draws

        self.widths = _select(widths, parse_kinds(kinds))
        self.labels, self.held, self.scheme = labels, held, _scheme(labels)
        self.epochs, self.seed, self.batch_size = epochs, seed, batch_size
        self.options = {"l1": l1, "l2": l2, "lr": lr, "seed": seed}
        self.regression = self.scheme.kind == "continuous"
        classes = max(self.scheme.num_classes, 1)
        # the labels' class counts (train, test: the baseline); the training rows and their targets' sums
        self.counts = {part: torch.zeros(classes, dtype=torch.int64) for part in ("train", "test")}
        self.target = Moments(1)
        self.moments = {name: Moments(w) for name, w in self.widths.items()}
        self.tasks = ["task"]
        self.control: dict[str, Any] | None = None
        if control_types is not None:
            self.tasks.append("control")
            draws = control_draws(self.scheme.valid_count, control_types, seed)  # (types,)
            order = torch.argsort(draws)
            self.control = {"draws": draws, "order": order, "sorted": draws[order],
                            "pool": torch.full((control_types,), torch.nan, dtype=torch.float64), "labelled": 0,
                            # rows of each token type: labelled training rows, labelled rows
                            "train": torch.zeros(control_types, dtype=torch.int64),
                            "valid": torch.zeros(control_types, dtype=torch.int64)}
        self.scores = {(task, name): Moments(2 if self.regression else 1)
                       for task in self.tasks for name in self.widths}
        self.trainers: dict[tuple[str, str], Any] = {}
        self.schemes: dict[str, LabelScheme] = {"task": self.scheme}
        self.phase = "moments"

    def passes(self) -> list[str]:
        return ["moments"] + ["train"] * self.epochs + ["evaluate"]

    def begin(self, phase: str) -> None:
        """Start a pass; the first "train" builds the trainers from the (merged) moments."""
        from gatescope.analysis.probes import ProbeTrainer

        if phase == "train" and not self.trainers:
            n = int(self.target.state["n"])
            if n < 2:
                raise GatescopeError("probes need labelled tokens in both training and held-out sequences")
            targets = {"task": self._target_stats(n, self.target.state["sx"][0], self.target.state["sxx"][0])}
            if self.control is not None:
                targets["control"] = self._control_task()
            for name, acc in self.moments.items():
                st = acc.state
                for task in self.tasks:
                    trainer = ProbeTrainer(self.schemes[task], targets[task], int(st["n"]), st["sx"], st["sxx"],
                                           **self.options)
                    self.trainers[task, name] = (trainer, torch.Generator().manual_seed(self.seed))
        self.phase = phase

    @staticmethod
    def _target_stats(n: int, s: torch.Tensor, ss: torch.Tensor) -> tuple[float, float]:
        """(mean, unbiased std) of the training targets from their count, sum and sum of squares."""
        mean = float(s) / n
        return mean, math.sqrt(max(float(ss) - n * mean * mean, 0.0) / (n - 1))

    def _control_task(self) -> tuple[float, float]:
        """After the moments pass: the control labels' scheme (as `control_labels` makes them, from the
        types that carry a label) and their training targets' (mean, std)."""
        ctl = self.control
        per_type = ctl["pool"]  # (types,) each type's control label
        if bool(per_type.isnan().any()):
            raise GatescopeError("the control task's draws were not all read: run the moments pass first")
        distinct = torch.unique(per_type[ctl["valid"] > 0])  # the classes of the types that carry a label
        self.schemes["control"] = LabelScheme.from_counts(f"control({self.scheme.name})", distinct,
                                                          torch.ones_like(distinct, dtype=torch.int64),
                                                          self.scheme.kind)
        c = ctl["train"].to(torch.float64)
        return self._target_stats(int(c.sum()), (c * per_type).sum(), (c * per_type * per_type).sum())

    def _targets(self, task: str, rows: Rows, keep: torch.Tensor) -> torch.Tensor:
        """The targets of the kept rows: the task's or the control's, classes as codes."""
        values = rows.values.to(torch.float64)
        if task == "control":
            values = torch.where(torch.isfinite(values), self.control["pool"][rows.ids], values)
        values = values[keep]
        return values.to(torch.float32) if self.regression else self.schemes[task].codes(values)

    def _read_moments(self, rows: Rows, train: torch.Tensor, test: torch.Tensor) -> None:
        """The moments pass's label work: class counts, target sums, the control's draws and types."""
        values = rows.values.to(torch.float64)
        if self.regression:
            self.target.update(values[train][:, None])
        else:
            codes = self.scheme.codes(values)
            self.counts["train"] += torch.bincount(codes[train], minlength=self.scheme.num_classes)
            self.counts["test"] += torch.bincount(codes[test], minlength=self.scheme.num_classes)
            self.target.state["n"] += int(train.sum())  # the training rows (classes need no target sums)
        ctl = self.control
        if ctl is None:
            return
        if rows.ids is None:
            raise GatescopeError("the control task needs each batch's token ids")
        valid = torch.isfinite(values)
        first, labelled = ctl["labelled"], values[valid]  # positions first.. among the labelled tokens
        lo, hi = torch.searchsorted(ctl["sorted"], torch.tensor([first, first + labelled.numel()]))
        picked = ctl["order"][lo:hi]
        ctl["pool"][picked] = labelled[ctl["draws"][picked] - first]
        ctl["labelled"] += labelled.numel()
        types = ctl["pool"].numel()
        if bool((rows.ids >= types).any()):
            raise GatescopeError(f"a token id above the control task's {types - 1}")
        ctl["train"] += torch.bincount(rows.ids[train], minlength=types)
        ctl["valid"] += torch.bincount(rows.ids[valid], minlength=types)

    def update(self, quantities: Mapping[str, torch.Tensor], at: int | Rows) -> None:
        """quantities: name -> [n, units], the corpus's rows from ``at`` (a start row into whole labels,
        or the batch's Rows with values, held-out rows and, for the control task, token ids)."""
        rows = _rows(self.labels, self.held, at, next(iter(quantities.values())).shape[0])
        if rows.values is None or rows.held is None:
            raise GatescopeError("a streamed probe needs each batch's labels and held-out rows")
        valid = torch.isfinite(rows.values)
        train, test = ~rows.held & valid, rows.held & valid  # (n,)
        if self.phase == "moments":
            self._read_moments(rows, train, test)
        keep = test if self.phase == "evaluate" else train
        if not bool(keep.any()):
            return
        targets = {task: self._targets(task, rows, keep) for task in self.tasks} if self.phase != "moments" else {}
        for name in self.widths:
            x = quantities[name][keep].to(torch.float32)  # (k, units)
            if self.phase == "moments":
                self.moments[name].update(x)
                continue
            for task, t in targets.items():
                if self.phase == "train":
                    trainer, gen = self.trainers[task, name]
                    order = torch.randperm(x.shape[0], generator=gen)
                    for b in range(0, x.shape[0], self.batch_size):
                        idx = order[b : b + self.batch_size]
                        trainer.step(x[idx], t[idx])
                    continue
                pred = self._probe(name, task).predict(x)
                if self.regression:  # columns: the squared error, the target (for R²'s denominator)
                    self.scores[task, name].update(torch.stack([pred - t, t], 1))
                else:
                    self.scores[task, name].update((pred == t).to(torch.float64)[:, None])

    def _probe(self, name: str, task: str = "task"):
        trainer, _ = self.trainers[task, name]
        return trainer.probe(name, torch.arange(self.widths[name]))

    def accumulators(self) -> list[Accumulator]:
        if self.phase == "moments":
            return [*self.moments.values(), self.target]
        return list(self.scores.values()) if self.phase == "evaluate" else []

    def names(self) -> list[str]:
        return list(self.widths)

    def _score(self, task: str, name: str) -> tuple[float, int]:
        st = self.scores[task, name].state
        n = int(st["n"])
        if n == 0:
            raise GatescopeError(f"no labelled held-out rows to evaluate the probe on {name}")
        if self.regression:  # 1 - sse / sum (y - mean)²
            sse, sy, syy = float(st["sxx"][0]), float(st["sx"][1]), float(st["sxx"][1])
            return 1 - sse / max(syy - sy * sy / n, 1e-12), n
        return float(st["sx"][0]) / n, n

    def result(self) -> Table:
        baseline = 0.0  # `probes._baseline`: R² of the mean, or the majority class's held-out accuracy
        if not self.regression:
            majority = int(self.counts["train"].argmax())
            baseline = float(self.counts["test"][majority]) / max(int(self.counts["test"].sum()), 1)
        rows = []
        for name in self.widths:
            score, n = self._score("task", name)
            control = self._score("control", name)[0] if self.control is not None else math.nan
            qn = parse_name(name)
            rows.append({"name": name, "layer": qn.layer, "direction": qn.direction, "kind": qn.kind,
                         "units": self.widths[name], "n_train": int(self.target.state["n"]), "n_test": n,
                         "baseline": baseline, "score": score, "control": control, "selectivity": score - control,
                         "top_units": [format_unit(name, u) for u in self._probe(name).unit_ranking()[:10]]})
        if not self.regression:
            from gatescope.analysis.probes import say_below_baseline

            say_below_baseline(rows)
        return Table(rows)
