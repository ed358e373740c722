"""The registry of cell types and their recorded kinds: the one place that knows them.

Every quantity gatescope records is a *kind* of a *cell type*. The kinds follow torch's gate order
(torch/nn/modules/rnn.py: rows of ``weight_ih`` are i, f, g, o for the LSTM and r, z, n for the
GRU), then the states:

- LSTM (Hochreiter & Schmidhuber 1997, with torch's forget gate): ``i f g o c h``, and ``m`` =
  o*tanh(c), the unprojected output, when ``proj_size > 0`` (m_t in Sak et al. 2014).
- GRU (Cho et al. 2014, in torch's formulation where the reset gate multiplies ``W_hn h + b_hn``,
  i.e. "reset after" / ONNX ``linear_before_reset=1``): ``r z n h``.
- GRU, reset before (the original Cho et al. 2014 GRU, Keras ``reset_after=False``, ONNX
  ``linear_before_reset=0``): the reset gate multiplies h before the recurrent product; the same
  kinds ``r z n h``.

What a kind is (its range, its title, whether it is a gate) and what a cell type has (its kinds, the
number of gate blocks in its weights and the rows of each, its memory gate, torch's parameter
suffixes) are read from here by the recorder, the engine, the loaders, the analysis layer and the
browser alike.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Range = Literal["unit", "signed", "unbounded"]
"""``unit``: a sigmoid gate in 0..1; ``signed``: a tanh-range value in -1..1; ``unbounded``: the LSTM cell."""


@dataclass(frozen=True)
class Kind:
    """One recorded quantity of a cell, e.g. the LSTM forget gate ``f``."""

    symbol: str  # one letter, the last part of a quantity name (rnn.l0.fwd.f)
    title: str  # what a reader calls it
    range: Range

    @property
    def is_gate(self) -> bool:
        """A sigmoid gate (0..1): i f o r z."""
        return self.range == "unit"


KINDS: dict[str, Kind] = {
    k.symbol: k
    for k in (
        Kind("i", "input gate", "unit"),
        Kind("f", "forget gate", "unit"),
        Kind("g", "candidate cell (c~)", "signed"),
        Kind("o", "output gate", "unit"),
        Kind("c", "cell state", "unbounded"),
        Kind("m", "unprojected output o*tanh(c)", "signed"),
        Kind("r", "reset gate", "unit"),
        Kind("z", "update gate", "unit"),
        Kind("n", "candidate state", "signed"),
        Kind("h", "hidden state", "signed"),
        Kind("u", "retrieved value h~", "unbounded"),
        Kind("s", "matrix memory C", "unbounded"),
        Kind("p", "normalised forget gate f'", "unit"),
        Kind("q", "normalised input gate i'", "unit"),
    )
}
"""Every kind, in the canonical order of names within a layer (LSTM kinds, then GRU kinds, h last)."""

ALL_KINDS: tuple[str, ...] = tuple(KINDS)
SIGMOID_KINDS: frozenset[str] = frozenset(k for k, v in KINDS.items() if v.is_gate)  # i f o r z
SIGNED_KINDS: frozenset[str] = frozenset(k for k, v in KINDS.items() if v.range == "signed")  # g m n h
DIRECTIONS: tuple[str, ...] = ("fwd", "bwd")


@dataclass(frozen=True)
class CellType:
    """A recurrent cell: its kinds in step order, its weight blocks, its memory gate."""

    name: str  # "LSTM" or "GRU"
    kinds: tuple[str, ...]  # recorded kinds, in the order a step computes them
    gates: int  # blocks of rows in weight_ih / weight_hh (4 for the LSTM, 3 for the GRU)
    memory_gate: str  # the gate that keeps the previous state: f (LSTM), z (GRU)
    profile: tuple[str, ...]  # kinds of a unit's gate profile, in Lakretz et al. 2019's Fig. 1 order
    reset_after: bool = True  # GRU only: torch's formulation (True) or the original reset-before GRU

    @property
    def gate_kinds(self) -> tuple[str, ...]:
        """The kinds computed by the row blocks of weight_ih / weight_hh, in torch's order (i f g o; r z n)."""
        return self.kinds[: self.gates]

    def rows(self, kind: str, hidden: int) -> slice:
        """The rows of weight_ih, weight_hh, bias_ih and bias_hh that compute gate ``kind``."""
        block = self.gate_kinds.index(kind)
        return slice(block * hidden, (block + 1) * hidden)

    def kinds_for(self, proj_size: int = 0) -> tuple[str, ...]:
        """The kinds recorded for a module of this type (``m`` only for an LSTM with proj_size > 0)."""
        if self.name == "LSTM" and proj_size:
            return self.kinds[:5] + ("m",) + self.kinds[5:]
        return self.kinds


