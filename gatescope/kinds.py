"""The registry of cell types and their recorded kinds: the one place that knows them.

Every quantity gatescope records is a *kind* (one letter, the last part of its name: ``rnn.l0.fwd.f``)
of a *cell type*. A `CellType` says declaratively what a cell computes: its kinds in step order, the
kinds its weight row blocks compute, its activations and their parameters, peepholes, coupled gates,
clipping, its memory gate. The recorder, the engine, the checkpoint readers, saturation, colour
scales and the analysis layer read it from here; nothing else lists kinds or variants.

The families (the kinds follow torch's gate order, torch/nn/modules/rnn.py, then the states):

- LSTM (Hochreiter & Schmidhuber 1997, with the forget gate of Gers et al. 2000): ``i f g o c h``, and
  ``m`` = o*tanh(c), the unprojected output, when ``proj_size > 0`` (m_t in Sak et al. 2014). Variants:
  peepholes (Gers & Schmidhuber 2000: i and f see c_{t-1}, o sees c_t), coupled gates (ONNX
  ``input_forget=1``: f = 1 - i; TF's CoupledInputForgetGateLSTMCell: i = 1 - f), other activations
  (Keras' hard_sigmoid, ONNX's activation list), clipping (ONNX ``clip``; TF ``cell_clip``, ``proj_clip``)
  and TF's run-time ``forget_bias``.
- GRU (Cho et al. 2014, in torch's formulation where the reset gate multiplies ``W_hn h + b_hn``,
  i.e. "reset after" / ONNX ``linear_before_reset=1``): ``r z n h``; ``reset_after=False`` is the
  original GRU (Keras ``reset_after=False``, ONNX ``linear_before_reset=0``).
- RNN (Elman 1990; torch's nn.RNN): ``h`` = tanh or relu (W_ih x + b_ih + W_hh h + b_hh).
- sLSTM and mLSTM (Beck et al. 2024, xLSTM; recorded from the xlstm package, gatescope.recorder.xlstm):
  sLSTM ``i f g o c d s h`` per unit (the paper's i f z o c n m h: g is its cell input z, d its normaliser n,
  s its stabiliser m); mLSTM ``i f s`` per head, ``d o h`` per unit, ``v`` the matrix memory C on request.
  Their exponential gates are recorded as the cell applies them, after stabilisation (in 0..1).
- minGRU and minLSTM (Feng et al. 2024; minGRU-pytorch, gatescope.recorder.mingru): minGRU ``x n h``
  (x its gate z, which weights the new candidate, unlike torch's z), minLSTM ``f i p t n h`` (p, t the
  normalised f' and i').

A kind keeps its meaning across cell types, and its *range* is the cell type's: a hard sigmoid gate
lives in 0..1, a relu RNN's h in 0..inf, an ONNX gate under Relu is unbounded above. Ask
``cell.range_of(kind)``; ``KINDS[kind].range`` is the range in the cell that defines the kind.

Imports nothing but the standard library (the browser reads it without torch or numpy).
"""
from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass
from typing import Any, Literal


# -- ranges -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Range:
    """The interval a kind's values live in (``-inf`` / ``inf`` for an open side)."""

    low: float
    high: float

    @property
    def bounded(self) -> bool:
        return math.isfinite(self.low) and math.isfinite(self.high)

    @property
    def shown(self) -> Range:
        """The interval values are read on: the range itself when bounded, else tanh of it (values are
        squashed by tanh, as the cell state c is by h = o * tanh(c))."""
        return self if self.bounded else Range(math.tanh(self.low), math.tanh(self.high))

    def __mul__(self, other: Range) -> Range:
        """The range of a product of two values, one from each range."""
        ends = [_times(a, b) for a in (self.low, self.high) for b in (other.low, other.high)]
        return Range(min(ends), max(ends))

    def hull(self, other: Range) -> Range:
        """The smallest range holding both (a convex combination of their values)."""
        return Range(min(self.low, other.low), max(self.high, other.high))

    def one_minus(self) -> Range:
        """The range of 1 - x (a coupled gate)."""
        return Range(1 - self.high, 1 - self.low)

    def __str__(self) -> str:
        return f"{_num(self.low)}..{_num(self.high)}"


