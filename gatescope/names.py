"""Names of recorded quantities and of single units: the public naming contract.

A quantity is ``"{path}.l{layer}.{dir}.{kind}"`` (``rnn.l0.fwd.f``), a unit is
``"{quantity}:{index}"`` (``rnn.l1.fwd.h:37``, 0-based). LSTM kinds follow torch's
gate order (i, f, g, o) then the states c and h, plus m = o*tanh(c) when the LSTM
has a projection (m_t in Sak et al. 2014); GRU kinds follow torch's r, z, n then h.
"""
from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import NamedTuple

from gatescope.errors import GatescopeError

LSTM_KINDS = ("i", "f", "g", "o", "c", "h")
LSTM_PROJ_KINDS = ("i", "f", "g", "o", "c", "m", "h")
GRU_KINDS = ("r", "z", "n", "h")
ALL_KINDS = ("i", "f", "g", "o", "c", "m", "r", "z", "n", "h")
SIGMOID_KINDS = frozenset("ifozr")  # gates in 0..1; the rest (g c m n h) lie in -1..1 (c is unbounded)
DIRECTIONS = ("fwd", "bwd")

_NAME = re.compile(r"^(?P<path>.+)\.l(?P<layer>\d+)\.(?P<direction>fwd|bwd)\.(?P<kind>[a-z])$")


class QuantityName(NamedTuple):
    """The parts of a recorded quantity's name."""

    path: str
    layer: int
    direction: str
    kind: str

    def __str__(self) -> str:
        return format_name(self.path, self.layer, self.direction, self.kind)


class UnitName(NamedTuple):
    """A quantity name and a unit index within it."""

    name: str
    index: int

    def __str__(self) -> str:
        return format_unit(self.name, self.index)


def format_name(path: str, layer: int, direction: str, kind: str) -> str:
    """``format_name("rnn", 0, "fwd", "f") == "rnn.l0.fwd.f"``."""
    return f"{path}.l{layer}.{direction}.{kind}"


def parse_name(name: str) -> QuantityName:
    """Split ``"encoder.rnn.l1.bwd.c"`` into its parts; a malformed name raises GatescopeError."""
    match = _NAME.match(name)
    if match is None or match["kind"] not in ALL_KINDS:
        raise GatescopeError(
            f"not a quantity name: {name!r} (expected PATH.lLAYER.fwd|bwd.KIND, e.g. rnn.l0.fwd.h)"
        )
    return QuantityName(match["path"], int(match["layer"]), match["direction"], match["kind"])


def canonical_order(names: Iterable[str], paths: Sequence[str] = ()) -> list[str]:
    """Quantity names in module, layer, direction and kind order (modules in ``paths`` order first)."""
    rank = {path: k for k, path in enumerate(paths)}

    def key(name: str) -> tuple:
        path, layer, direction, kind = parse_name(name)
        return (rank.get(path, len(rank)), path, layer, DIRECTIONS.index(direction), _KIND_ORDER.index(kind))

    return sorted(names, key=key)


_KIND_ORDER = ("i", "f", "g", "o", "c", "m", "r", "z", "n", "h")


def format_unit(name: str, index: int) -> str:
    """``format_unit("rnn.l1.fwd.h", 37) == "rnn.l1.fwd.h:37"``."""
    return f"{name}:{index}"


def parse_unit(unit: str) -> UnitName:
    """Split ``"rnn.l1.fwd.h:37"`` into ("rnn.l1.fwd.h", 37); malformed input raises GatescopeError."""
    name, sep, index = unit.strip().rpartition(":")
    if not sep or not index.isdigit():
        raise GatescopeError(f"not a unit name: {unit!r} (expected QUANTITY:INDEX, e.g. rnn.l1.fwd.h:37)")
    parse_name(name)
    return UnitName(name, int(index))
