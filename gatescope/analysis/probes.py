"""Diagnostic classifiers: linear probes per layer and kind, unit rankings by weight, control tasks.

Follows Hupkes et al. 2018 and Giulianelli et al. 2018 (diagnostic classifiers on an RNN's
states), NeuroX's Linguistic Correlation Analysis (Dalvi et al. 2019: an elastic-net probe, units
ranked by the mass of their weights, accuracy of a probe retrained on the top-k units) and Hewitt
& Liang 2019 (a control task: each token type gets a random label drawn from the label
distribution; selectivity = accuracy - control accuracy).

A probe is a multinomial logistic regression (binary and categorical labels) or a linear
regression (continuous labels; scored by R²) on standardised units, trained with torch by
minibatches read from the trace chunk by chunk, so a trace larger than memory can be probed;
the loss adds ``l1 * |W|_1 + l2 * |W|²`` (elastic net). Training and evaluation rows are whole
sequences (`heldout_rows`).
"""
from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from gatescope.analysis import selection
from gatescope.analysis.labels import Labels, make_labels, resolve_labels
from gatescope.analysis.selection import heldout_rows, select_quantities, width
from gatescope.analysis.table import Table
from gatescope.errors import GatescopeError, warn
from gatescope.names import format_unit, parse_name
from gatescope.progress import counter
from gatescope.traces.trace import Trace

STATS_ROWS = 8192  # rows per pass of the statistics and the evaluation: their float64 copies stay small


@dataclass
class Probe:
    """A trained linear probe on ``units`` of quantity ``name`` (weights on standardised inputs)."""

    name: str
    units: torch.Tensor  # (k,) unit indices
    weight: torch.Tensor  # (C, k); C = classes, or 1 for a regression
    bias: torch.Tensor  # (C,)
    mean: torch.Tensor  # (k,)
    std: torch.Tensor  # (k,)
    kind: str  # label kind

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """Class codes (or regression values) for rows ``x`` [n, k] of the probed units."""
        out = ((x - self.mean) / self.std) @ self.weight.T + self.bias  # (n, C)
        return out[:, 0] if self.kind == "continuous" else out.argmax(1)

    def unit_ranking(self) -> list[int]:
        """Unit indices by weight mass sum_c |W[c, u]|, largest first (NeuroX's ranking)."""
        mass = self.weight.abs().sum(0)
        return self.units[torch.argsort(mass, descending=True, stable=True)].tolist()


