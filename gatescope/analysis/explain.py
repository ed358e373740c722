"""Explain a step: one unit's gates at one timestep, split into the terms the cell adds up, with its own numbers.

The seed's picture of an LSTM cell (Olah 2015, "Understanding LSTM Networks"), computed: each gate's
pre-activation split into the input term W x_t, the recurrent term U h_{t-1} and the bias, then the activation;
``c_t = f_t·c_{t-1} + i_t·g_t`` with both products; ``h_t = o_t·tanh(c_t)``. The GRU the same way (torch's
rows r, z, n): ``n = tanh(W_in x + b_in + r·(W_hn h + b_hn))`` (the reset-before GRU of Cho et al. 2014:
``W_hn (r ⊙ h) + b_hn``), ``h_t = (1 - z)·n + z·h_{t-1}``; the plain RNN ``h_t = tanh(W x + U h + b)``. Every
variant the registry of cell types holds (gatescope.kinds) is explained as the engine computes it: its activations,
peephole terms (Gers & Schmidhuber 2000), a coupled gate (1 minus its source), clipping and TF's forget bias. The
recurrent term is broken down into the upstream
units that move it most (signed: "the forget gate closed because h:12 and h:70 pushed it down"), the input term
into the previous layer's units (layer 0: the input's features ``x:j``).

Every term is computed from the weights in float64 and checked in the same call against what the model's own
run recorded (gatescope.record): the terms against the whole pre-activation computed as one product, the
activation of the pre-activation against the recorded gate, the products against the recorded c and h. The
largest difference is the explanation's ``check``; over 1e-4 it is said (a GatescopeWarning).
"""
from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence, pad_packed_sequence

from gatescope.checkpoints.loader import LoadedModel
from gatescope.errors import GatescopeError, GatescopeWarning
from gatescope.kinds import KINDS, module_cell_type, param_suffix
from gatescope.names import format_name, format_unit, parse_name
from gatescope.recorder.recordable import check_units, find_recurrent, is_cell
from gatescope.recorder.activations import apply
from gatescope.recorder.recording import record

CHECK_TOLERANCE = 1e-4  # a larger difference between the terms and the recording is said, not hidden
CANDIDATES = ("g", "n", "h")  # the blocks a cell's activation computes; every other block is a gate


@dataclass(frozen=True)
class Upstream:
    """One unit's signed share of a term: ``weight · value`` of the unit ``unit`` at step ``at``."""

    unit: str
    at: int
    contribution: float


@dataclass(frozen=True)
class GateTerms:
    """A gate of one unit at one step: its pre-activation as the sum of its terms, and its value."""

    kind: str
    title: str
    input: float  # W x_t (for the GRU's n: W_in x_t)
    recurrent: float  # U h_{t-1} (the GRU's n: r·(W_hn h), or W_hn (r ⊙ h) reset-before)
    bias: float  # b_ih + b_hh (the GRU's n: b_in + r·b_hn, or b_in + b_hn reset-before)
    preactivation: float | None  # the sum of the terms (None for a coupled gate: it is 1 minus its source)
    activation: str  # e.g. sigmoid, hard_sigmoid(0.2,0.5), or "1 - i" for a coupled gate
    value: float  # as the model's run recorded it
    peephole: float = 0.0  # w_c·c (i, f: c_{t-1}; o: c_t), peephole LSTMs only
    forget_bias: float = 0.0  # TF's forget_bias, added to f at run time
    clipped: bool = False  # the pre-activation was clipped (ONNX clip) before the activation
    upstream: list[Upstream] = field(default_factory=list)  # the recurrent term's largest shares
    inputs: list[Upstream] = field(default_factory=list)  # the input term's largest shares


@dataclass(frozen=True)
class StepExplanation:
    """One unit's step, term by term. ``state`` holds the cell's update (c or h) and its products."""

    unit: str
    module: str
    layer: int
    direction: str
    cell: str
    index: int
    at: int
    sequence: int
    tokens: list[str]
    gates: dict[str, GateTerms]
    state: dict[str, float]
    check: float  # the largest |difference| between the terms and the recorded values

    @property
    def token(self) -> str:
        return self.tokens[self.at] if self.at < len(self.tokens) else str(self.at)

    def to_dict(self) -> dict[str, Any]:
        """Every term by name, as ``gatescope explain --json`` prints it."""
        out = asdict(self)
        out["token"] = self.token
        return out

    def render(self) -> str:
        """The cell drawn in text with its values, then a table of the gates' terms and upstream units."""
        from gatescope.display.cell_text import render_step

        return render_step(self)

    def figure(self):
        """The seed's cell diagram with this step's numbers, as a `gatescope.display.Figure` (SVG)."""
        from gatescope.display.cell_diagram import cell_figure

        return cell_figure(self)

    def _repr_html_(self) -> str:
        from gatescope.display.cell_diagram import terms_table

        return self.figure()._repr_html_() + terms_table(self)

    def __str__(self) -> str:
        return self.render()


