"""Causal tests: ablate or patch units through gatescope.record's interventions, and measure.

Ablation holds units of any recorded quantity (h, c or a gate) at zero, at their mean over a
trace, or at a given value, at every step or from a step on (Lakretz et al. 2019 held number
units at zero by zeroing their outgoing weights, which is holding h at zero). Activation
patching (Vig et al. 2020; pyvene's interchange interventions) copies the values of chosen units
from a counterfactual run, e.g. the plural-subject version of a sentence, into the original run.
Either is carried through the recurrence by the recorded modules.

An experiment compares a metric (agreement accuracy, loss, logit difference) with and without
the intervention, against random unit sets of the same size from the same quantities (mean and
spread over seeded draws), because number information is redundant in small models: single
units rarely matter, sets do. `sweep` ablates units one at a time, `greedy_search` grows the set
that hurts most one unit at a time, `top_k` tests the first k units of a ranking.
"""
from __future__ import annotations

import random
import statistics
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from gatescope.analysis.logits import logit_diff
from gatescope.analysis.table import Table
from gatescope.errors import GatescopeError
from gatescope.names import UnitName, format_unit, parse_name, parse_unit
from gatescope.recorder.recordable import check_units, quantities
from gatescope.recorder.recording import Intervention, run, run_with_cache
from gatescope.traces.trace import Trace

unit_widths = quantities  # its name here before the core had it

Edit = Callable[[Sequence[str]], list[Intervention]]  # units -> interventions


@dataclass(frozen=True)
class Metric:
    """A score of the model under a list of interventions; ``higher_is_better`` orients 'harm'."""

    name: str
    fn: Callable[[list[Intervention]], float]
    higher_is_better: bool = True

    def __call__(self, interventions: list[Intervention]) -> float:
        return float(self.fn(interventions))

    def harm(self, baseline: float, value: float) -> float:
        """How much worse ``value`` is than ``baseline`` (positive = the intervention hurts)."""
        return baseline - value if self.higher_is_better else value - baseline


def loss_metric(model: nn.Module, ids: torch.Tensor) -> Metric:
    """Mean next-token cross-entropy of a language model on ids [B, T] (lower is better)."""
    if ids.dim() != 2 or ids.shape[1] < 2:
        raise GatescopeError(f"loss needs token ids [batch, time >= 2], got {list(ids.shape)}")
    model.eval()

    def fn(interventions: list[Intervention]) -> float:
        with torch.no_grad():
            logits = run(model, ids, interventions)  # (B, T, V)
        return float(F.cross_entropy(logits[:, :-1].flatten(0, 1), ids[:, 1:].flatten()))

    return Metric("loss", fn, higher_is_better=False)


def _by_quantity(units: Iterable[str | UnitName]) -> dict[str, list[int]]:
    grouped: dict[str, list[int]] = defaultdict(list)
    for unit in units:
        parsed = parse_unit(unit) if isinstance(unit, str) else unit
        grouped[parsed.name].append(parsed.index)
    return dict(grouped)


def ablate(
    units: Iterable[str | UnitName],
    value: str | float = "zero",
    *,
    trace: Trace | None = None,
    steps: Iterable[int] | None = None,
    start: int | None = None,
) -> list[Intervention]:
    """Interventions holding ``units`` at a value.

    Args:
        units: unit names, e.g. ``["rnn.l0.fwd.h:69"]``.
        value: "zero", "mean" (each unit's mean over ``trace``) or a number.
        trace: the trace the means come from.
        steps: the steps edited (default: every step).
        start: edit from this step on (instead of ``steps``).

    Returns:
        One `Intervention` per quantity, for `gatescope.record`.

    Raises:
        GatescopeError: both ``steps`` and ``start``, a mean without a trace, an unknown value.
    """
    if start is not None:
        if steps is not None:
            raise GatescopeError("give steps or start, not both")
        steps = slice(start, None)
    out = []
    for name, indices in _by_quantity(units).items():
        if value == "zero":
            held: float | torch.Tensor = 0.0
        elif value == "mean":
            if trace is None:
                raise GatescopeError("mean ablation needs a trace to take the means from")
            held = trace[name][:, indices].to(torch.float64).mean(0).to(torch.float32)  # (k,)
        elif isinstance(value, (int, float)):
            held = float(value)
        else:
            raise GatescopeError(f"unknown ablation value {value!r}: zero, mean or a number")
        out.append(Intervention(name, indices, "set", held, steps))
    return out