def _batches(trace: Trace, name: str, units: torch.Tensor, rows: torch.Tensor, target: torch.Tensor,
             batch_size: int, gen: torch.Generator | None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Minibatches (x [b, k] float32, target [b]) of the rows where ``rows`` holds, one chunk at a time."""
    tensor, chunk = trace[name], selection.CHUNK_ROWS
    for a in range(0, tensor.shape[0], chunk):
        keep = rows[a : a + chunk]
        if not bool(keep.any()):
            continue
        x = tensor[a : a + chunk][keep][:, units].to(torch.float32)  # (rows, k)
        t = target[a : a + chunk][keep]
        order = torch.randperm(x.shape[0], generator=gen) if gen is not None else torch.arange(x.shape[0])
        for b in range(0, x.shape[0], batch_size):
            idx = order[b : b + batch_size]
            yield x[idx], t[idx]


def fit_probe(
    trace: Trace,
    name: str,
    labels: Labels,
    rows: torch.Tensor,
    units: Sequence[int] | None = None,
    *,
    l1: float = 1e-3,
    l2: float = 1e-4,
    epochs: int = 10,
    batch_size: int = 256,
    lr: float = 0.05,
    seed: int = 0,
    on_epoch: Callable[[], None] | None = None,
) -> Probe:
    """Train a probe on ``units`` (default all) of ``name`` over the rows where ``rows`` [N] holds;
    ``on_epoch`` is called after every epoch (a progress bar)."""
    units_t = torch.arange(width(trace, name)) if units is None else torch.as_tensor(list(units), dtype=torch.int64)
    rows = rows & labels.valid
    if int(rows.sum()) < 2:
        raise GatescopeError(f"too few labelled training rows to fit a probe on {name}")
    regression = labels.kind == "continuous"
    target = labels.values.to(torch.float32) if regression else labels.codes
    # standardise units (and a regression target) with statistics of the training rows
    count, total, sq = 0, torch.zeros(len(units_t), dtype=torch.float64), torch.zeros(len(units_t), dtype=torch.float64)
    for x, _ in _batches(trace, name, units_t, rows, target, STATS_ROWS, None):
        count += x.shape[0]
        total += x.sum(0, dtype=torch.float64)
        sq += (x.to(torch.float64) ** 2).sum(0)
    trainer = ProbeTrainer(labels, target[rows], count, total, sq, l1=l1, l2=l2, lr=lr, seed=seed)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        for x, t in _batches(trace, name, units_t, rows, target, batch_size, gen):
            trainer.step(x, t)
        if on_epoch is not None:
            on_epoch()
    return trainer.probe(name, units_t)


class ProbeTrainer:
    """One probe's training: standardisation from sums over the training rows, then Adam steps on
    minibatches (cross-entropy, or MSE on the standardised target) plus the elastic-net penalty.
    `fit_probe` feeds it minibatches read from a trace; a streamed pass feeds it a corpus's."""

    def __init__(self, labels: Labels, train_targets: torch.Tensor | tuple[float, float], count: int,
                 total: torch.Tensor, sq: torch.Tensor, *, l1: float, l2: float, lr: float, seed: int) -> None:
        """train_targets: the targets of every training row, or their (mean, std) (a regression standardises
        by them);
        count, total (k,), sq (k,): rows, sum and sum of squares (float64) of the units over them."""
        self.regression, self.kind, self.l1, self.l2 = labels.kind == "continuous", labels.kind, l1, l2
        mean = total / count
        std = (sq / count - mean**2).clamp_min(0).sqrt().clamp_min(1e-6)
        self.mean, self.std = mean.to(torch.float32), std.to(torch.float32)
        self.y_mean, self.y_std = 0.0, 1.0
        if self.regression:
            ys = train_targets  # or (mean, standard deviation), as a streamed probe sums them
            self.y_mean, self.y_std = ys if isinstance(ys, tuple) else (float(ys.mean()), float(ys.std()))
            self.y_std = max(self.y_std, 1e-6)
        torch.manual_seed(seed)
        outputs = 1 if self.regression else labels.num_classes
        self.linear = torch.nn.Linear(len(total), outputs)
        torch.nn.init.zeros_(self.linear.weight)
        torch.nn.init.zeros_(self.linear.bias)
        self.opt = torch.optim.Adam(self.linear.parameters(), lr=lr)

    def step(self, x: torch.Tensor, t: torch.Tensor) -> None:
        """One Adam step on rows ``x`` [b, k] (float32) with targets ``t`` [b]."""
        with torch.enable_grad():
            out = self.linear((x - self.mean) / self.std)  # (b, C)
            if self.regression:
                loss = F.mse_loss(out[:, 0], (t - self.y_mean) / self.y_std)
            else:
                loss = F.cross_entropy(out, t)
            w = self.linear.weight
            loss = loss + self.l1 * w.abs().sum() + self.l2 * (w**2).sum()
            self.opt.zero_grad()
            loss.backward()
            self.opt.step()

    def probe(self, name: str, units: torch.Tensor) -> Probe:
        """The trained probe (a regression's standardisation folded back into its weights)."""
        weight, bias = self.linear.weight.detach().clone(), self.linear.bias.detach().clone()
        if self.regression:
            weight, bias = weight * self.y_std, bias * self.y_std + self.y_mean
        return Probe(name, units, weight, bias, self.mean, self.std, self.kind)


def evaluate_probe(trace: Trace, probe: Probe, labels: Labels, rows: torch.Tensor) -> float:
    """Accuracy (classes) or R² (continuous) of ``probe`` on the labelled rows where ``rows`` holds."""
    rows = rows & labels.valid
    target = labels.values.to(torch.float32) if probe.kind == "continuous" else labels.codes
    correct, n, sse, values = 0, 0, 0.0, []
    for x, t in _batches(trace, probe.name, probe.units, rows, target, STATS_ROWS, None):
        pred = probe.predict(x)
        n += t.numel()
        if probe.kind == "continuous":
            sse += float(((pred - t) ** 2).sum())
            values.append(t)
        else:
            correct += int((pred == t).sum())
    if n == 0:
        raise GatescopeError(f"no labelled held-out rows to evaluate the probe on {probe.name}")
    if probe.kind != "continuous":
        return correct / n
    y = torch.cat(values).to(torch.float64)
    return 1 - sse / max(float(((y - y.mean()) ** 2).sum()), 1e-12)


def control_labels(trace: Trace, labels: Labels, seed: int = 0) -> Labels:
    """Hewitt & Liang's control task: every token type gets one label, drawn at random from the
    labels' empirical distribution; rows keep the task's NaNs. Needs the trace's token ids."""
    if trace.token_ids is None:
        raise GatescopeError("a control task needs the trace's token ids; this trace has none")
    valid = labels.valid
    pool = labels.values[valid]
    per_type = pool[control_draws(pool.numel(), int(trace.token_ids.max()) + 1, seed)]  # (types,)
    values = torch.where(valid, per_type[trace.token_ids], torch.full_like(labels.values, float("nan")))
    return make_labels(values, name=f"control({labels.name})", kind=labels.kind)


def control_draws(pool: int, types: int, seed: int = 0) -> torch.Tensor:
    """The control task's draws: for each token type 0..types-1, the position of its label among the
    ``pool`` labelled tokens in corpus order (int64 [types]). A streamed probe reads those positions."""
    return torch.randint(pool, (types,), generator=torch.Generator().manual_seed(seed))


def default_ks(h: int) -> list[int]:
    """1, 2, 4, ... up to h (h included)."""
    ks, k = [], 1
    while k < h:
        ks.append(k)
        k *= 2
    return ks + [h]


def probe_units(
    trace: Trace,
    labels: Any = None,
    *,
    feature: str | None = None,
    kinds: str | Iterable[str] | None = None,
    ks: Sequence[int] | None = None,
    control: bool = True,
    l1: float = 1e-3,
    l2: float = 1e-4,
    epochs: int = 10,
    seed: int = 0,
    progress: bool = False,
) -> Table:
    """One probe per quantity (layer and kind): held-out score, control score, selectivity,
    the units ranked by weight mass, the top-k curve, and ``k95``: the fewest top units whose probe
    reaches 95% of the full probe's gain over the majority (or mean) baseline.

    Rows: name, layer, direction, kind, units, n_train, n_test, baseline, score, control,
    selectivity, top_units (unit names, best first, up to 10), curve ({k: score}), k95.
    """
    if ks is not None and (not ks or min(ks) < 1):
        raise GatescopeError(f"ks are numbers of top units, each at least 1; got {list(ks)}")
    lab = resolve_labels(trace, labels, feature=feature)
    held = heldout_rows(trace)
    train, test = ~held & lab.valid, held & lab.valid
    if not bool(train.any()) or not bool(test.any()):
        raise GatescopeError("probes need labelled tokens in both training and held-out sequences")
    baseline = _baseline(lab, train, test)
    ctrl = control_labels(trace, lab, seed) if control and trace.token_ids is not None else None
    names = select_quantities(trace, kinds)
    ks_of = {name: sorted({min(int(k), width(trace, name)) for k in ks or default_ks(width(trace, name))})
             for name in names}
    fits = {name: 1 + sum(k < width(trace, name) for k in ks_of[name]) + (ctrl is not None) for name in names}
    rows = []
    with counter(sum(fits.values()) * epochs, "probing", "epochs", progress) as bar:
        opts = {"l1": l1, "l2": l2, "epochs": epochs, "seed": seed, "on_epoch": bar.advance}
        for name in names:
            bar.describe(f"probing {name}")
            rows.append(_probe_row(trace, name, lab, ctrl, train, test, baseline, ks_of[name], opts))
    if lab.kind != "continuous":
        say_below_baseline(rows)
    return Table(rows)


def say_below_baseline(rows: Sequence[dict]) -> None:
    """Warn, in one line, of the classification probes whose held-out accuracy lies more than three
    binomial standard errors below their majority baseline: such a score says nothing of the units."""
    low = [r for r in rows
           if r["score"] < r["baseline"] - 3 * math.sqrt(r["baseline"] * (1 - r["baseline"]) / max(r["n_test"], 1))]
    if low:
        shown = ", ".join(f"{r['name']} {r['score']:.3f} < {r['baseline']:.3f}" for r in low)
        warn(f"probe accuracy below the majority baseline: {shown} (the held-out sequences' classes differ from "
             "the training ones', or the probe has not converged: more epochs); these scores say nothing")


def _probe_row(trace: Trace, name: str, lab: Labels, ctrl: Labels | None, train: torch.Tensor, test: torch.Tensor,
               baseline: float, ks: list[int], opts: dict) -> dict:
    """One row of `probe_units`' table: the full probe, its top-k curve over ``ks``, the control task."""
    qn = parse_name(name)
    h = width(trace, name)
    probe = fit_probe(trace, name, lab, train, **opts)
    score = evaluate_probe(trace, probe, lab, test)
    ranking = probe.unit_ranking()
    curve = {}
    for k in ks:
        curve[k] = score if k == h else evaluate_probe(
            trace, fit_probe(trace, name, lab, train, ranking[:k], **opts), lab, test)
    ctrl_score = float("nan")
    if ctrl is not None:
        ctrl_score = evaluate_probe(trace, fit_probe(trace, name, ctrl, train, **opts), ctrl, test)
    target = baseline + 0.95 * (score - baseline)
    k95 = next((k for k in sorted(curve) if curve[k] >= target), h)
    return {
        "name": name, "layer": qn.layer, "direction": qn.direction, "kind": qn.kind, "units": h,
        "n_train": int(train.sum()), "n_test": int(test.sum()), "baseline": baseline, "score": score,
        "control": ctrl_score, "selectivity": score - ctrl_score,
        "top_units": [format_unit(name, u) for u in ranking[:10]], "curve": curve, "k95": k95,
    }


def _baseline(lab: Labels, train: torch.Tensor, test: torch.Tensor) -> float:
    """Majority-class accuracy (classes) or 0.0 (R² of predicting the training mean, about 0)."""
    if lab.kind == "continuous":
        return 0.0
    majority = torch.bincount(lab.codes[train], minlength=lab.num_classes).argmax()
    return float((lab.codes[test] == majority).to(torch.float64).mean())