def explain(model: nn.Module, input: Any, unit: str, at: int, *, sequence: int = 0, top: int = 5,
            tokens: list[str] | None = None) -> StepExplanation:
    """Explain unit ``unit`` (any of its quantities, e.g. ``"rnn.l0.fwd.c:69"``) at step ``at`` of ``sequence``.

    model: any module holding the recurrent module (torch's LSTM/GRU, LSTMCell/GRUCell or gatescope's), run as
    ``model(input)`` once, in eval mode, under `gatescope.record`; top: how many upstream units each term lists;
    tokens: the sequence's tokens, for display (default: the recording's, from the model's vocabulary when it has
    one, else the ids or step numbers).
    Returns the `StepExplanation`. Raises GatescopeError (one line) for a unit the model does not have, a
    step outside the sequence, or a cell whose equations it does not know.
    """
    (name,) = check_units(model, [unit])
    quantity = parse_name(name.name)
    module = find_recurrent(model)[quantity.path]
    cell = module_cell_type(module)
    if cell.name not in ("LSTM", "GRU", "RNN"):
        raise GatescopeError(f"explain knows the LSTM, GRU and RNN equations and their variants; {quantity.path} is "
                             f"a {cell.name} (record it and read its kinds instead)")
    if module.training and getattr(module, "dropout", 0) and quantity.layer > 0:
        raise GatescopeError("explain needs the model in eval mode: dropout between layers changes each layer's input")
    if quantity.kind == "h" and getattr(module, "proj_size", 0):
        raise GatescopeError(f"{quantity.path} projects h (proj_size {module.proj_size}): h mixes the cell's units; "
                             "name a unit of c, m or a gate")
    if top < 0:
        raise GatescopeError(f"top must be at least 0, not {top}")
    calls: list[tuple[Any, Any]] = []
    handle = module.register_forward_pre_hook(
        lambda m, args, kwargs: calls.append((args[0] if args else kwargs.get("input"),
                                              args[1] if len(args) > 1 else kwargs.get("hx"))), with_kwargs=True)
    try:
        with torch.no_grad(), record(model, modules=[quantity.path]) as rec:
            if isinstance(model, LoadedModel):
                model(input, decode=False)  # the recurrent stack only: a step's terms never read the logits
            else:
                model(input)
    finally:
        handle.remove()
    trace = rec.trace
    if not 0 <= sequence < trace.num_sequences:
        raise GatescopeError(f"sequence {sequence} is outside the run's {trace.num_sequences} sequences")
    length = int(trace.lengths[sequence])
    if not 0 <= at < length:
        raise GatescopeError(f"step {at} is outside the sequence's {length} steps (0..{length - 1})")
    step = _Step(module, cell, quantity.path, quantity.layer, quantity.direction, name.index, trace, calls,
                 sequence, at, length)
    gates, state, check = step.explain(top)
    if check > CHECK_TOLERANCE:
        warnings.warn(f"the explanation of {unit} at step {at} differs from the recorded values by {check:.2g}",
                      GatescopeWarning, stacklevel=2)
    return StepExplanation(unit=format_unit(name.name, name.index), module=quantity.path, layer=quantity.layer,
                           direction=quantity.direction, cell=cell.describe(),
                           index=name.index, at=at, sequence=sequence,
                           tokens=list(tokens) if tokens is not None else trace.tokens(step.row - at, step.row - at + length),
                           gates=gates, state=state, check=check)


