"""Names of recorded quantities and of single units: the public naming contract.

A quantity is ``"{path}.l{layer}.{dir}.{kind}"`` (``rnn.l0.fwd.f``), a unit is
``"{quantity}:{index}"`` (``rnn.l1.fwd.h:37``, 0-based). ``path`` is the module's name in
``model.named_modules()``; a recorded root that is itself the recurrent module, whatever its
own class, is named by `root_name` after torch's class it derives from (``lstm``, ``gru``,
``lstmcell``). LSTM kinds follow torch's
gate order (i, f, g, o) then the states c and h, plus m = o*tanh(c) when the LSTM
has a projection (m_t in Sak et al. 2014); GRU kinds follow torch's r, z, n then h.
"""
from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import NamedTuple

from gatescope.errors import GatescopeError, shown
from gatescope.numbers import whole_number

# The kind lists live in gatescope.kinds; they are re-exported here for the code that names quantities.
from gatescope.kinds import (  # noqa: E402,F401
    ALL_KINDS,
    DIRECTIONS,
    GRU_KINDS,
    LSTM_KINDS,
    LSTM_PROJ_KINDS,
    SIGMOID_KINDS,
    CellType,
)

MAX_UNITS = 10**9  # a unit index at or past this is out of range in any model (and a layer index has 9 digits at most)

# ASCII digits only, and few of them: int() refuses "²" and numbers beyond Python's int-string limit
_NAME = re.compile(
    rf"^(?P<path>.+)\.l(?P<layer>[0-9]{{1,9}})\.(?P<direction>{'|'.join(DIRECTIONS)})\.(?P<kind>[a-z])$"
)


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


RECURRENT_CLASSES: tuple[str, ...] = ("LSTM", "GRU", "RNN", "LSTMCell", "GRUCell", "RNNCell")


def recurrent_class(module: object) -> str | None:
    """torch's recurrent class ``module`` is an instance of (``"LSTM"``, ``"GRU"``, ``"RNN"``, ``"LSTMCell"``,
    ``"GRUCell"``, ``"RNNCell"``), read from its class hierarchy (no torch import); for another module
    that declares a ``cell_type`` (gatescope.kinds.CellType), that type's name; else None."""
    for cls in type(module).__mro__:
        if cls.__name__ in RECURRENT_CLASSES and cls.__module__.startswith("torch.nn"):
            return cls.__name__
    own = getattr(module, "cell_type", None)
    return own.name if isinstance(own, CellType) else None


def root_name(module: object) -> str:
    """The path of a recurrent module that is the recorded root itself: torch's class name in lower case
    (a user's ``class MyLSTM(nn.LSTM)`` is ``lstm``, as a bare LSTM state dict is)."""
    cls = recurrent_class(module)
    if cls is None:
        raise GatescopeError(f"{type(module).__name__} is not a recurrent module (LSTM, GRU, RNN, their cells, "
                             "or a module declaring a cell_type)")
    return cls.lower()


def format_name(path: str, layer: int, direction: str, kind: str) -> str:
    """``format_name("rnn", 0, "fwd", "f") == "rnn.l0.fwd.f"``."""
    return f"{path}.l{layer}.{direction}.{kind}"


def parse_name(name: str) -> QuantityName:
    """Split ``"encoder.rnn.l1.bwd.c"`` into its parts; a malformed name raises GatescopeError."""
    match = _NAME.match(name)
    if match is None or match["kind"] not in ALL_KINDS:
        raise GatescopeError(
            f"not a quantity name: {shown(name)} (expected PATH.lLAYER.fwd|bwd.KIND, e.g. rnn.l0.fwd.h)"
        )
    return QuantityName(match["path"], int(match["layer"]), match["direction"], match["kind"])


def canonical_order(names: Iterable[str], paths: Sequence[str] = ()) -> list[str]:
    """Quantity names in module, layer, direction and kind order (modules in ``paths`` order first)."""
    rank = {path: k for k, path in enumerate(paths)}

    def key(name: str) -> tuple:
        path, layer, direction, kind = parse_name(name)
        return (rank.get(path, len(rank)), path, layer, DIRECTIONS.index(direction), ALL_KINDS.index(kind))

    return sorted(names, key=key)


def format_unit(name: str, index: int) -> str:
    """``format_unit("rnn.l1.fwd.h", 37) == "rnn.l1.fwd.h:37"``."""
    return f"{name}:{index}"


def check_unit_indices(name: str, indices: Iterable[int], width: int, where: str = "") -> None:
    """Raise GatescopeError unless every index lies in 0..width-1, the units of quantity ``name``: the one check
    of typed or given unit indices (interventions, selections, unit names), in the words
    ``{where}unit(s) -1, 9 out of range; rnn.l0.fwd.h has 8 units (0..7)``."""
    bad = [index for index in indices if not 0 <= index < width]
    if bad:
        raise GatescopeError(f"{where}unit(s) {', '.join(map(str, bad))} out of range; "
                             f"{name} has {width} units (0..{width - 1})")


def parse_unit(unit: str) -> UnitName:
    """Split ``"rnn.l1.fwd.h:37"`` into ("rnn.l1.fwd.h", 37); malformed input raises GatescopeError."""
    name, sep, index = unit.strip().rpartition(":")
    number = whole_number(index)
    if not sep or number is None or number < 0:
        raise GatescopeError(f"not a unit name: {shown(unit)} (expected QUANTITY:INDEX, e.g. rnn.l1.fwd.h:37)")
    if number >= MAX_UNITS:
        raise GatescopeError(f"unit {shown(unit)}: the index is out of range (no layer has {MAX_UNITS:,} units)")
    parse_name(name)
    return UnitName(name, number)