def patch(model: nn.Module, units: Iterable[str | UnitName], source: torch.Tensor,
          steps: Iterable[int] | None = None) -> list[Intervention]:
    """Interventions copying ``units``' values from a run of ``model`` on counterfactual inputs.

    Args:
        model: the model patched.
        units: unit names.
        source: the counterfactual inputs [B, T], the shape of the run they are patched into.
        steps: the steps patched (default: every step).

    Returns:
        One patch `Intervention` per quantity.

    Raises:
        GatescopeError: a source that is not a batch of equal-length sequences, or an unknown unit.
    """
    if source.dim() < 2:
        raise GatescopeError(f"a patching source is a batch of sequences [B, T, ...]; got shape {list(source.shape)}")
    grouped = _by_quantity(check_units(model, units))
    batch, steps_n = source.shape[:2]
    with torch.no_grad():
        _, trace = run_with_cache(model, source, names=list(grouped))
    if trace.num_tokens != batch * steps_n:
        raise GatescopeError("patching needs a source batch of equal-length sequences [B, T]")
    return [Intervention(name, idx, "patch", trace.padded(name)[:, :, idx], steps) for name, idx in grouped.items()]


def logit_difference(model: nn.Module, ids: torch.Tensor, correct: torch.Tensor, wrong: torch.Tensor,
                     interventions: Sequence[Intervention] = ()) -> torch.Tensor:
    """logit(correct[b]) - logit(wrong[b]) after each sequence of ids [B, T], under interventions -> [B]."""
    with torch.no_grad():
        last = run(model, ids, interventions)[:, -1]  # (B, V)
    return logit_diff(last, correct, wrong).float().cpu()


def random_sets(pool: Sequence[str], k: int, draws: int, seed: int = 0) -> list[list[str]]:
    """``draws`` random sets of ``k`` distinct units from ``pool`` (seeded, reproducible)."""
    if k > len(pool):
        raise GatescopeError(f"cannot draw {k} units from a pool of {len(pool)}")
    rng = random.Random(seed)
    return [rng.sample(list(pool), k) for _ in range(draws)]


def units_of(model: nn.Module, kinds: Iterable[str] | None = None) -> list[str]:
    """Every unit of ``model`` whose quantity is of one of ``kinds`` (default all), in order."""
    kinds = None if kinds is None else set(kinds)
    return [format_unit(name, i) for name, w in quantities(model).items()
            if kinds is None or parse_name(name).kind in kinds for i in range(w)]


def pool_of(model: nn.Module, units: Iterable[str | UnitName]) -> list[str]:
    """All units of the quantities ``units`` belong to (in the order given), except ``units`` themselves."""
    parsed = check_units(model, units)
    widths = quantities(model)
    chosen = {str(u) for u in parsed}
    names = dict.fromkeys(u.name for u in parsed)  # ordered: a set's order changes with PYTHONHASHSEED
    return [format_unit(n, i) for n in names for i in range(widths[n]) if format_unit(n, i) not in chosen]