class _Step:
    """The values one step of one layer and direction reads, from the recording and the weights (float64)."""

    def __init__(self, module, cell, path, layer, direction, index, trace, calls, sequence, at, length):
        self.module, self.cell, self.path, self.layer, self.direction = module, cell, path, layer, direction
        self.j, self.trace, self.at = index, trace, at
        self.row = int(trace.offsets[sequence]) + at
        self.hidden = module.hidden_size
        self.previous = at - 1 if direction == "fwd" else at + 1  # the step whose state this one reads
        self.first = self.previous < 0 or self.previous >= length  # reads the initial state
        sfx = param_suffix(layer, direction, is_cell(module))
        weight = lambda n: getattr(module, n + sfx, None)  # noqa: E731
        as64 = lambda t: None if t is None else t.detach().to(torch.float64).cpu()  # noqa: E731
        self.w_ih, self.w_hh = as64(weight("weight_ih")), as64(weight("weight_hh"))  # (G*H, I), (G*H, P)
        self.w_ch = as64(weight("weight_ch"))  # (K*H,) peepholes, or None
        self.b_ih, self.b_hh = as64(weight("bias_ih")), as64(weight("bias_hh"))  # (G*H,) or None
        self.x = self._layer_input(calls, sequence)  # (I,)
        self.h_prev = self._previous("h", calls, sequence, state=0)  # (P,)
        self.c_prev = self._previous("c", calls, sequence, state=1) if cell.name == "LSTM" else None  # (H,)

    def recorded(self, kind: str, row: int | None = None) -> Tensor:
        name = format_name(self.path, self.layer, self.direction, kind)
        return self.trace[name][self.row if row is None else row].to(torch.float64)

    def _layer_input(self, calls, sequence: int) -> Tensor:
        """x_t: the previous layer's outputs (both directions) at this step, or the module's own input."""
        if self.layer > 0:
            below = [self.recorded_below(d) for d in (("fwd", "bwd") if self.module.bidirectional else ("fwd",))]
            return torch.cat(below)
        if is_cell(self.module):
            x = calls[self.at][0]
            return (x[sequence] if x.dim() == 2 else x).detach().to(torch.float64).cpu()
        x = calls[0][0]
        if isinstance(x, PackedSequence):
            x = pad_packed_sequence(x, batch_first=True)[0]  # (B, T, I)
        elif x.dim() == 2:
            x = x.unsqueeze(0)  # unbatched (T, I)
        elif not self.module.batch_first:
            x = x.transpose(0, 1)  # (B, T, I)
        return x[sequence, self.at].detach().to(torch.float64).cpu()

    def recorded_below(self, direction: str) -> Tensor:
        return self.trace[format_name(self.path, self.layer - 1, direction, "h")][self.row].to(torch.float64)

    def _previous(self, kind: str, calls, sequence: int, state: int) -> Tensor:
        """h_{t-1} (or c_{t-1}): recorded at the previous step, or the initial state the module was given."""
        if not self.first:
            return self.recorded(kind, self.row + (self.previous - self.at))
        width = self.w_hh.shape[1] if kind == "h" else self.hidden
        hx = calls[self.at if is_cell(self.module) else 0][1]
        if hx is None:
            return torch.zeros(width, dtype=torch.float64)
        hx = hx[state] if isinstance(hx, tuple) else hx
        if not is_cell(self.module):
            hx = hx[self.layer * (2 if self.module.bidirectional else 1) + (self.direction == "bwd")]
        return (hx[sequence] if hx.dim() == 2 else hx).detach().to(torch.float64).cpu()

    def _upstream(self, shares: Tensor, names, at: int, top: int) -> list[Upstream]:
        order = torch.argsort(shares.abs(), descending=True)[:top]
        return [Upstream(names(int(k)), at, float(shares[k])) for k in order if shares[k] != 0]  # a zero moved nothing

    def _recurrent_name(self, k: int) -> str:
        return format_unit(format_name(self.path, self.layer, self.direction, "h"), k)

    def _input_name(self, k: int) -> str:
        if self.layer == 0:
            return f"x:{k}"
        below = self.w_ih.shape[1] // (2 if self.module.bidirectional else 1)
        direction, k = ("fwd", k) if k < below else ("bwd", k - below)
        return format_unit(format_name(self.path, self.layer - 1, direction, "h"), k)

    def explain(self, top: int) -> tuple[dict[str, GateTerms], dict[str, float], float]:
        cell, j, hidden = self.cell, self.j, self.hidden
        zeros = torch.zeros(self.w_ih.shape[0], dtype=torch.float64)
        b_ih = self.b_ih if self.b_ih is not None else zeros
        b_hh = self.b_hh if self.b_hh is not None else zeros
        gi = self.w_ih @ self.x + b_ih  # (G*H,) the whole input projection, one product
        gh = self.w_hh @ self.h_prev + b_hh  # (G*H,)
        deviations: list[float] = []
        gates: dict[str, GateTerms] = {}
        for kind in cell.blocks:
            row = cell.rows(kind, hidden).start + j
            input_shares = self.w_ih[row] * self.x  # (I,)
            recurrent_shares = self.w_hh[row] * self.h_prev  # (P,)
            bias = float(b_ih[row] + b_hh[row])
            pre = float(gi[row] + gh[row])
            if cell.name == "GRU" and kind == "n":
                rows = cell.rows("r", hidden)
                r_all = apply(cell.gate_activation, self._clip(gi[rows] + gh[rows]))  # (H,) the reset gate, recomputed
                r = float(self.recorded("r")[j])
                if cell.reset_after:
                    recurrent_shares = r * recurrent_shares
                    bias = float(b_ih[row] + r * b_hh[row])
                    pre = float(gi[row] + r_all[j] * gh[row])
                else:
                    recurrent_shares = self.w_hh[row] * (self.recorded("r") * self.h_prev)
                    w_hn = self.w_hh[cell.rows("n", hidden)]  # (H, H)
                    pre = float(gi[row] + (w_hn @ (r_all * self.h_prev))[j] + b_hh[row])
            peephole, forget_bias = self._peephole(kind), (cell.forget_bias if kind == "f" else 0.0)
            terms = (float(input_shares.sum()), float(recurrent_shares.sum()), bias, peephole, forget_bias)
            pre += peephole + forget_bias
            act = cell.activation if kind in CANDIDATES else cell.gate_activation
            clipped = self._clip(torch.tensor(pre, dtype=torch.float64))
            value = float(self.recorded(kind)[j])
            deviations += [abs(sum(terms) - pre), abs(float(apply(act, clipped)) - value)]
            gates[kind] = GateTerms(
                kind=kind, title=KINDS[kind].title, input=terms[0], recurrent=terms[1], bias=bias,
                preactivation=sum(terms), activation=str(act), value=value, peephole=peephole,
                forget_bias=forget_bias, clipped=float(clipped) != pre,
                upstream=self._upstream(recurrent_shares, self._recurrent_name, self.previous, top),
                inputs=self._upstream(input_shares, self._input_name, self.at, top))
        if cell.coupled:  # the derived gate: 1 minus its source, as the step uses it
            derived, source = cell.coupled
            value = float(self.recorded(derived)[j])
            deviations.append(abs(1 - gates[source].value - value))
            gates[derived] = GateTerms(kind=derived, title=KINDS[derived].title, input=0.0, recurrent=0.0, bias=0.0,
                                       preactivation=None, activation=f"1 - {source}", value=value)
            gates = {k: gates[k] for k in cell.kinds if k in gates}  # step order
        state, products = {"LSTM": self._lstm_state, "GRU": self._gru_state, "RNN": self._rnn_state}[cell.name](gates)
        deviations += products
        return gates, state, max(deviations)

    def _clip(self, x: Tensor) -> Tensor:
        return x if self.cell.clip is None else x.clamp(-self.cell.clip, self.cell.clip)

    def _peephole(self, kind: str) -> float:
        """w_c·c of ``kind`` (i and f see c_{t-1}, o the new c_t), 0 without peepholes."""
        if kind not in self.cell.peephole_kinds:
            return 0.0
        block = self.cell.peephole_kinds.index(kind)
        w = float(self.w_ch[block * self.hidden + self.j])
        seen = float(self.recorded("c")[self.j]) if kind == "o" else float(self.c_prev[self.j])
        return w * seen

    def _lstm_state(self, gates: dict[str, GateTerms]) -> tuple[dict[str, float], list[float]]:
        f, i, g, o = (gates[k].value for k in "figo")
        c_prev = float(self.c_prev[self.j])
        c = float(self.recorded("c")[self.j])
        out = "m" if getattr(self.module, "proj_size", 0) else "h"  # with a projection, h mixes the units
        h = float(self.recorded(out)[self.j])
        act = self.cell.output_activation
        squashed = float(apply(act, torch.tensor(c, dtype=torch.float64)))
        new = f * c_prev + i * g
        if self.cell.cell_clip is not None:
            new = min(max(new, -self.cell.cell_clip), self.cell.cell_clip)
        state = {"c_prev": c_prev, "f*c_prev": f * c_prev, "i*g": i * g, "c": c, f"{act.name}(c)": squashed, out: h}
        return state, [abs(new - c), abs(o * squashed - h)]

    def _gru_state(self, gates: dict[str, GateTerms]) -> tuple[dict[str, float], list[float]]:
        z, n = gates["z"].value, gates["n"].value
        h_prev = float(self.h_prev[self.j])
        h = float(self.recorded("h")[self.j])
        state = {"h_prev": h_prev, "(1-z)*n": (1 - z) * n, "z*h_prev": z * h_prev, "h": h}
        return state, [abs((1 - z) * n + z * h_prev - h)]

    def _rnn_state(self, gates: dict[str, GateTerms]) -> tuple[dict[str, float], list[float]]:
        return {"h_prev": float(self.h_prev[self.j]), "h": gates["h"].value}, []
