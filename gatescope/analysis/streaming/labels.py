"""Per-token labels of a corpus streamed past a model: read a line at a time alongside it, never whole.

A streamed command (``gatescope analyze units|probe MODEL --file CORPUS``) takes exactly one label
source, which gives the values of each corpus line (one sequence) in turn:

- `LabelsFile` (``--labels FILE``): one value a token of the whole corpus, in its order, read as
  gatescope.analysis.labels reads a labels file (numbers, NaN or an empty line = none; or words,
  each a category coded in sorted order; or a .npy array, memory-mapped);
- `StimuliFeature` (``--feature-from items.tsv --feature NAME``): the agreement items of
  gatescope.inputs.features.stimuli_items (the reader of ``gatescope trace --stimuli``); corpus line k must
  be item k's prefix and correct verb, NAME one of its labels (subject_number, in_attractor, is_verb);
- `CodeFeature` (``--code-features --feature NAME``): gatescope.inputs.stimuli.code_features of each line's
  text, a char model's tokens (in_string, in_comment, bracket_depth, indent_level), as
  ``gatescope trace --file CORPUS --code-features`` computes them (each line its own source).

Labels that do not line up with the tokens (too few or too many values, an item that is not its
line, a word the model does not know) are a one-line error, never truncated or padded.

`LabelScheme` is what a whole label vector is, without its values: binary, categorical or
continuous (as `labels.make_labels` decides), from the distinct values and their counts that a
first pass finds (`LabelScan`); it codes each batch's values as the whole vector's codes would be.
Memory: the distinct values (a continuous label keeps one count per distinct value).
"""
from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from gatescope.errors import GatescopeError
from gatescope.inputs.features import STIMULUS_FEATURES