def _times(a: float, b: float) -> float:
    return 0.0 if a == 0 or b == 0 else a * b  # 0 * inf is 0 here: a zero factor holds its product at 0


def _num(x: float) -> str:
    return "inf" if x == math.inf else "-inf" if x == -math.inf else f"{x:g}"


UNIT = Range(0.0, 1.0)  # a sigmoid gate
SIGNED = Range(-1.0, 1.0)  # a tanh
NONNEGATIVE = Range(0.0, math.inf)  # relu, softplus
REAL = Range(-math.inf, math.inf)  # the LSTM cell state, a linear map


# -- activations --------------------------------------------------------------------------------
# name -> (parameters it reads: "", "a" (alpha) or "ab" (alpha, beta)); the formulas are ONNX's
# (onnx/defs/rnn/defs.cc), computed in gatescope.recorder.activations
ACTIVATIONS: dict[str, str] = {
    "sigmoid": "", "tanh": "", "relu": "",
    "affine": "ab",  # alpha * x + beta
    "leaky_relu": "a",  # x if x >= 0 else alpha * x
    "thresholded_relu": "a",  # x if x > alpha else 0
    "scaled_tanh": "ab",  # alpha * tanh(beta * x)
    "hard_sigmoid": "ab",  # min(max(alpha * x + beta, 0), 1)
    "elu": "a",  # x if x >= 0 else alpha * (exp(x) - 1)
    "softsign": "",  # x / (1 + |x|)
    "softplus": "",  # log(1 + exp(x))
}


@dataclass(frozen=True)
class Activation:
    """A pointwise activation with its parameters (``alpha``, ``beta``: 0 where it reads none)."""

    name: str
    alpha: float = 0.0
    beta: float = 0.0

    def __post_init__(self) -> None:
        if self.name not in ACTIVATIONS:
            raise ValueError(f"unknown activation {self.name!r} (known: {', '.join(ACTIVATIONS)})")
        reads = ACTIVATIONS[self.name]
        if ("a" not in reads and self.alpha) or ("b" not in reads and self.beta):
            raise ValueError(f"{self.name} takes {'no parameters' if not reads else 'only alpha'}")

    @property
    def range(self) -> Range:
        """Where its outputs lie, for any input."""
        a, b = self.alpha, self.beta
        if self.name == "sigmoid" or self.name == "hard_sigmoid" and a != 0:
            return UNIT
        if self.name == "hard_sigmoid":  # a constant: clip(beta, 0, 1)
            v = min(max(b, 0.0), 1.0)
            return Range(v, v)
        if self.name in ("tanh", "softsign"):
            return SIGNED
        if self.name == "scaled_tanh":
            bound = abs(a) if b else 0.0
            return Range(-bound, bound) if b else Range(0.0, 0.0)
        if self.name in ("relu", "softplus"):
            return NONNEGATIVE
        if self.name == "thresholded_relu":
            return NONNEGATIVE if a >= 0 else REAL  # a negative threshold lets values in (alpha, 0) through
        if self.name == "elu":
            return Range(min(-a, 0.0), math.inf) if a >= 0 else REAL
        if self.name == "leaky_relu":
            return NONNEGATIVE if a == 0 else REAL
        return Range(b, b) if a == 0 else REAL  # affine

    def __str__(self) -> str:
        """``sigmoid``, ``hard_sigmoid(0.2,0.5)``, ``leaky_relu(0.01)``: what `parse_activation` reads."""
        reads = ACTIVATIONS[self.name]
        args = [self.alpha, self.beta][: len(reads)]
        return self.name + (f"({','.join(repr(float(x)) for x in args)})" if args else "")


