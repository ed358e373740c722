"""A unit ranking read from a file: the JSON that `gatescope analyze units --json` prints.

`gatescope browse TRACE --ranking units.json` fills the ranked-units panel with that ranking
(permutation-tested scores by AUC, mutual information, a probe: gatescope.analysis.ranking)
instead of the browser's own streamed Pearson r, and names the file as the scores' source. The
file is a JSON list, best first, of objects with at least ``unit`` (``rnn.l0.fwd.h:96``) and
``score`` (and usually ``metric``). Every unit is checked against the trace before the browser
starts; anything else is a one-line error.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

from gatescope.errors import GatescopeError
from gatescope.names import parse_unit
from gatescope.traces.file import TraceFile
from gatescope.validation.text import read_json

MAX_BYTES = 64 << 20  # a ranking of every unit of a large model is a few MB


@dataclass(frozen=True)
class FileRanking:
    """Scores per quantity, in the file's (best-first) order."""

    path: Path
    metric: str  # e.g. "auc", or "score" when the file does not say
    units: dict[str, list[tuple[int, float]]]  # quantity -> [(unit, score)], best first

    @property
    def label(self) -> str:
        """How the panel names the source: ``auc from units.json``."""
        return f"{self.metric} from {self.path.name}"

    @property
    def best(self) -> tuple[str, int]:
        """(quantity, unit) of the file's first entry."""
        return self.first_name, self.units[self.first_name][0][0]

    @property
    def first_name(self) -> str:
        return next(iter(self.units))


def read_ranking(path: str | os.PathLike, data: TraceFile) -> FileRanking:
    """Read and check a ranking file against the trace ``data``; GatescopeError (one line) on anything wrong."""
    path = Path(path)
    entries = read_json(path, "ranking file", MAX_BYTES, "the output of `gatescope analyze units --json`")
    if not isinstance(entries, list) or not entries:
        raise GatescopeError(f"{path} is not a non-empty JSON list of units, as `gatescope analyze units --json` "
                             "prints")
    units: dict[str, list[tuple[int, float]]] = {}
    metrics = set()
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict) or "unit" not in entry or "score" not in entry:
            raise GatescopeError(f"{path}: entry {i} is not an object with 'unit' and 'score'")
        if not isinstance(entry["unit"], str):
            raise GatescopeError(f"{path}: entry {i}'s unit is not a string such as rnn.l0.fwd.h:96")
        name, index = parse_unit(entry["unit"])
        if name not in data.arrays:
            raise GatescopeError(f"{path}: unit {entry['unit']} is not in this trace (it has no {name}); "
                                 "was the ranking made on another trace?")
        if not index < data.arrays[name].shape[1]:
            raise GatescopeError(f"{path}: unit {entry['unit']} is out of range ({name} has "
                                 f"{data.arrays[name].shape[1]} units)")
        score = entry["score"]
        if score is None:
            score = math.nan
        if isinstance(score, bool) or not isinstance(score, (int, float)):
            raise GatescopeError(f"{path}: entry {i}'s score is not a number")
        metrics.add(str(entry.get("metric", "score")))
        units.setdefault(name, []).append((index, float(score)))
    return FileRanking(path, " / ".join(sorted(metrics)), units)
