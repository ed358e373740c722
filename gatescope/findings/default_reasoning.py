"""Default reasoning in number agreement (Jumelet, Zuidema & Hupkes 2019): over the NounPP items ("the
boy(s) near the car(s)"), how much of the verb's logit difference, logit(correct) - logit(wrong), comes from
the subject noun, from the attractor noun, from the rest of the prefix and from the constants (biases), by
subject number. Jumelet et al. found, with GCD on Gulordava et al.'s LM, that a singular verb is largely
predicted by the constants (singular as the default) while a plural one is carried by the subject.

Computed with gatescope.analysis.decomposition, by "gcd" (their method) and "shapley", one batch per
condition (the items of a NounPP condition are all five words long).
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from gatescope.analysis.decomposition import decompose
from gatescope.inputs.stimuli.agreement import AgreementItem

CONDITIONS = ("nounpp_SS", "nounpp_SP", "nounpp_PS", "nounpp_PP")
SUBJECT, ATTRACTOR = 1, 4  # positions in "the boy near the car"
PARTS = ("constants", "subject", "attractor", "other")  # the decomposition's parts, in its order
METHODS = ("gcd", "shapley")


def default_reasoning(model: nn.Module, items: Sequence[AgreementItem],
                      conditions: Sequence[str] = CONDITIONS) -> dict[str, Any]:
    """Mean contribution of each part to the verb's logit difference, per NounPP condition and method, and
    the mean actual difference; by subject number (the conditions pooled) too."""
    vocab = model.vocab
    by_condition: dict[str, Any] = {}
    for condition in conditions:
        chosen = [it for it in items if it.condition == condition]
        ids = torch.tensor([model.encode(it.prefix) for it in chosen])  # (B, 5)
        correct = torch.tensor([vocab.index[it.correct] for it in chosen])
        wrong = torch.tensor([vocab.index[it.wrong] for it in chosen])
        rows = torch.arange(len(chosen))
        row: dict[str, Any] = {"items": len(chosen)}
        for method in METHODS:
            result = decompose(model, ids, method, parts=[SUBJECT, ATTRACTOR])
            last = result.logits[:, :, -1]  # (P, B, V)
            row[method] = dict(zip(PARTS, (last[:, rows, correct] - last[:, rows, wrong]).mean(1).tolist()))
            actual = result.actual["logits"][:, -1]  # (B, V)
            row["total"] = float((actual[rows, correct] - actual[rows, wrong]).mean())
        by_condition[condition] = row
    by_subject = {}
    for number, label in (("S", "singular"), ("P", "plural")):
        rows = [row for c, row in by_condition.items() if c.split("_")[1][0] == number]
        n = sum(r["items"] for r in rows)
        if not n:
            continue
        by_subject[label] = {"items": n, "total": sum(r["total"] * r["items"] for r in rows) / n} | {
            m: {p: sum(r[m][p] * r["items"] for r in rows) / n for p in PARTS} for m in METHODS}
    return {"parts": list(PARTS), "methods": list(METHODS), "by_condition": by_condition, "by_subject": by_subject}