_ACTIVATION_TEXT = re.compile(r"^(?P<name>[a-z_]+)(?:\((?P<args>[^()]*)\))?$")


def parse_activation(text: str) -> Activation:
    """The activation written ``str(activation)`` wrote; ValueError on anything else."""
    match = _ACTIVATION_TEXT.match(text.strip()) if isinstance(text, str) else None
    if match is None or match["name"] not in ACTIVATIONS:
        raise ValueError(f"not an activation: {text!r} (known: {', '.join(ACTIVATIONS)})")
    reads = ACTIVATIONS[match["name"]]
    try:
        args = [] if match["args"] is None else [float(x) for x in match["args"].split(",")]
    except ValueError:
        raise ValueError(f"not an activation: {text!r} (its parameters are not numbers)") from None
    if len(args) != len(reads) or not all(math.isfinite(x) for x in args):
        raise ValueError(f"not an activation: {text!r} ({match['name']} takes {len(reads)} finite parameter(s))")
    return Activation(match["name"], *args)


SIGMOID = Activation("sigmoid")
TANH = Activation("tanh")
RELU = Activation("relu")
HARD_SIGMOID_KERAS2 = Activation("hard_sigmoid", 0.2, 0.5)  # Keras 1/2, tf.keras: clip(0.2 x + 0.5, 0, 1)
HARD_SIGMOID = Activation("hard_sigmoid", 1 / 6, 0.5)  # Keras 3, torch's Hardsigmoid: relu6(x + 3) / 6


# -- kinds --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Kind:
    """One recorded quantity of a cell, e.g. the LSTM forget gate ``f``."""

    symbol: str  # one lowercase letter, the last part of a quantity name (rnn.l0.fwd.f)
    title: str  # what a reader calls it
    range: Range  # its range in the cell type that defines it; a cell type's own: CellType.range_of
    is_gate: bool = False  # a gate: it multiplies another quantity (i f o, r z)


KINDS: dict[str, Kind] = {
    k.symbol: k
    for k in (
        Kind("i", "input gate", UNIT, True),
        Kind("f", "forget gate", UNIT, True),
        Kind("g", "candidate cell (c~)", SIGNED),
        Kind("o", "output gate", UNIT, True),
        Kind("c", "cell state", REAL),
        Kind("m", "unprojected output o*tanh(c)", SIGNED),
        Kind("r", "reset gate", UNIT, True),
        Kind("z", "update gate", UNIT, True),
        Kind("n", "candidate state", SIGNED),
        Kind("d", "normaliser state", NONNEGATIVE),  # xLSTM's n
        Kind("s", "stabiliser state (log scale)", REAL),  # xLSTM's m
        Kind("v", "matrix memory C", REAL),  # the mLSTM's C, heads x d x d per step
        Kind("x", "candidate gate (weights the new candidate)", UNIT, True),  # minGRU's z
        Kind("p", "normalised forget gate f/(f+i)", UNIT, True),  # minLSTM's f'
        Kind("t", "normalised input gate i/(f+i)", UNIT, True),  # minLSTM's i'
        Kind("h", "hidden state", SIGNED),
    )
}
"""Every kind, in the canonical order of names within a layer (LSTM kinds, then GRU kinds, h last)."""

ALL_KINDS: tuple[str, ...] = tuple(KINDS)
SIGMOID_KINDS: frozenset[str] = frozenset(k for k, v in KINDS.items() if v.is_gate)  # i f o r z
SIGNED_KINDS: frozenset[str] = frozenset(k for k, v in KINDS.items() if v.range == SIGNED)  # g m n h
DIRECTIONS: tuple[str, ...] = ("fwd", "bwd")