class LabelReader:
    """One pass over a label source: ``take(where, text, ids)`` the values of the next line, ``close(tokens)``."""

    def take(self, where: str, text: str, ids: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def close(self, tokens: int) -> None:
        """The corpus ended after ``tokens`` tokens: refuse a source with values left."""


class LabelSource:
    """Where the labels come from; ``reader()`` starts a pass (a streamed probe makes several)."""

    name: str

    def reader(self) -> LabelReader:
        raise NotImplementedError


class LabelsFile(LabelSource):
    """``--labels FILE``: one value a token of the corpus, in its order."""

    def __init__(self, path: str) -> None:
        from gatescope.validation.text import map_npy_labels, text_label_words

        self.path, self.name = Path(path), Path(path).name
        self.npy = map_npy_labels(path) if self.path.suffix == ".npy" else None
        self.words = None if self.npy is not None else text_label_words(path)

    def reader(self) -> LabelReader:
        return _FileReader(self)


class _FileReader(LabelReader):
    def __init__(self, source: LabelsFile) -> None:
        from gatescope.validation.text import text_label_values

        self.source, self.count = source, 0
        self.values = None if source.npy is not None else text_label_values(source.path, source.words)

    def _next(self, n: int) -> np.ndarray:
        if self.values is None:
            return np.asarray(self.source.npy[self.count:self.count + n])
        return np.fromiter(itertools.islice(self.values, n), np.float64)

    def take(self, where: str, text: str, ids: np.ndarray) -> np.ndarray:
        from gatescope.validation.text import label_values

        got = self._next(len(ids))
        if got.size < len(ids):
            raise GatescopeError(f"{self.source.name} has {self.count + got.size} values; the corpus has more tokens "
                                 f"({where} needs values {self.count + 1}..{self.count + len(ids)}; one label a token, "
                                 "in the corpus's order)")
        self.count += got.size
        return label_values(got, self.source.name)

    def close(self, tokens: int) -> None:
        extra = self.source.npy.size - self.count if self.values is None else sum(1 for _ in self.values)
        if extra:
            raise GatescopeError(f"{self.source.name} has {tokens + extra} values; the corpus has {tokens} tokens "
                                 "(one label a token, in the corpus's order)")


def _chosen(feature: str | None, names: Sequence[str], what: str) -> str:
    if feature is None:
        raise GatescopeError(f"{what} gives several features: choose one with --feature NAME ({', '.join(names)})")
    if feature not in names:
        raise GatescopeError(f"{what} has no feature {feature!r}; it gives {', '.join(names)}")
    return feature


class StimuliFeature(LabelSource):
    """``--feature-from items.tsv --feature NAME``: corpus line k is item k (prefix + correct verb)."""

    def __init__(self, model, path: str, feature: str | None) -> None:
        self.model, self.path = model, path
        self.feature = _chosen(feature, STIMULUS_FEATURES, f"--feature-from {Path(path).name}")
        self.name = f"{self.feature} ({Path(path).name})"

    def reader(self) -> LabelReader:
        from gatescope.inputs.features import stimuli_items

        return _StimuliReader(self, stimuli_items(self.model, self.path, strict=True))


class _StimuliReader(LabelReader):
    def __init__(self, source: StimuliFeature, items) -> None:
        self.source, self.items, self.count = source, items, 0

    def take(self, where: str, text: str, ids: np.ndarray) -> np.ndarray:
        item = next(self.items, None)
        name = Path(self.source.path).name
        if item is None:
            raise GatescopeError(f"{name} has {self.count} items; the corpus has more lines ({where}): corpus line k "
                                 "must be item k's prefix and correct verb")
        self.count += 1
        item_where, stimulus, item_ids = item
        if not np.array_equal(item_ids, ids):
            raise GatescopeError(f"{where} is not {item_where} ({' '.join(stimulus.tokens)!r}): corpus line k must "
                                 "be item k's prefix and correct verb, so that its labels are the line's")
        return np.asarray(getattr(stimulus, self.source.feature), np.float64)

    def close(self, tokens: int) -> None:
        left = sum(1 for _ in self.items)
        if left:
            raise GatescopeError(f"{Path(self.source.path).name} has {self.count + left} items; the corpus has "
                                 f"{self.count} lines (one item a line, in order)")


class CodeFeature(LabelSource):
    """``--code-features --feature NAME``: the Python source features of each line (char models)."""

    def __init__(self, model, feature: str | None) -> None:
        from gatescope.inputs.features import check_code_model
        from gatescope.inputs.stimuli.code_features import FEATURES

        check_code_model(model)
        self.feature = _chosen(feature, FEATURES, "--code-features")
        self.name = self.feature

    def reader(self) -> LabelReader:
        return _CodeReader(self.feature)


class _CodeReader(LabelReader):
    def __init__(self, feature: str) -> None:
        self.feature = feature

    def take(self, where: str, text: str, ids: np.ndarray) -> np.ndarray:
        from gatescope.inputs.stimuli.code_features import code_features

        values = code_features(text, where)[self.feature]
        if values.size != len(ids):
            raise GatescopeError(f"{where}: {values.size} characters but {len(ids)} tokens; code features are "
                                 "one per character of a char model's line")
        return values.astype(np.float64)


def label_source(model, labels: str | None, feature_from: str | None, code_features: bool,
                 feature: str | None) -> LabelSource:
    """The one label source the options give (``--labels``, ``--feature-from``, ``--code-features``)."""
    given = [f for f, v in (("--labels FILE", labels), ("--feature-from ITEMS.tsv", feature_from),
                            ("--code-features", code_features or None)) if v is not None]
    if len(given) != 1:
        raise GatescopeError(f"--file needs exactly one label source: --labels FILE, --feature-from ITEMS.tsv "
                             f"or --code-features (got {', '.join(given) or 'none'})")
    if labels is not None:
        if feature is not None:
            raise GatescopeError("--feature chooses a feature of --feature-from or --code-features; "
                                 "--labels FILE is the label itself")
        return LabelsFile(labels)
    if feature_from is not None:
        return StimuliFeature(model, feature_from, feature)
    return CodeFeature(model, feature)


# -- what the whole label vector is ---------------------------------------------------------------
@dataclass(frozen=True)
class LabelScheme:
    """A label vector's kind and classes without its values (duck-types `labels.Labels` for the
    analyses' checks: name, kind, classes, num_classes). Continuous labels keep their distinct values
    and counts, for the quantile codes of MI (midranks, as ranking.py bins a label)."""

    name: str
    kind: str
    classes: tuple[float, ...]
    distinct: torch.Tensor  # (D,) float64, sorted
    counts: torch.Tensor  # (D,) int64

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def valid_count(self) -> int:
        return int(self.counts.sum())

    @classmethod
    def from_counts(cls, name: str, distinct: torch.Tensor, counts: torch.Tensor, kind: str | None = None
                    ) -> LabelScheme:
        """The scheme of labels whose finite values are ``distinct`` (sorted) with ``counts``."""
        from gatescope.analysis.labels import make_labels

        if distinct.numel() == 0:
            raise GatescopeError(f"{name}: no token has a label (all NaN)")
        kind = make_labels(distinct, name=name, kind=kind).kind  # the kind depends on the distinct values only
        classes = () if kind == "continuous" else tuple(distinct.tolist())
        return cls(name, kind, classes, distinct.to(torch.float64), counts.to(torch.int64))

    def codes(self, values: torch.Tensor) -> torch.Tensor:
        """Class codes 0..C-1 of ``values`` [n] (-1 where NaN), as `make_labels` codes the whole vector."""
        valid = torch.isfinite(values)
        out = torch.full(values.shape, -1, dtype=torch.int64)
        out[valid] = torch.searchsorted(self.distinct, values[valid])
        return out

    def quantile_codes(self, values: torch.Tensor, bins: int) -> torch.Tensor:
        """Quantile-bin codes of ``values`` [n] among the whole vector's (-1 where NaN), as
        `streaming.quantile_codes` gives them for the whole vector at once."""
        valid = torch.isfinite(values)
        where = torch.searchsorted(self.distinct, values[valid])
        below = torch.cumsum(self.counts, 0) - self.counts  # (D,) values less than each distinct one
        midrank = below[where].to(torch.float64) + (self.counts[where].to(torch.float64) + 1) / 2
        out = torch.full(values.shape, -1, dtype=torch.int64)
        out[valid] = ((midrank - 0.5) * bins / self.valid_count).floor().clamp(0, bins - 1).to(torch.int64)
        return out


class LabelScan:
    """The first pass's count of the label values: distinct finite values and how often each occurs."""

    def __init__(self) -> None:
        self.values: dict[float, int] = {}

    def update(self, values: np.ndarray) -> None:
        distinct, counts = np.unique(values[np.isfinite(values)], return_counts=True)
        for v, c in zip(distinct.tolist(), counts.tolist()):
            self.values[v] = self.values.get(v, 0) + c

    def scheme(self, name: str, kind: str | None = None) -> LabelScheme:
        distinct = sorted(self.values)
        return LabelScheme.from_counts(name, torch.tensor(distinct, dtype=torch.float64),
                                       torch.tensor([self.values[v] for v in distinct], dtype=torch.int64), kind)


def heldout_sequences(num_sequences: int, num_tokens: int, fraction: float = 0.2):
    """`selection.heldout_from_offsets`'s split without the offsets: -> ``held(sequence, first_row, length)``,
    bool [length] for one sequence (every 5th sequence; under 5 sequences, the last 20% of the tokens)."""
    every = max(2, round(1 / fraction))

    def held(sequence: int, first_row: int, length: int) -> np.ndarray:
        if num_sequences >= every:
            return np.full(length, sequence % every == every - 1)
        rows = np.arange(first_row, first_row + length)
        return rows >= num_tokens - max(1, int(num_tokens * fraction))

    return held

