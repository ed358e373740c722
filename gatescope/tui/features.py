"""The trace's annotations as meta tracks: each ``feature.*`` (and the vocabulary class) classified for drawing.

LSTMVis (Strobelt et al. 2018) draws annotations (POS tags, nesting depth) as tracks under the
text, so that what the matches of a selection have in common can be seen. A per-token feature
is drawn by what its values are:

- binary: two values (NaN where it does not apply) -> filled (the higher) / empty cells;
- categorical: a few distinct integers (a bracket depth, a POS tag id), or the vocabulary class of each token
  (the checkpoint's ``lexicon``, when the trace metadata carries one) -> a colour per value, with a legend;
- continuous: anything else -> a colour scale from its minimum to its maximum.

The kind is the analyses' own (`gatescope.validation.text.label_kind`); a categorical feature with more values
than the browser has colours (`MAX_CATEGORIES`) is drawn on the continuous scale, and its legend says so.

`Track.summary` says what a set of token spans (the matches) has of the feature, against the
whole trace: the LSTMVis match view's annotation summary, in one line.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from gatescope.traces.file import TraceFile
from gatescope.validation.text import label_kind

MAX_CATEGORIES = 10
VOCAB_CLASS = "vocab class"

Shape = Literal["binary", "categorical", "continuous"]


@dataclass(frozen=True)
class Track:
    """One annotation row: a value per token and how to draw it."""

    name: str
    values: np.ndarray  # (N,) float, NaN where the feature does not apply
    shape: Shape
    categories: tuple[float, ...]  # the distinct values (binary, categorical), ascending
    labels: tuple[str, ...]  # a name per category
    low: float  # finite minimum and maximum (continuous scale)
    high: float
    mean: float  # over the finite values of the whole trace

    def category(self, values: np.ndarray) -> np.ndarray:
        """Category index of each value: (n,) int64, -1 for NaN (or a value not among the categories)."""
        index = np.searchsorted(np.asarray(self.categories), values)
        index = np.minimum(index, max(len(self.categories) - 1, 0))
        ok = np.isfinite(values) & (np.asarray(self.categories)[index] == values) if self.categories else False
        return np.where(ok, index, -1)

    def summary(self, spans: list[tuple[int, int]]) -> str:
        """One line: the feature over the tokens of ``spans`` (start, stop), against the whole trace."""
        if not spans:
            return f"{self.name}: no matches"
        values = np.concatenate([self.values[a:b] for a, b in spans]).astype(np.float64)
        finite = values[np.isfinite(values)]
        if finite.size == 0:
            return f"{self.name}: not defined on the matches"
        if self.shape == "binary":
            on = self.categories[-1]
            wholly = sum(bool(np.all(self.values[a:b] == on)) for a, b in spans) / len(spans)
            value = "" if self.categories == (0.0, 1.0) else f" at {self.labels[-1]}"
            overall = np.mean(self.values[np.isfinite(self.values)] == on)
            return (f"{self.name}: {np.mean(finite == on):.0%} of matched tokens{value}, {wholly:.0%} of matches wholly"
                    f" (trace {overall:.0%})")
        if self.shape == "categorical":
            counts = np.bincount(self.category(finite)[self.category(finite) >= 0], minlength=len(self.categories))
            top = int(np.argmax(counts))
            overall = np.mean(self.values[np.isfinite(self.values)] == self.categories[top])
            return (f"{self.name}: {self.labels[top]} in {counts[top] / finite.size:.0%} of matched tokens"
                    f" (trace {overall:.0%})")
        return f"{self.name}: mean {finite.mean():.3g} over the matches (trace {self.mean:.3g})"


def classify(name: str, values: np.ndarray, labels: tuple[str, ...] | None = None) -> Track:
    """A feature's track: binary, categorical (given ``labels``, or few distinct integers) or continuous."""
    values = np.asarray(values, dtype=np.float64)
    finite = values[np.isfinite(values)]
    distinct = np.unique(finite)
    low, high = (float(distinct[0]), float(distinct[-1])) if distinct.size else (0.0, 1.0)
    mean = float(finite.mean()) if finite.size else float("nan")
    if labels is not None:
        return Track(name, values, "categorical", tuple(map(float, range(len(labels)))), labels, low, high, mean)
    kind = label_kind(distinct) if distinct.size > 1 else "binary"
    if kind == "binary":
        cats = tuple(float(v) for v in distinct) if distinct.size == 2 else (0.0, 1.0)
        return Track(name, values, "binary", cats, tuple(f"{v:g}" for v in cats), cats[0], cats[1], mean)
    if kind == "categorical" and distinct.size <= MAX_CATEGORIES:
        cats = tuple(float(v) for v in distinct)
        return Track(name, values, "categorical", cats, tuple(f"{v:g}" for v in cats), low, high, mean)
    return Track(name, values, "continuous", (), (), low, high, mean)


def tracks(data: TraceFile) -> list[Track]:
    """Every ``feature.*`` of the trace, then the tokens' vocabulary class when the metadata has a lexicon."""
    found = [classify(name, values) for name, values in data.features.items()]
    lexicon = data.meta.get("lexicon")
    vocab = data.meta.get("vocab")
    if isinstance(lexicon, dict) and lexicon and isinstance(vocab, list) and data.token_ids is not None:
        classes = tuple(str(c) for c in lexicon)
        of_word = {str(w): i for i, c in enumerate(lexicon) for w in (lexicon[c] or [])}
        per_id = np.array([of_word.get(str(w), np.nan) for w in vocab] + [np.nan], dtype=np.float64)  # (V+1,)
        ids = np.asarray(data.token_ids).reshape(-1)
        ids = np.where((ids >= 0) & (ids < len(vocab)), ids, len(vocab))
        found.append(classify(VOCAB_CLASS, per_id[ids], labels=classes))
    return found