# -- cell types ---------------------------------------------------------------------------------
Coupling = Literal["forget_from_input", "input_from_forget"]
"""``forget_from_input``: f = 1 - i (ONNX ``input_forget=1`` as onnxruntime computes it: f's weights
unused); ``input_from_forget``: i = 1 - f (TF's CoupledInputForgetGateLSTMCell)."""
COUPLINGS: dict[str, tuple[str, str]] = {"forget_from_input": ("f", "i"), "input_from_forget": ("i", "f")}
# coupling -> (the derived gate, the gate it is 1 minus)


@dataclass(frozen=True)
class CellType:
    """What a recurrent cell computes, declared: read by the engine, the readers and the analysis layer.

    The defaults are torch's own cells; `variant` makes the others (``LSTM.variant(peepholes=True)``).
    """

    name: str  # the family: LSTM, GRU, RNN
    kinds: tuple[str, ...]  # recorded kinds, in the order a step computes them
    blocks: tuple[str, ...]  # the kind each block of rows of weight_ih / weight_hh / biases computes
    memory_gate: str | None  # the gate that keeps the previous state: f (LSTM), z (GRU); None (RNN)
    profile: tuple[str, ...]  # kinds of a unit's gate profile, in Lakretz et al. 2019's Fig. 1 order
    gate_activation: Activation = SIGMOID  # of the gates (Keras recurrent_activation, ONNX f)
    activation: Activation = TANH  # of the candidate g / n and the RNN's h (Keras activation, ONNX g, torch
    # nn.RNN nonlinearity)
    output_activation: Activation = TANH  # LSTM: h = o * output_activation(c) (ONNX h; Keras: = activation)
    reset_after: bool = True  # GRU: torch's formulation (True) or the original reset-before GRU
    peepholes: bool = False  # LSTM: the gates see the cell (weight_ch: i, f on c_{t-1}, o on c_t)
    coupling: Coupling | None = None  # LSTM: one gate computed from the other (COUPLINGS)
    clip: float | None = None  # every block's pre-activation clipped to [-clip, clip] (ONNX clip)
    cell_clip: float | None = None  # LSTM: c clipped to [-cell_clip, cell_clip] (TF)
    proj_clip: float | None = None  # LSTM with proj_size: h clipped to [-proj_clip, proj_clip] (TF)
    forget_bias: float = 0.0  # LSTM: added to f's pre-activation at run time, not stored (TF)
    ranges: tuple[tuple[str, Range], ...] = ()  # (kind, range) where this type's differ from the kind's own

    @property
    def gates(self) -> int:
        """Blocks of rows in weight_ih / weight_hh (4 for the LSTM, 3 for the GRU and a coupled LSTM, 1 for the RNN)."""
        return len(self.blocks)

    @property
    def gate_kinds(self) -> tuple[str, ...]:
        """The kinds the row blocks compute, in row order (i f g o; r z n; h)."""
        return self.blocks

    @property
    def peephole_kinds(self) -> tuple[str, ...]:
        """The gates with a peephole weight, in the order of weight_ch's blocks (i f o, less a coupled one)."""
        return tuple(k for k in self.blocks if k in ("i", "f", "o")) if self.peepholes else ()

    @property
    def coupled(self) -> tuple[str, str] | None:
        """(derived gate, its source): ``("f", "i")`` when f = 1 - i; None when not coupled."""
        return COUPLINGS[self.coupling] if self.coupling else None

    @property
    def is_standard(self) -> bool:
        """Whether this is the family's cell as torch computes it (its native kernels may run it)."""
        return self == CELL_TYPES[self.name] or self == RNN_RELU

    def rows(self, kind: str, hidden: int) -> slice:
        """The rows of weight_ih, weight_hh, bias_ih and bias_hh that compute ``kind``."""
        block = self.blocks.index(kind)
        return slice(block * hidden, (block + 1) * hidden)

    def kinds_for(self, proj_size: int = 0) -> tuple[str, ...]:
        """The kinds recorded for a module of this type (``m`` only for an LSTM with proj_size > 0)."""
        if self.name == "LSTM" and proj_size:
            return self.kinds[:5] + ("m",) + self.kinds[5:]
        return self.kinds

    def range_of(self, kind: str, proj_size: int = 0) -> Range:
        """Where ``kind``'s values lie in this cell type: a range the type declares (``ranges``), else the
        one its activations, coupling and clipping give (LSTM, GRU, RNN), else the kind's own (`KINDS`)."""
        if kind not in self.kinds_for(proj_size):
            raise ValueError(f"{self.name} has no kind {kind!r} (it has {' '.join(self.kinds_for(proj_size))})")
        declared = dict(self.ranges)
        if kind in declared:
            return declared[kind]
        if self.name not in ("LSTM", "GRU", "RNN"):
            return KINDS[kind].range
        if self.coupled and kind == self.coupled[0]:
            return self.gate_activation.range.one_minus()
        if KINDS[kind].is_gate:
            return self.gate_activation.range
        if kind in ("g", "n") or self.name == "RNN":
            return self.activation.range
        if kind == "c":
            return REAL if self.cell_clip is None else Range(-self.cell_clip, self.cell_clip)
        if kind == "m" or (self.name == "LSTM" and not proj_size):  # m = o * output_activation(c)
            return self.range_of("o") * self.output_activation.range
        if self.name == "LSTM":  # h = W_hr m
            return REAL if self.proj_clip is None else Range(-self.proj_clip, self.proj_clip)
        # GRU: h = (1 - z) n + z h_prev, a convex combination of n and the state (from 0) while z is in 0..1
        z = self.range_of("z")
        return self.activation.range.hull(Range(0.0, 0.0)) if 0 <= z.low and z.high <= 1 else REAL

    def variant(self, **changes: Any) -> CellType:
        """This cell type with fields changed, checked (ValueError), its row blocks following a coupling."""
        cell = dataclasses.replace(self, **changes)
        lstm_only = ("peepholes", "coupling", "cell_clip", "proj_clip", "forget_bias")
        if cell.name != "LSTM" and any(getattr(cell, f) != getattr(CELL_TYPES["LSTM"], f) for f in lstm_only):
            raise ValueError(f"{cell.name}: {', '.join(lstm_only)} belong to the LSTM")
        if cell.name != "GRU" and not cell.reset_after:
            raise ValueError("reset_after=False is a GRU's")
        if cell.coupling is not None and cell.coupling not in COUPLINGS:
            raise ValueError(f"coupling {cell.coupling!r}: one of {', '.join(COUPLINGS)}")
        for field in ("clip", "cell_clip", "proj_clip"):
            value = getattr(cell, field)
            if value is not None and not (math.isfinite(value) and value > 0):
                raise ValueError(f"{field} must be a positive number, not {value!r}")
        if not math.isfinite(cell.forget_bias):
            raise ValueError(f"forget_bias must be finite, not {cell.forget_bias!r}")
        if cell.name == "LSTM":
            dropped = cell.coupled[0] if cell.coupled else None
            cell = dataclasses.replace(cell, blocks=tuple(k for k in CELL_TYPES["LSTM"].blocks if k != dropped))
        return cell

    def info(self) -> dict[str, Any]:
        """What differs from the family's torch cell, as JSON values: the trace and checkpoint metadata's
        description (``{}`` for torch's own cells; `cell_type_of` reads it back)."""
        base = CELL_TYPES[self.name]
        out: dict[str, Any] = {}
        for field in VARIANT_FIELDS:
            value = getattr(self, field)
            if value != getattr(base, field):
                out[field] = str(value) if isinstance(value, Activation) else value
        return out

    def describe(self) -> str:
        """``LSTM``, ``LSTM (peepholes, gate_activation=hard_sigmoid(0.2,0.5))``: for messages and inspect."""
        info = self.info()
        parts = [k if v is True else f"{k}={v}" for k, v in info.items()]
        return self.name + (f" ({', '.join(parts)})" if parts else "")