@dataclass
class SetEffect:
    """The metric under an intervention on ``units``, and under random sets of the same size."""

    units: list[str]
    metric: str
    baseline: float
    value: float
    harm: float
    random_mean: float = float("nan")
    random_std: float = float("nan")
    random_harms: list[float] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def set_effect(metric: Metric, units: Sequence[str], *, pool: Sequence[str] | None = None,
             model: nn.Module | None = None, draws: int = 20, seed: int = 0, edit: Edit = ablate,
             baseline: float | None = None) -> SetEffect:
    """Effect of ``edit(units)`` on ``metric``, against random sets of as many units.

    Args:
        metric: what is measured (e.g. `gatescope.analysis.agreement_metric`).
        units: the units edited, e.g. ``top_k(ranking, 4)``.
        pool: the units random sets are drawn from (default: the other units of the same quantities of ``model``).
        model: the model, for the default pool.
        draws: how many random sets.
        seed: the seed of the draws.
        edit: units -> interventions (default: `ablate`, held at zero).
        baseline: the metric without edits (default: measured).

    Returns:
        A SetEffect: ``harm`` (the drop the units cause), ``random_mean`` and ``random_std`` (the random sets').

    Raises:
        GatescopeError: negative draws, or random sets asked for without a pool or a model.
    """
    if draws < 0:
        raise GatescopeError(f"draws must be >= 0, not {draws}")
    units = [str(u) for u in units]
    baseline = metric([]) if baseline is None else baseline
    value = metric(edit(units))
    effect = SetEffect(units, metric.name, baseline, value, metric.harm(baseline, value))
    if draws:
        if pool is None:
            if model is None:
                raise GatescopeError("random baselines need a pool of units or the model")
            pool = pool_of(model, units)
        harms = [metric.harm(baseline, metric(edit(s))) for s in random_sets(pool, len(units), draws, seed)]
        effect.random_harms = harms
        effect.random_mean = statistics.fmean(harms)
        effect.random_std = statistics.stdev(harms) if len(harms) > 1 else 0.0
    return effect


def sweep(metric: Metric, units: Sequence[str], *, edit: Edit = ablate, baseline: float | None = None,
          progress: bool = False) -> Table:
    """Ablate (``edit``) each unit alone; rows unit, value, harm, most harmful first."""
    from gatescope.progress import track

    baseline = metric([]) if baseline is None else baseline
    rows = []
    for unit in track(units, "single-unit sweep", total=len(units), enabled=progress):
        value = metric(edit([unit]))
        rows.append({"unit": str(unit), "metric": metric.name, "baseline": baseline, "value": value,
                     "harm": metric.harm(baseline, value)})
    rows.sort(key=lambda r: -r["harm"])
    return Table(rows, ["unit", "metric", "baseline", "value", "harm"])


def greedy_search(metric: Metric, candidates: Sequence[str], k: int, *, edit: Edit = ablate,
                  baseline: float | None = None, progress: bool = False) -> Table:
    """Grow a set one unit at a time, each time adding the candidate whose addition hurts most.

    Rows per step: size, added, units (the set so far), value, harm."""
    from gatescope.progress import track

    if not 1 <= k <= len(candidates):
        raise GatescopeError(f"k must be between 1 and the {len(candidates)} candidates")
    baseline = metric([]) if baseline is None else baseline
    chosen: list[str] = []
    rows = []
    for size in track(range(1, k + 1), "greedy set search", total=k, enabled=progress):
        best = None
        for unit in candidates:
            if unit in chosen:
                continue
            value = metric(edit(chosen + [unit]))
            if best is None or metric.harm(baseline, value) > metric.harm(baseline, best[1]):
                best = (unit, value)
        chosen.append(best[0])
        rows.append({"size": size, "added": best[0], "units": list(chosen), "value": best[1],
                     "harm": metric.harm(baseline, best[1])})
    return Table(rows, ["size", "added", "units", "value", "harm"])


def top_k(ranking: Table, k: int) -> list[str]:
    """The first ``k`` units of a ranking table (best first)."""
    units = ranking["unit"][:k]
    if len(units) < k:
        raise GatescopeError(f"the ranking has only {len(units)} units")
    return units


