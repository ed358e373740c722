"""Unit ranking: score every unit of every recorded kind by its association with a per-token label.

Metrics (each vectorised over units, on float64 column blocks read from the trace in row chunks):
- ``corr``: Pearson correlation (the point-biserial correlation when labels are binary);
- ``auc``: ROC AUC of the unit as a score for class 1 (binary labels; Mann-Whitney U with midranks);
- ``mi``: mutual information in bits between the unit binned at its quantiles and the label
  (classes, or quantile bins of a continuous label);
- ``probe``: a single-unit probe fitted on training sequences and scored on held-out ones: the best
  threshold (binary), majority class per quantile bin (categorical) or a 1-D linear fit, R²
  (continuous).

Significance is a permutation test (as in NeuroX's and Lakretz et al.'s unit analyses, here done for
all units at once): the labels are shuffled ``permutations`` times and every unit's statistic is
recomputed as one matrix product per block of permutations. The statistic tested is |r| for
``corr``, |r| over ranks (equivalent to |AUC - 0.5|) for ``auc``, and for ``mi``/``probe`` the linear
association |r| (or the correlation ratio eta² for categorical labels), because refitting those per
permutation would cost a model per permutation. Reported: ``p_value`` per unit,
``p_adjusted`` (Benjamini-Hochberg false discovery rate over all units) and ``p_fwer``
(max-statistic family-wise correction, Westfall & Young 1993). With P permutations no p-value is
below 1/(P+1), so over m units ``p_adjusted`` cannot go below m/(P+1): with thousands of units,
read ``p_fwer`` (or raise ``permutations``). Shuffling tokens ignores the
dependence between neighbouring tokens of a sentence, so p-values are optimistic on strongly
autocorrelated units; compare against the ranking of a control label when in doubt.
"""
from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

from gatescope.analysis import selection
from gatescope.analysis.labels import Labels, resolve_labels
from gatescope.analysis.selection import (
    column_blocks,
    heldout_rows,
    read_columns,
    select_quantities,
    unit_row,
    width,
)
from gatescope.analysis.stats import (
    benjamini_hochberg,
    check_metric,
    mann_whitney_auc,
    midranks,
    mutual_information_bits,
    quantile_bins,
    sort_ranking,
    tie_groups,
)
from gatescope.analysis.table import Table
from gatescope.errors import GatescopeError
from gatescope.progress import track
from gatescope.traces.trace import Trace

# A column block's working set is about a dozen arrays of its size (ranks, sorts, tie groups, bins, the
# probe's splits) and a permutation block's about eight (the permutations as a list and stacked, the
# shuffled design, products, statistics): blocks are sized so that the whole working set, not one
# array, stays within selection.BUDGET.
BLOCK_COPIES, PERM_COPIES = 16, 8