VARIANT_FIELDS: tuple[str, ...] = (
    "gate_activation", "activation", "output_activation", "reset_after", "peepholes", "coupling",
    "clip", "cell_clip", "proj_clip", "forget_bias",
)
"""The fields of a CellType that make a variant of its family (in `CellType.info`'s order)."""

LSTM = CellType("LSTM", ("i", "f", "g", "o", "c", "h"), ("i", "f", "g", "o"), "f", ("g", "i", "f", "c", "o", "h"))
GRU = CellType("GRU", ("r", "z", "n", "h"), ("r", "z", "n"), "z", ("r", "z", "n", "h"))
RNN = CellType("RNN", ("h",), ("h",), None, ("h",))

SILU = Range(-0.2784645427610738, math.inf)  # x * σ(x), its minimum at x = -1.2785
SLSTM = CellType("sLSTM", ("i", "f", "g", "o", "c", "d", "s", "h"), ("i", "f", "g", "o"), "f",
                 ("g", "i", "f", "c", "o", "h"))  # |c| <= d, so h = o c / d is in -1..1
MLSTM = CellType("mLSTM", ("i", "f", "s", "v", "d", "o", "h"), (), "f", ("i", "f", "o", "h"),
                 ranges=(("d", REAL), ("o", SILU), ("h", REAL)))  # d sums keys; o = SiLU(z)
