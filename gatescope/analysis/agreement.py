"""Subject-verb agreement accuracy of a language model (Linzen et al. 2016; Lakretz et al. 2019).

An item is a prefix and two forms of the next verb. The model gets the item right when it gives
the correct form a higher probability than the wrong one after the prefix; since both come from
the same softmax, that is comparing their logits. Accuracy is reported overall, per condition and
per distance between the subject and the verb (tokens between them, as Linzen et al. 2016 plot it;
known for gatescope's own conditions, `gatescope.inputs.stimuli.agreement.distance`), the latter also on
the incongruent items alone (an attractor of the other number).

Stimuli files are tab-separated, without a header, one item a line::

    prefix<TAB>correct verb<TAB>wrong verb<TAB>condition

Interventions (`gatescope.Intervention`, e.g. holding units at zero as Lakretz et al. did by
zeroing their outgoing weights) are applied through `gatescope.record` at every batch.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from gatescope.analysis.causal import Metric, ablate, logit_difference
from gatescope.errors import GatescopeError
from gatescope.inputs.stimuli.agreement import AgreementItem
from gatescope.names import parse_unit
from gatescope.recorder.recordable import quantities
from gatescope.recorder.recording import Intervention
from gatescope.vocab import Vocabulary


def _encode(vocab: Vocabulary, items: Sequence[AgreementItem]) -> list[tuple[list[int], int, int]]:
    """(prefix ids, correct id, wrong id) per item; words outside the vocabulary raise GatescopeError."""
    unknown: dict[str, None] = {}
    encoded = []
    for item in items:
        words = vocab.split(item.prefix)
        verbs = vocab.split(item.correct) + vocab.split(item.wrong)
        if not words or len(verbs) != 2:
            raise GatescopeError(f"an item needs a prefix and two one-token verbs: {item}")
        for word in words + verbs:
            if word not in vocab.index:
                unknown[word] = None
        if not unknown:
            encoded.append(([vocab.index[w] for w in words], vocab.index[verbs[0]], vocab.index[verbs[1]]))
    if unknown:
        shown = ", ".join(repr(word) for word in list(unknown)[:10])
        more = f" and {len(unknown) - 10} more" if len(unknown) > 10 else ""
        raise GatescopeError(f"words not in the model's vocabulary: {shown}{more}")
    return encoded


def _logit_differences(model: torch.nn.Module, encoded, batch_size: int, interventions) -> torch.Tensor:
    """logit(correct) - logit(wrong) after each prefix, items batched by prefix length (no padding)."""
    diffs = torch.empty(len(encoded))
    by_length: dict[int, list[int]] = {}
    for i, (prefix, _, _) in enumerate(encoded):
        by_length.setdefault(len(prefix), []).append(i)
    device = next(model.parameters()).device
    for _, indices in sorted(by_length.items()):
        for start in range(0, len(indices), batch_size):
            batch = indices[start:start + batch_size]
            ids = torch.tensor([encoded[i][0] for i in batch], device=device)  # (B, T)
            correct = torch.tensor([encoded[i][1] for i in batch])
            wrong = torch.tensor([encoded[i][2] for i in batch])
            diffs[batch] = logit_difference(model, ids, correct, wrong, interventions or ())
    return diffs


def ablation_interventions(model: torch.nn.Module, units: Sequence[str]) -> list[Intervention]:
    """`gatescope.Intervention`s that hold each unit (``"rnn.l0.fwd.h:37"``) at zero at every step,
    one per quantity. A malformed name or an index outside its module raises GatescopeError; a name
    the model lacks is reported by `gatescope.record` when the interventions are applied."""
    if not units:
        raise GatescopeError("no units to ablate")
    widths = quantities(model)
    for unit in units:
        name, index = parse_unit(unit)
        if name in widths and index >= widths[name]:
            raise GatescopeError(f"unit {unit}: index {index} is out of range ({name} has {widths[name]} units)")
    return ablate(units)


class AgreementResult(dict):
    """What `evaluate_agreement` returns: a plain dict that also shows itself as a table in a notebook."""

    def _repr_html_(self) -> str:
        from gatescope.display.tables import agreement_html

        return agreement_html(self)


def evaluate_agreement(model: torch.nn.Module, items: Sequence[AgreementItem],
                       interventions: Sequence[Intervention] | None = None, batch_size: int = 256,
                       vocab: Vocabulary | None = None, by: Sequence[str] = ()) -> AgreementResult:
    """Agreement accuracy of `model` (ids (B, T) -> logits (B, T, V)) on `items`.

    `vocab` defaults to ``model.vocab`` (a `gatescope.vocab.Vocabulary`). `interventions` are
    applied to every batch (their values must not depend on the batch: use set, scale or add).
    `by`: fields to break the accuracy down by (`gatescope.inputs.stimuli.agreement.item_fields`: condition,
    structure, distance, subject, attractor, preposition, verb, pair, or a column of the stimuli file).
    Returns ``{"accuracy", "n", "mean_logit_diff", "ci95", "by_condition": {condition: {"accuracy", "n",
    "mean_logit_diff", "ci95"}}, "by_distance": {d: {...}}, "by_distance_incongruent": {d: {...}},
    "without_distance": n, "by": {field: {value: {...}}}}``: conditions in order of first appearance, distances
    ascending (tokens between subject and verb), over the items whose condition is one of gatescope's
    (`without_distance` counts the others); ``ci95`` is the accuracy's Wilson 95% interval.
    """
    from gatescope.inputs.stimuli.agreement import CONDITIONS, distance, is_incongruent

    groups = _groups(items, by)
    diffs = _diffs(model, items, interventions, batch_size, vocab)
    conditions = list(dict.fromkeys(item.condition for item in items))
    by_condition = {}
    for condition in conditions:
        mask = torch.tensor([item.condition == condition for item in items])
        by_condition[condition] = _summary(diffs[mask])
    known = [c for c in conditions if c in CONDITIONS]
    by_distance, incongruent = {}, {}
    for d in sorted({distance(c) for c in known}):
        at = [c for c in known if distance(c) == d]
        by_distance[d] = _summary(diffs[torch.tensor([item.condition in at for item in items])])
        if any(is_incongruent(c) for c in at):
            mask = torch.tensor([item.condition in at and is_incongruent(item.condition) for item in items])
            incongruent[d] = _summary(diffs[mask])
    without = sum(by_condition[c]["n"] for c in conditions if c not in CONDITIONS)
    result = AgreementResult({**_summary(diffs), "by_condition": by_condition, "by_distance": by_distance,
                              "by_distance_incongruent": incongruent, "without_distance": without})
    if by:
        result["by"] = {field: {value: _summary(diffs[rows]) for value, rows in values.items()}
                        for field, values in groups.items()}
    return result


def ablation_effect(model: torch.nn.Module, items: Sequence[AgreementItem], interventions: Sequence[Intervention],
                    batch_size: int = 256, vocab: Vocabulary | None = None, by: Sequence[str] = ()) -> dict[str, Any]:
    """What ``interventions`` cost on ``items``: accuracy without and with them, and the drop in points of
    accuracy with its 95% interval from a paired bootstrap over the items (each item keeps its pair), overall and
    per value of each field of `by` (as `evaluate_agreement`). Returns ``{"baseline": {...}, "ablated": {...},
    "drop", "drop_ci95", "by": {field: {value: {"baseline", "ablated", "drop", "drop_ci95"}}}}``."""
    from gatescope.analysis.stats import paired_bootstrap_interval

    groups = _groups(items, by)
    before = (_diffs(model, items, None, batch_size, vocab) > 0).numpy()  # (N,) correct without the edit
    after = (_diffs(model, items, interventions, batch_size, vocab) > 0).numpy()  # (N,)

    def effect(rows: np.ndarray) -> dict[str, Any]:
        drop = paired_bootstrap_interval(before[rows], after[rows])
        return {"baseline": _accuracy(before[rows]), "ablated": _accuracy(after[rows]),
                "drop": float(before[rows].mean() - after[rows].mean()), "drop_ci95": list(drop)}

    result = effect(np.arange(len(items)))
    if by:
        result["by"] = {field: {value: effect(rows.numpy()) for value, rows in values.items()}
                        for field, values in groups.items()}
    return result


def _diffs(model, items, interventions, batch_size: int, vocab: Vocabulary | None) -> torch.Tensor:
    vocab = vocab if vocab is not None else getattr(model, "vocab", None)
    if vocab is None:
        raise GatescopeError("the model has no vocabulary, so words cannot be turned into ids")
    if not items:
        raise GatescopeError("no agreement items to evaluate")
    encoded = _encode(vocab, items)
    with torch.no_grad():
        return _logit_differences(model, encoded, batch_size, interventions)  # (N,)


def _groups(items: Sequence[AgreementItem], by: Sequence[str]) -> dict[str, dict[str, torch.Tensor]]:
    """For each field of ``by``: its values, in order of first appearance, with the rows of the items holding
    them (``(none)``: items without the field); an unknown field is a one-line error naming the known ones."""
    from gatescope.inputs.stimuli.agreement import item_fields

    fields = [item_fields(item) for item in items]
    known = list(dict.fromkeys(name for f in fields for name in f))
    unknown = [field for field in by if field not in known]
    if unknown:
        raise GatescopeError(f"no field {', '.join(map(repr, unknown))} in these items; they have: {', '.join(known)}")
    groups = {}
    for field in by:
        values = [f.get(field, "(none)") for f in fields]
        groups[field] = {value: torch.tensor([i for i, v in enumerate(values) if v == value])
                         for value in dict.fromkeys(values)}
    return groups


def _accuracy(correct: np.ndarray) -> dict[str, Any]:
    from gatescope.analysis.stats import wilson_interval

    k, n = int(correct.sum()), int(correct.size)
    return {"accuracy": k / max(1, n), "n": n, "ci95": list(wilson_interval(k, n))}


def _summary(diffs: torch.Tensor) -> dict[str, Any]:
    return {**_accuracy((diffs > 0).numpy()), "mean_logit_diff": float(diffs.mean())}  # exact counts, not a mean


def agreement_metric(model: torch.nn.Module, items: Sequence[AgreementItem], conditions: Sequence[str] | None = None,
                     measure: str = "accuracy") -> Metric:
    """Agreement of ``model`` on stimuli, as a causal-test `Metric`.

    Args:
        model: a language model (ids -> logits over its vocabulary).
        items: the stimuli, e.g. ``read_stimuli(bundled_stimuli_path())``.
        conditions: the conditions kept (default: all), e.g. ``["nounpp_SP", "nounpp_PS"]``.
        measure: "accuracy", or "mean_logit_diff" (logit of the correct minus the wrong verb).

    Returns:
        The Metric: interventions -> the measure under them.

    Raises:
        GatescopeError: no item of the conditions, or an unknown measure.
    """
    if conditions is not None:
        wanted = set(conditions)
        items = [it for it in items if it.condition in wanted]
        if not items:
            raise GatescopeError(f"no stimuli of condition(s) {', '.join(conditions)}")
    if measure not in ("accuracy", "mean_logit_diff"):
        raise GatescopeError(f"unknown agreement measure {measure!r}: accuracy or mean_logit_diff")
    model.eval()
    return Metric(f"agreement {measure}", lambda iv: evaluate_agreement(model, items, iv)[measure])