def rank_units(
    trace: Trace,
    labels: Any = None,
    *,
    feature: str | None = None,
    kinds: str | Iterable[str] | None = None,
    metric: str = "auto",
    permutations: int = 1000,
    bins: int = 16,
    seed: int = 0,
    progress: bool = False,
) -> Table:
    """Rank all units of ``trace`` by association with a per-token label, best first.

    Args:
        trace: the recorded run.
        labels: array-like [N] or a file path (see `resolve_labels`); or give ``feature``.
        feature: the name of a feature stored in the trace, as labels.
        kinds: the kinds ranked (default: all recorded).
        metric: "auto" (auc for binary, mi for categorical, corr for continuous labels), or one of METRICS.
        permutations: label shuffles for the permutation p-values (0: none).
        bins: quantile bins of the mutual information.
        seed: the seed of the shuffles and of the held-out split.
        progress: a progress bar on stderr.

    Returns:
        A Table, one row a unit: unit, score (higher = stronger), metric, name, layer, direction, kind,
        index, the metrics' values (corr or eta2, auc, mi, probe), n (labelled tokens), p_value (permutation),
        p_adjusted (Benjamini-Hochberg), p_fwer (family-wise).

    Raises:
        GatescopeError: labels that do not fit the trace, an unknown metric or feature, negative permutations.
    """
    lab = resolve_labels(trace, labels, feature=feature)
    metric = check_metric(lab, metric, bins)
    if permutations < 0:
        raise GatescopeError("permutations must be >= 0")
    names = select_quantities(trace, kinds)
    valid = lab.valid
    scorer = _Scorer(lab, valid, heldout_rows(trace)[valid], metric, permutations, bins, seed)

    rows: list[dict[str, Any]] = []
    stats: list[torch.Tensor] = []  # per block: (u,) observed statistic
    exceed: list[torch.Tensor] = []  # per block: (u,) permutations at least as extreme
    for name in track(names, "ranking units", total=len(names), enabled=progress):
        for cols in column_blocks(scorer.n, width(trace, name), selection.BUDGET // BLOCK_COPIES):
            x = read_columns(trace, name, cols, valid)  # (n, u)
            block, stat, count = scorer.score(x)
            stats.append(stat)
            exceed.append(count)
            for j, index in enumerate(range(cols.start, cols.stop)):
                rows.append(unit_row(name, index) | {k: float(v[j]) for k, v in block.items()})
    stat_all, exceed_all = torch.cat(stats), torch.cat(exceed)
    p_value = (1 + exceed_all) / (1 + permutations)
    maxima = torch.sort(scorer.max_stat).values  # (P,)
    beaten = (permutations - torch.searchsorted(maxima, stat_all - 1e-12)).to(torch.float64)  # maxima >= stat
    p_fwer = (1 + beaten) / (1 + permutations)
    value_cols = ["eta2" if lab.kind == "categorical" else "corr"] + (["auc"] if lab.kind == "binary" else [])
    columns = ["unit", "score", "metric", "name", "layer", "direction", "kind", "index",
               *value_cols, "mi", "probe", "n", "p_value", "p_adjusted", "p_fwer"]
    for row, p, q, f in zip(rows, p_value.tolist(), benjamini_hochberg(p_value).tolist(), p_fwer.tolist()):
        row.update(metric=metric, n=scorer.n, p_value=p, p_adjusted=q, p_fwer=f)
    sort_ranking(rows, metric)
    return Table([{c: row[c] for c in columns} for row in rows], columns)


class _Scorer:
    """Computes every metric for a column block, and its permutation counts."""

    def __init__(self, lab: Labels, valid: torch.Tensor, held: torch.Tensor, metric: str,
                 permutations: int, bins: int, seed: int) -> None:
        self.lab, self.metric, self.bins, self.held = lab, metric, bins, held
        self.y = lab.values[valid]  # (n,)
        self.n = self.y.numel()
        if self.n < 3:
            raise GatescopeError(f"{lab.name}: only {self.n} labelled tokens; ranking needs at least 3")
        self.codes = lab.codes[valid] if lab.codes is not None else None  # (n,)
        self.categorical = lab.kind == "categorical"
        # the label in the form the permutation statistic multiplies: centred values or one-hot classes
        if self.categorical:
            self.design = torch.nn.functional.one_hot(self.codes, lab.num_classes).to(torch.float64)  # (n, C)
            self.class_sizes = self.design.sum(0)  # (C,)
        else:
            yc = self.y - self.y.mean()
            self.design = (yc / yc.norm())[:, None]  # (n, 1), unit norm
        self.ybins = self.codes if self.codes is not None else quantile_bins(midranks(self.y[:, None])[:, 0], bins)
        self.permutations, self.seed = permutations, seed
        per_perm = self.n * self.design.shape[1]
        budget = selection.BUDGET // PERM_COPIES
        self.perm_block = max(1, min(permutations, budget // max(1, per_perm)))
        self._cached = None if permutations * per_perm > budget else list(self._perm_designs())
        self.max_stat = torch.zeros(permutations, dtype=torch.float64)  # (P,)

    def _perm_designs(self):
        """Designs of the shuffled labels, [n, pb*C] per block; the same sequence on every call."""
        gen = torch.Generator().manual_seed(self.seed)
        for start in range(0, self.permutations, self.perm_block):
            pb = min(self.perm_block, self.permutations - start)
            perms = torch.stack([torch.randperm(self.n, generator=gen) for _ in range(pb)], 1)  # (n, pb)
            yield self.design[perms].reshape(self.n, -1)  # (n, pb*C)

    def _statistic(self, xc: torch.Tensor, ss: torch.Tensor, design: torch.Tensor) -> torch.Tensor:
        """|r| (or eta²) of centred columns ``xc`` [n, u] against each label design -> [u, blocks]."""
        prod = xc.T @ design  # (u, pb*C)
        safe = torch.where(ss > 0, ss, torch.ones_like(ss))[:, None]
        if self.categorical:
            c = self.design.shape[1]
            between = (prod.reshape(prod.shape[0], -1, c) ** 2 / self.class_sizes).sum(2)  # (u, pb)
            stat = between / safe
        else:
            stat = prod.abs() / safe.sqrt()
        return torch.where(ss[:, None] > 0, stat, torch.zeros_like(stat))

    def score(self, x: torch.Tensor) -> tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor]:
        """Metric values per unit of block ``x`` [n, u], its test statistic and permutation exceedances."""
        ranks = midranks(x)  # (n, u)
        out: dict[str, torch.Tensor] = {}
        xc = x - x.mean(0)
        ss = (xc**2).sum(0)  # (u,)
        linear = self._statistic(xc, ss, self.design)
        if self.categorical:
            out["eta2"] = linear[:, 0]
        else:
            yc = self.design[:, 0]
            out["corr"] = torch.where(ss > 0, (xc.T @ yc) / ss.clamp_min(1e-300).sqrt(), torch.zeros_like(ss))
        if self.lab.kind == "binary":
            out["auc"] = mann_whitney_auc(ranks, self.codes == 1)
        out["mi"] = _mutual_information(quantile_bins(ranks, self.bins), self.ybins)
        out["probe"] = self._probe(x)

        src = ranks if self.metric == "auc" else x
        src_c = src - src.mean(0)
        src_ss = (src_c**2).sum(0)
        observed = linear[:, 0] if src is x else self._statistic(src_c, src_ss, self.design)[:, 0]
        exceed = torch.zeros_like(observed)
        start = 0
        designs = self._cached if self._cached is not None else self._perm_designs()
        for design in designs:
            stat = self._statistic(src_c, src_ss, design)  # (u, pb)
            exceed += (stat >= observed[:, None] - 1e-12).sum(1)
            pb = stat.shape[1]
            self.max_stat[start : start + pb] = torch.maximum(self.max_stat[start : start + pb], stat.max(0).values)
            start += pb
        return out, observed, exceed

    def _probe(self, x: torch.Tensor) -> torch.Tensor:
        """Held-out score of a one-unit probe per column: accuracy (binary, categorical) or R²."""
        train, test = ~self.held, self.held
        if not bool(train.any()) or not bool(test.any()):
            return torch.full((x.shape[1],), float("nan"), dtype=torch.float64)
        xtr, xte = x[train], x[test]
        if self.lab.kind == "binary":
            return _threshold_probe(xtr, self.codes[train], xte, self.codes[test])
        if self.categorical:
            return _binned_probe(xtr, self.codes[train], xte, self.codes[test], self.bins, self.lab.num_classes)
        return _linear_probe(xtr, self.y[train], xte, self.y[test])


def _mutual_information(xbins: torch.Tensor, ybins: torch.Tensor) -> torch.Tensor:
    """MI in bits between each column of ``xbins`` [n, u] and ``ybins`` [n] (plug-in estimate)."""
    n, u = xbins.shape
    bx, by = int(xbins.max()) + 1, int(ybins.max()) + 1
    flat = xbins * by + ybins[:, None] + torch.arange(u) * (bx * by)  # (n, u)
    return mutual_information_bits(torch.bincount(flat.reshape(-1), minlength=u * bx * by).reshape(u, bx, by))


def _threshold_probe(xtr: torch.Tensor, ytr: torch.Tensor, xte: torch.Tensor, yte: torch.Tensor) -> torch.Tensor:
    """Fit 'class 1 iff x > t' or 'iff x <= t' per column on train; held-out accuracy."""
    ntr = xtr.shape[0]
    s, order = torch.sort(xtr.T.contiguous(), dim=1)  # (u, ntr)
    cumpos = torch.cumsum(ytr[order].to(torch.float64), 1)  # (u, ntr)
    group, _, last = tie_groups(s)
    le = last[group].to(torch.int64)  # rows <= each candidate threshold
    pos_le = torch.gather(cumpos, 1, le - 1)
    total_pos = float(ytr.sum())
    acc_gt = ((le - pos_le) + (total_pos - pos_le)) / ntr  # rule x > t
    cand = torch.cat([torch.full((s.shape[0], 1), -float("inf"), dtype=s.dtype), s], 1)
    acc_gt = torch.cat([torch.full((s.shape[0], 1), total_pos / ntr, dtype=s.dtype), acc_gt], 1)
    best_gt, best_le = acc_gt.max(1), (1 - acc_gt).max(1)
    greater = best_gt.values >= best_le.values  # (u,)
    k = torch.where(greater, best_gt.indices, best_le.indices)
    t = torch.gather(cand, 1, k[:, None])[:, 0]  # (u,)
    pred = xte > t  # (nte, u)
    pred = torch.where(greater, pred, ~pred)  # (nte, u)
    return (pred == yte[:, None].bool()).to(torch.float64).mean(0)


def _binned_probe(xtr, ytr, xte, yte, bins: int, classes: int) -> torch.Tensor:
    """Majority class per train-quantile bin of the unit; held-out accuracy."""
    ntr, u = xtr.shape
    s = torch.sort(xtr.T.contiguous(), dim=1).values  # (u, ntr)
    cut = (torch.arange(1, bins) * ntr // bins).clamp(max=ntr - 1)
    edges = s[:, cut].contiguous()  # (u, bins-1)
    btr = torch.searchsorted(edges, xtr.T.contiguous(), right=True)  # (u, ntr)
    bte = torch.searchsorted(edges, xte.T.contiguous(), right=True)  # (u, nte)
    flat = btr * classes + ytr[None, :] + (torch.arange(u) * bins * classes)[:, None]
    counts = torch.bincount(flat.reshape(-1), minlength=u * bins * classes).reshape(u, bins, classes)
    majority = torch.bincount(ytr, minlength=classes).argmax()
    label = torch.where(counts.sum(2) > 0, counts.argmax(2), majority)  # (u, bins)
    pred = torch.gather(label, 1, bte)  # (u, nte)
    return (pred == yte[None, :]).to(torch.float64).mean(1)


def _linear_probe(xtr, ytr, xte, yte) -> torch.Tensor:
    """Least-squares line y ~ a x + b per column on train; held-out R²."""
    xm, ym = xtr.mean(0), ytr.mean()
    var = ((xtr - xm) ** 2).sum(0)
    slope = torch.where(var > 0, ((xtr - xm) * (ytr - ym)[:, None]).sum(0) / var.clamp_min(1e-300), 0.0)
    pred = ym + slope * (xte - xm)  # (nte, u)
    sst = ((yte - yte.mean()) ** 2).sum()
    return 1 - ((pred - yte[:, None]) ** 2).sum(0) / sst.clamp_min(1e-300)