MINGRU = CellType("minGRU", ("x", "n", "h"), ("n", "x"), None, ("x", "n", "h"),
                  ranges=(("n", NONNEGATIVE), ("h", NONNEGATIVE)))  # g(x) > 0; h from h_0 = 0
MINLSTM = CellType("minLSTM", ("f", "i", "p", "t", "n", "h"), ("n", "f", "i"), "p", ("f", "i", "p", "t", "n", "h"),
                   ranges=(("n", NONNEGATIVE), ("h", NONNEGATIVE)))

CELL_TYPES: dict[str, CellType] = {"LSTM": LSTM, "GRU": GRU, "RNN": RNN, "sLSTM": SLSTM, "mLSTM": MLSTM,
                                   "minGRU": MINGRU, "minLSTM": MINLSTM}
GRU_RESET_BEFORE = GRU.variant(reset_after=False)
RNN_RELU = RNN.variant(activation=RELU)  # torch's nn.RNN(nonlinearity="relu")
MEMORY_GATES: tuple[str, ...] = tuple(dict.fromkeys(c.memory_gate for c in CELL_TYPES.values() if c.memory_gate))

LSTM_KINDS = LSTM.kinds_for(0)
LSTM_PROJ_KINDS = LSTM.kinds_for(1)
GRU_KINDS = GRU.kinds


def kinds_by_cell() -> str:
    """Every cell type's kinds in one line, for help texts and errors: ``LSTM i f g o c h (m with proj_size);
    GRU r z n h; ...``."""
    parts = []
    for cell in CELL_TYPES.values():
        extra = [k for k in cell.kinds_for(proj_size=1) if k not in cell.kinds]
        parts.append(f"{cell.name} {' '.join(cell.kinds)}" + (f" ({' '.join(extra)} with proj_size)" if extra else ""))
    return "; ".join(parts)


def cell_type(name: str) -> CellType:
    """The family of a module class name: ``LSTM``, ``GRU``, ``RNN``, or their ``...Cell`` (torch's or gatescope's)."""
    base = name[: -len("Cell")] if name.endswith("Cell") else name
    try:
        return CELL_TYPES[base]
    except KeyError:
        cells = ", ".join(f"{c}, {c}Cell" for c in CELL_TYPES)
        raise ValueError(f"not a recurrent cell type: {name!r} (expected one of {cells})") from None


