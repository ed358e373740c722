"""Select-and-match in the browser: the selection the user builds, and one match run over the trace.

LSTMVis's interaction (Strobelt et al. 2018): a span of tokens and a threshold select the units
that are on over the whole span; the user may add or remove units by hand; then every other
span of the same length is ranked by how many of the selected (step, unit) cells are on. The
ranking is gatescope.analysis.patterns' own (`units_on`, `count_on`, `best_spans`): this module
only feeds it the browser's numpy view of the trace, so the browser and `gatescope analyze
match` give the same matches. patterns lives in the analysis layer, which loads torch; it is
imported by `run`, in the app's worker thread, the first time a selection is made, so the
browser still opens without torch.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace

from gatescope.tui.features import Track
from gatescope.tui.source import TraceSource

TOP = 50  # matches listed
CHUNK_ROWS = 65536  # rows per read in a match's pass over the trace
STEP = 0.05  # threshold change per key press


@dataclass(frozen=True)
class SpanSelection:
    """Rows ``start:stop`` of quantity ``name``, a threshold and the units chosen (found on, plus/minus by hand)."""

    name: str
    start: int
    stop: int
    threshold: float | None = None  # None: the kind's default (patterns.default_threshold), set by `run`
    found: tuple[int, ...] | None = None  # units on over the span at the threshold; None until computed
    added: frozenset[int] = field(default_factory=frozenset)
    removed: frozenset[int] = field(default_factory=frozenset)

    @property
    def length(self) -> int:
        return self.stop - self.start

    @property
    def units(self) -> tuple[int, ...]:
        """The units matched: found on over the span, plus those added, minus those removed."""
        return tuple(sorted((set(self.found or ()) | self.added) - self.removed))

    def toggled(self, unit: int) -> SpanSelection:
        """The same selection with ``unit`` added (when not chosen) or removed (when chosen)."""
        if unit in self.units:
            return replace(self, added=self.added - {unit}, removed=self.removed | {unit})
        return replace(self, added=self.added | {unit}, removed=self.removed - {unit})

    def only(self, unit: int) -> SpanSelection:
        """The same span matched on ``unit`` alone (every other unit found on is removed by hand)."""
        return replace(self, added=frozenset({unit}), removed=frozenset(self.found or ()) - {unit})

    def at_threshold(self, threshold: float) -> SpanSelection:
        """The same span at another threshold: the units on are found again; hand edits are kept."""
        return replace(self, threshold=round(threshold, 4), found=None)


@dataclass(frozen=True)
class MatchResult:
    """What one run found: the selection (units resolved), the matches and their feature summaries."""

    selection: SpanSelection
    starts: list[int]  # first rows of the matches, best first
    matched: list[int]  # on cells of each
    candidates: int  # windows ranked (patterns.Spans.candidates)
    summaries: list[str]

    @property
    def cells(self) -> int:
        return self.selection.length * len(self.selection.units)


def run(
    source: TraceSource,
    chosen: SpanSelection,
    tracks: list[Track],
    progress: Callable[[float], bool],
    top: int = TOP,
) -> MatchResult | None:
    """Resolve ``chosen`` (threshold, units on) and match it over the whole trace; None when cancelled.

    ``progress(fraction)`` is called as rows are read; it returns False to stop. A selection with no
    unit gets a result with no matches (the panel says why).
    """
    from gatescope.analysis import patterns  # the analysis layer (and torch): loaded on the first selection
    from gatescope.names import parse_name

    if chosen.threshold is None:
        chosen = replace(chosen, threshold=patterns.default_threshold(parse_name(chosen.name).kind))
    if chosen.found is None:
        span = source.unit_rows(chosen.name, slice(None), chosen.start, chosen.stop)  # (L, H)
        chosen = replace(chosen, found=tuple(patterns.units_on(span, chosen.threshold).tolist()))
    units = list(chosen.units)
    if not units:
        return MatchResult(chosen, [], [], 0, [])
    counts = patterns.count_on(lambda a, b: source.unit_rows(chosen.name, units, a, b), source.num_tokens,
                               chosen.threshold, CHUNK_ROWS, lambda done: not progress(done))
    if counts is None:
        return None
    spans = patterns.best_spans(counts, source.offsets, chosen.start, chosen.length, top)
    starts = spans.starts.tolist()
    ranges = [(s, s + chosen.length) for s in starts]
    return MatchResult(chosen, starts, spans.matched.tolist(), spans.candidates, [t.summary(ranges) for t in tracks])