LSTM = CellType("LSTM", ("i", "f", "g", "o", "c", "h"), 4, "f", ("g", "i", "f", "c", "o", "h"))
GRU = CellType("GRU", ("r", "z", "n", "h"), 3, "z", ("r", "z", "n", "h"))
GRU_RESET_BEFORE = CellType("GRU", ("r", "z", "n", "h"), 3, "z", ("r", "z", "n", "h"), reset_after=False)

SLSTM = CellType("sLSTM", ("i", "f", "z", "o", "c", "n", "m", "h"), 4, "f", ("z", "i", "f", "c", "o", "h"))
MLSTM = CellType("mLSTM", ("i", "f", "m", "s", "n", "u", "o", "h"), 0, "f", ("i", "f", "o", "h"))
MINGRU = CellType("minGRU", ("z", "n", "h"), 2, "z", ("z", "n", "h"))
MINLSTM = CellType("minLSTM", ("f", "i", "p", "q", "n", "h"), 3, "p", ("f", "i", "p", "q", "n", "h"))

CELL_TYPES: dict[str, CellType] = {"LSTM": LSTM, "GRU": GRU}
MEMORY_GATES: tuple[str, ...] = tuple(dict.fromkeys(c.memory_gate for c in CELL_TYPES.values()))  # f z

LSTM_KINDS = LSTM.kinds_for(0)
LSTM_PROJ_KINDS = LSTM.kinds_for(1)
GRU_KINDS = GRU.kinds


def cell_type(name: str) -> CellType:
    """The cell type of a module class name: ``LSTM``, ``GRU``, ``LSTMCell``, ``GRUCell`` (torch's or gatescope's)."""
    base = name[: -len("Cell")] if name.endswith("Cell") else name
    try:
        return CELL_TYPES[base]
    except KeyError:
        raise ValueError(f"not a recurrent cell type: {name!r} (expected one of LSTM, GRU, LSTMCell, GRUCell)") from None


def module_cell_type(module: object) -> CellType:
    """The cell type of a recurrent module, with its variant: `GRU_RESET_BEFORE` for a GRU whose
    ``reset_after`` attribute is False (gatescope.recorder.rnn.ResetBeforeGRU), else by class name."""
    names = [cls.__name__ for cls in type(module).__mro__]
    base = next((n for n in names if n.removesuffix("Cell") in CELL_TYPES), type(module).__name__)
    found = cell_type(base)
    if found is GRU and getattr(module, "reset_after", True) is False:
        return GRU_RESET_BEFORE
    return found


def param_suffix(layer: int, direction: str, is_cell: bool = False) -> str:
    """torch's parameter-name suffix: ``_l{layer}`` (+ ``_reverse`` for bwd); none for LSTMCell / GRUCell."""
    if is_cell:
        return ""
    return f"_l{layer}" + ("_reverse" if direction == "bwd" else "")


def describe(kind: str) -> str:
    """``describe("f") == "f (forget gate)"``, for messages and help."""
    return f"{kind} ({KINDS[kind].title})"