def cell_type_of(info: dict[str, Any]) -> CellType:
    """The cell type a description gives (``{"cell": "LSTM", "peepholes": true, ...}``: a trace's
    ``modules`` entry, a checkpoint's ``cells`` metadata); ValueError names what is wrong."""
    cell = cell_type(str(info.get("cell", "")))
    changes: dict[str, Any] = {}
    for field in VARIANT_FIELDS:
        if field in info:
            value = info[field]
            changes[field] = parse_activation(value) if field.endswith("activation") else value
    return cell.variant(**changes) if changes else cell


def module_cell_type(module: object) -> CellType:
    """The cell type of a recurrent module: its own ``cell_type`` attribute (gatescope's variant modules),
    else its family by class name, with torch's nn.RNN ``nonlinearity`` and a GRU's ``reset_after``."""
    own = getattr(module, "cell_type", None)
    if isinstance(own, CellType):
        return own
    names = [cls.__name__ for cls in type(module).__mro__]
    base = next((n for n in names if n.removesuffix("Cell") in CELL_TYPES), type(module).__name__)
    found = cell_type(base)
    if found is GRU and getattr(module, "reset_after", True) is False:
        return GRU_RESET_BEFORE
    if found is RNN and getattr(module, "nonlinearity", "tanh") == "relu":
        return RNN_RELU
    return found


def kind_range(kind: str, cell: CellType | None = None, proj_size: int = 0) -> Range:
    """The range of ``kind``: in ``cell`` when given, else in the cell type that defines it."""
    return KINDS[kind].range if cell is None else cell.range_of(kind, proj_size)


def described_range(modules: Any, path: str, kind: str) -> Range:
    """The range of ``kind`` in the module ``path`` as a trace's metadata ``modules`` (or a model's
    ``modules_info``) describes it: its cell type's (`cell_type_of`, with its proj_size); the kind's own
    where no readable entry describes the module (an older trace)."""
    for info in modules if isinstance(modules, list) else ():
        if isinstance(info, dict) and info.get("name") == path:
            try:
                return cell_type_of(info).range_of(kind, int(info.get("proj_size") or 0))
            except (ValueError, TypeError):
                break
    return KINDS[kind].range


def module_directions(module: Any) -> tuple[str, ...]:
    """The directions a recurrent module (or its description) runs: ``fwd`` (and ``bwd`` when bidirectional);
    ``bwd`` alone for a reverse-only module (ONNX ``direction="reverse"``, gatescope.recorder.variants)."""
    get = module.get if isinstance(module, dict) else lambda key, default: getattr(module, key, default)
    if get("reverse_only", False):
        return DIRECTIONS[1:]
    return DIRECTIONS if get("bidirectional", False) else DIRECTIONS[:1]


def param_suffix(layer: int, direction: str, is_cell: bool = False) -> str:
    """torch's parameter-name suffix: ``_l{layer}`` (+ ``_reverse`` for bwd); none for LSTMCell / GRUCell."""
    if is_cell:
        return ""
    return f"_l{layer}" + ("_reverse" if direction == "bwd" else "")


def describe(kind: str) -> str:
    """``describe("f") == "f (forget gate)"``, for messages and help."""
    return f"{kind} ({KINDS[kind].title})"


def head_of(info: dict[str, Any], kind: str, unit: int) -> tuple[int, int] | None:
    """(head, index within the head) of unit ``unit`` of quantity ``kind`` of a module with heads (an sLSTM or
    mLSTM: its description, a trace's metadata ``modules`` entry, has ``num_heads``), or None without heads.

    Units are head-major: a per-unit kind's unit u is unit u % DH of head u // DH, a per-head kind's unit is
    its head (index 0), the mLSTM's matrix memory ``v`` holds each head's rows one after the other."""
    heads = info.get("num_heads")
    if not heads:
        return None
    width = (info.get("widths") or {}).get(kind, info["hidden_size"])
    per_head = max(1, width // heads)
    return unit // per_head, unit % per_head
