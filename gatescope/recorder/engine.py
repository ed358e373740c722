"""Runs a whole torch-style LSTM, GRU or RNN (layers, directions, packing) through gatescope.recorder.cells.

The forward contract is torch.nn.LSTM / GRU / RNN's (torch/nn/modules/rnn.py): batched or unbatched
input, batch_first, given initial states, PackedSequence in and out, dropout between layers,
layer k > 0 reading the concatenated directions of layer k-1, proj_size for the LSTM.
Arguments are checked by torch's own code (the module's ``check_forward_args``, and torch's forward
for what only its kernel refuses), so errors are torch's, type and message; an empty batch runs.
`run_cell` is the same for one call of an LSTMCell / GRUCell / RNNCell, stepped as a one-step layer.

Two routes compute the same values:

* ``step``: a Python loop over timesteps around one GEMM for the input projection; every
  quantity passes through an `Observer`, which can record it and edit it (interventions), and
  autograd flows through everything. On a CPU this is about as fast as torch's own kernel.
* ``replay``: the fused native kernel (cuDNN on a GPU) computes every h_t, then the gates of all
  timesteps are recomputed at once (see cells.lstm_replay). No edits, no autograd; the fast way
  to record on a GPU, and on a CPU when each step is too small to pay for a Python loop. An LSTM
  on a CPU takes its gates straight from oneDNN's fused kernel instead (gatescope.recorder.onednn), checked
  against that kernel's output, at about the cost of the plain forward. With grad enabled and the
  input or the weights requiring grad, even ``route="replay"`` takes the step route, so that no
  output is ever cut from the autograd graph.
* ``split`` (route ``auto`` with interventions, an LSTM forward direction on oneDNN): the fused kernel
  up to the first edited step, the step route from there; an h ablation (units set to a constant at
  every step from some step on) stays on the fused kernel, the constant folded into W_hh's columns
  (see `_split_direction`). Layers and directions without edits run fused as they would unedited.
  At small batch the edited runs step in the TorchScript-compiled loop (gatescope.recorder.compiled),
  their Interventions applied as one affine map per kind and step.
  Edits that cannot be foreseen (hooks) and anything else take the step route.

Timesteps given to observers are input positions: for the backward direction, step t is the
state after reading input t. Padded positions (t >= length) are computed but never recorded, and
the backward direction of a shorter sequence starts at its own last token.

A module's cell type is `gatescope.kinds.module_cell_type`'s: a variant no native kernel computes
(a reset-before GRU, a peephole or coupled LSTM, other activations, clipping: gatescope.recorder.variants)
always takes the step route.
"""
from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence, pad_packed_sequence

from gatescope.kinds import LSTM, CellType, module_cell_type, module_directions, param_suffix
from gatescope.recorder import compiled, onednn
from gatescope.recorder.cells import (
    Tap,
    CellWeights,
    folds_bias_hh,
    gru_replay,
    gru_step,
    input_projection,
    lstm_replay,
    lstm_step,
    per_sample,
    reset_before_weights,
    rnn_step,
    step_weights,
)
from gatescope.recorder.gemm import ONEDNN_MIN_ROWS
from gatescope.recorder.interventions import affine, split

Route = Literal["auto", "step", "replay"]
Edit = Callable[[Tensor, int], "Tensor | None"]


@dataclass
class Observer:
    """What is attached to one layer and direction: kinds to keep, edits to apply, where to put them."""

    keep: frozenset[str] = frozenset()
    edits: dict[str, list[Edit]] = field(default_factory=dict)
    # sink(kind, values, lengths): values are T tensors (B, H) in time order (step route: the very
    # tensors the forward used, so gradients can be taken with respect to them) or one (T, B, H)
    sink: Callable[[str, "list[Tensor] | Tensor", Tensor | None], None] | None = None


ObserverFor = Callable[[int, str], "Observer | None"]  # (layer, "fwd" | "bwd") -> Observer


class Taps:
    """One layer and direction stepped over ``steps`` timesteps, seen by ``observer``: every quantity of step
    t passes through ``at(t)`` (the observer's edits applied in order, told input position ``t + offset``;
    kept values stored), and `flush` hands the kept values to the observer's sink, in time order. The step
    route uses it, and so can a recordable module's ``forward_observed`` (gatescope.recorder.recordable)."""

    def __init__(self, observer: Observer | None, steps: int, offset: int = 0) -> None:
        self.edits = observer.edits if observer else {}
        self.sink = observer.sink if observer else None
        self.kept: dict[str, list] = {kind: [None] * steps for kind in (observer.keep if observer else ())}
        self.offset = offset

    def at(self, t: int) -> Tap:
        """The tap of step ``t``: ``tap(kind, value) -> value`` after the edits."""

        def tap(kind: str, value: Tensor) -> Tensor:
            for edit in self.edits.get(kind, ()):
                changed = edit(value, t + self.offset)
                if changed is not None:
                    value = changed
            if kind in self.kept:
                self.kept[kind][t] = value
            return value

        return tap

    def flush(self, lengths: Tensor | None) -> None:
        """Hand every kept kind (T tensors (B, H)) to the sink, with each sequence's length (None: all T)."""
        if self.sink is not None:
            for kind, values in self.kept.items():
                self.sink(kind, values, lengths)


def layer_weights(module: nn.Module, layer: int, direction: str) -> CellWeights:
    """The weights of one layer and direction of an nn.LSTM / GRU / RNN, by torch's names (and a peephole
    LSTM's ``weight_ch``, gatescope.recorder.variants)."""
    sfx = param_suffix(layer, direction)
    get = lambda name: getattr(module, name + sfx, None)  # noqa: E731
    return CellWeights(get("weight_ih"), get("weight_hh"), get("bias_ih"), get("bias_hh"), get("weight_hr"),
                       get("weight_ch"))


def run(
    module: nn.LSTM | nn.GRU | nn.RNN,
    input: Tensor | PackedSequence,
    hx: Tensor | tuple[Tensor, Tensor] | None = None,
    observer_for: ObserverFor | None = None,
    route: Route = "auto",
):
    """The forward of ``module`` (same arguments, results and errors as torch's), observed layer by layer."""
    cell = module_cell_type(module)
    is_lstm = cell.name == "LSTM"
    packed = isinstance(input, PackedSequence)
    x, lengths, h0, c0, unbatched = _prepare(module, input, hx)  # (T, B, I), states (L*D, B, ·)
    if x.shape[0] == 0 or h0.dtype != x.dtype or (c0 is not None and c0.dtype != x.dtype):
        return _torch_refuses(module, input, hx)  # errors only torch's kernel raises

    directions = module_directions(module)
    num_dir = len(directions)
    h_n, c_n = [], []
    layer_input = x
    for layer in range(module.num_layers):
        outs = []
        for d, direction in enumerate(directions):
            k = layer * num_dir + d
            observer = observer_for(layer, direction) if observer_for else None
            w = layer_weights(module, layer, direction)
            chosen = _choose_route(route, observer, layer_input, w, cell, direction)
            out, h_last, c_last = _run_direction(
                cell, layer_input, h0[k], None if c0 is None else c0[k], w, lengths,
                direction == "bwd", observer, chosen,
            )
            outs.append(out)
            h_n.append(h_last)
            c_n.append(c_last)
        layer_input = outs[0] if num_dir == 1 else torch.cat(outs, dim=-1)  # (T, B, D*P)
        if module.dropout and module.training and layer < module.num_layers - 1:
            layer_input = F.dropout(layer_input, module.dropout, training=True)

    output = layer_input
    h_n = torch.stack(h_n)  # (L*D, B, P)
    hidden = (h_n, torch.stack(c_n)) if is_lstm else h_n
    if packed:
        output = _repack(output, input)
    elif unbatched:
        output = output.squeeze(1)
        hidden = tuple(s.squeeze(1) for s in hidden) if is_lstm else hidden.squeeze(1)
    elif module.batch_first:
        output = output.transpose(0, 1)
    return output, hidden


def _prepare(module, input, hx):
    """torch's forward preamble (torch/nn/modules/rnn.py), checks by torch's own ``check_forward_args``.

    Returns x (T, B, I) time-major in the caller's batch order, lengths (B,) or None, h0 (L*D, B, P),
    c0 (L*D, B, H) or None, and whether the input was unbatched.
    """
    is_lstm = isinstance(module, nn.LSTM)
    if hasattr(module, "_update_flat_weights"):  # torch.func.functional_call swaps the parameters
        module._update_flat_weights()
    num_dir = 2 if module.bidirectional else 1
    out_size = module.proj_size if is_lstm and module.proj_size > 0 else module.hidden_size
    unbatched = False
    if isinstance(input, PackedSequence):
        data, batch_sizes = input.data, input.batch_sizes
        batch = int(batch_sizes[0])
    else:
        data, batch_sizes = input, None
        if input.dim() not in (2, 3):
            name = module_cell_type(module).name
            tensor = " tensor" if name == "RNN" else ""  # torch's nn.RNN words it so
            raise ValueError(f"{name}: Expected input to be 2D or 3D, got {input.dim()}D{tensor} instead")
        unbatched = input.dim() == 2
        if hx is not None:
            _check_hx_dims(hx, is_lstm, unbatched)
        if unbatched:
            data = input.unsqueeze(0 if module.batch_first else 1)
            if hx is not None:
                hx = tuple(s.unsqueeze(1) for s in hx) if is_lstm else hx.unsqueeze(1)
        batch = data.shape[0 if module.batch_first else 1]
    if hx is None:
        zeros = lambda size: torch.zeros(  # noqa: E731
            module.num_layers * num_dir, batch, size, dtype=data.dtype, device=data.device
        )
        h0 = zeros(out_size)
        learned = learned_h0(module)  # (L*D, P): a module's learned initial state, else none
        if learned is not None:
            h0 = h0 + learned.to(h0.dtype).unsqueeze(1)  # (L*D, B, P), in the autograd graph
        hx = (h0, zeros(module.hidden_size)) if is_lstm else h0
    module.check_forward_args(data, hx, batch_sizes)
    if batch_sizes is not None:
        x, lengths = pad_packed_sequence(input)  # (T, B, I) in the caller's batch order
        lengths = lengths.to(x.device)
    else:
        x, lengths = (data.transpose(0, 1) if module.batch_first else data), None
    h0, c0 = hx if is_lstm else (hx, None)
    return x, lengths, h0, c0, unbatched


def learned_h0(module: nn.Module) -> Tensor | None:
    """A module's learned initial hidden state (gatescope.recorder.variants, ``learned_h0=True``): its ``h0_l{k}``
    (``_reverse``) parameters stacked as torch orders h_0, (L*D, P); None when it has none."""
    if not getattr(module, "learned_h0", False):
        return None
    dirs = module_directions(module)
    return torch.stack([getattr(module, "h0" + param_suffix(layer, d)) for layer in range(module.num_layers)
                        for d in dirs])


def _check_hx_dims(hx, is_lstm: bool, unbatched: bool) -> None:
    """torch's checks (and messages) of the initial state's dimensions against the input's."""
    want, what = (2, "unbatched 2-D") if unbatched else (3, "batched 3-D")
    if is_lstm:
        if hx[0].dim() != want or hx[1].dim() != want:
            raise RuntimeError(
                f"For {what} input, hx and cx should also be {want}-D but got "
                f"({hx[0].dim()}-D, {hx[1].dim()}-D) tensors"
            )
    elif hx.dim() != want:
        raise RuntimeError(f"For {what} input, hx should also be {want}-D but got {hx.dim()}-D tensor")


def _torch_refuses(module: nn.Module, *args):
    """Arguments that only torch's kernel rejects (sequence length 0, mixed dtypes): let it say why.

    torch's own forward runs on the arguments and raises its own error; should it accept them after
    all, gatescope says in one line that it cannot run them rather than return an unobserved result.
    """
    base = next(t for t in (nn.LSTM, nn.GRU, nn.RNN, nn.LSTMCell, nn.GRUCell, nn.RNNCell) if isinstance(module, t))
    base.forward(module, *args)
    raise RuntimeError(f"{base.__name__}: gatescope's engine cannot run these arguments, which torch accepts")


def run_cell(module: nn.LSTMCell | nn.GRUCell | nn.RNNCell, input: Tensor, hx=None, observer: Observer | None = None):
    """One call of an LSTMCell / GRUCell / RNNCell (same arguments, results and errors as torch's: input (B, I)
    or unbatched (I,)), run by the same stepper as every layer of `run`: a one-step forward direction
    whose quantities ``observer`` sees at step 0. Arguments torch would refuse go to torch's forward,
    which raises torch's own error."""
    is_lstm = isinstance(module, nn.LSTMCell)
    if not _cell_args_ok(module, input, hx, is_lstm):
        return _torch_refuses(module, input, hx)
    unbatched = input.dim() == 1
    x = input.unsqueeze(0) if unbatched else input  # (B, I)
    if hx is None:
        zeros = x.new_zeros(x.shape[0], module.hidden_size)
        hx = (zeros, zeros) if is_lstm else zeros
    elif unbatched:
        hx = tuple(s.unsqueeze(0) for s in hx) if is_lstm else hx.unsqueeze(0)
    h0, c0 = hx if is_lstm else (hx, None)
    w = CellWeights(module.weight_ih, module.weight_hh, module.bias_ih, module.bias_hh)
    _, h, c = _step_direction(module_cell_type(module), x.unsqueeze(0), h0, c0, w, None, False, observer)
    out = (h, c) if is_lstm else h
    if unbatched:
        out = tuple(s.squeeze(0) for s in out) if is_lstm else out.squeeze(0)
    return out


def _cell_args_ok(module, input, hx, is_lstm: bool) -> bool:
    """Whether torch's LSTMCell / GRUCell would accept these arguments (its Python and kernel checks)."""
    if not isinstance(input, Tensor) or input.dim() not in (1, 2):
        return False
    states = () if hx is None else (tuple(hx) if is_lstm else (hx,))
    if is_lstm and len(states) not in (0, 2):
        return False
    dtype = module.weight_ih.dtype
    batch = input.shape[0] if input.dim() == 2 else None
    return (
        input.dtype == dtype
        and input.shape[-1] == module.input_size
        and all(
            isinstance(s, Tensor) and s.dim() == input.dim() and s.dtype == dtype
            and s.shape[-1] == module.hidden_size and (batch is None or s.shape[0] == batch)
            for s in states
        )
    )


# Below this many (batch x hidden) elements per step, a CPU step loop is dominated by per-step
# overhead, and letting the native kernel run the recurrence (replay) is cheaper (benchmarks/).
SMALL_STEP = 4096


def _choose_route(
    route: Route, observer: Observer | None, x: Tensor, w: CellWeights, cell: CellType, direction: str
) -> str:
    if not cell.is_standard:  # no native kernel computes it
        return "step"
    is_lstm = cell.name == "LSTM"
    if per_sample(w):  # ExpandedWeights answer nothing but F.linear (not even requires_grad): the step route
        return "step" if route == "auto" else route
    if route == "replay" and observer is not None and observer.edits:
        raise ValueError("the replay route cannot apply interventions; use route='step'")
    needs_graph = torch.is_grad_enabled() and (x.requires_grad or any(p is not None and p.requires_grad for p in w))
    if needs_graph:  # replay has no autograd: its outputs would be cut from the graph, so even it steps
        return "step"
    if route != "auto":
        return route
    if observer is not None and observer.edits:  # an LSTM on oneDNN: the fused kernel wherever edits allow
        return "split" if is_lstm and direction == "fwd" and onednn.available(x, w) else "step"
    small = x.shape[1] * w.weight_hh.shape[1] < SMALL_STEP
    fused_gates = is_lstm and onednn.available(x, w)  # every gate from oneDNN's kernel at its own speed
    return "replay" if x.is_cuda or small or fused_gates else "step"


def _run_direction(cell, x, h0, c0, w, lengths, reverse, observer, route):
    """One layer, one direction. x (T, B, I) -> out (T, B, P), h_n (B, P), c_n (B, H) or None."""
    if route == "replay":
        return _replay_direction(cell, x, h0, c0, w, lengths, reverse, observer)
    if route == "split":
        return _split_direction(x, h0, c0, w, lengths, observer)
    return _step_direction(cell, x, h0, c0, w, lengths, reverse, observer)


def _step_direction(cell: CellType, x, h0, c0, w, lengths, reverse, observer, offset=0):
    """The step route; x (T, B, I) holds input positions ``offset`` to ``offset + T`` (what edits are told)."""
    steps = x.shape[0]
    xs = input_projection(x, w, fold_bias_hh=folds_bias_hh(cell, w))  # (T, B, G*H), one product
    sw = reset_before_weights(w) if not cell.reset_after else step_weights(w, cell)
    taps = Taps(observer, steps, offset)
    outs: list = [None] * steps
    cells: list = [None] * steps
    # the backward direction of a shorter sequence waits (keeps h0, c0) until its own last token
    masked = reverse and lengths is not None and bool((lengths < steps).any())
    h, c = h0, c0
    for t in (range(steps - 1, -1, -1) if reverse else range(steps)):
        tap = taps.at(t)
        if cell.name == "LSTM":
            h_new, c_new = lstm_step(xs[t], h, c, sw, tap, cell)
        elif cell.name == "GRU":
            h_new, c_new = gru_step(xs[t], h, sw, tap, cell), None
        else:
            h_new, c_new = rnn_step(xs[t], h, sw, tap, cell), None
        if masked:
            valid = (t < lengths).unsqueeze(1)  # (B, 1)
            h_new = torch.where(valid, h_new, h)
            c_new = None if c is None else torch.where(valid, c_new, c)
        h, c = h_new, c_new
        outs[t], cells[t] = h, c
    out = torch.stack(outs)  # (T, B, P)
    if lengths is not None and not reverse:  # final state of each sequence at its own last token
        h = _at_last(out, lengths)
        c = None if c is None else _at_last(torch.stack(cells), lengths)
    taps.flush(lengths)
    return out, h, c


@torch.no_grad()
def _replay_direction(cell, x, h0, c0, w, lengths, reverse, observer):
    is_lstm = cell.name == "LSTM"
    if per_sample(w):
        raise RuntimeError("the replay route has no autograd, so no per-sample gradients "
                           "(call_for_per_sample_grads); use route='step' or 'auto'")
    if reverse:
        x = _reverse_within(x, lengths)
    out, quantities = _fused(cell, x, h0, c0, w)
    if lengths is not None:
        h_n = _at_last(out, lengths)
        c_n = _at_last(quantities["c"], lengths) if is_lstm else None
    else:
        h_n, c_n = out[-1], (quantities["c"][-1] if is_lstm else None)
    if reverse:
        out = _reverse_within(out, lengths)
    if observer is not None and observer.sink is not None:
        for kind in observer.keep:
            values = quantities[kind]
            observer.sink(kind, _reverse_within(values, lengths) if reverse else values, lengths)
    return out, h_n, c_n


@torch.no_grad()
def _fused(cell: CellType, x, h0, c0, w) -> tuple[Tensor, dict[str, Tensor]]:
    """The native kernel over x (T, B, I) in step order, then every quantity: out (T, B, P), kind -> (T, B, ·)."""
    is_lstm = cell.name == "LSTM"
    params = [p for p in (w.weight_ih, w.weight_hh, w.bias_ih, w.bias_hh, w.weight_hr) if p is not None]
    has_bias = w.bias_ih is not None
    with warnings.catch_warnings():  # per-layer weights are not one flattened cuDNN buffer
        warnings.filterwarnings("ignore", message=".*contiguous chunk of memory.*")
        if is_lstm and onednn.available(x, w):  # oneDNN's own gates, checked against its output
            out, quantities = onednn.lstm_gates(x, h0, c0, w)
            # refused: the gates from oneDNN's output, which is the fused kernel's
            return out, quantities if quantities is not None else lstm_replay(x, out, h0, c0, w)
        if is_lstm:
            out, _, _ = torch._VF.lstm(x, (h0[None], c0[None]), params, has_bias, 1, 0.0, False, False, False)
            return out, lstm_replay(x, out, h0, c0, w)
        if cell.name == "RNN":  # h is all an RNN computes
            kernel = torch._VF.rnn_relu if cell.activation.name == "relu" else torch._VF.rnn_tanh
            out, _ = kernel(x, h0[None], params, has_bias, 1, 0.0, False, False, False)
            return out, {"h": out}
        out, _ = torch._VF.gru(x, h0[None], params, has_bias, 1, 0.0, False, False, False)
        return out, gru_replay(x, out, h0, w)


def _split_direction(x, h0, c0, w, lengths, observer):
    """An edited LSTM forward direction with the fused kernel wherever the edits allow (interventions.split):

    unedited steps (before, between and after the runs of edited ones) run fused; the edited runs take
    the step route, except that an h ablation (units set to a constant at every step from some step to
    the end) runs fused with those units' columns of W_hh folded into the bias (`_folded`) once h_{t-1}
    holds the constant, the recorded and returned h set to it.
    """
    steps, hidden = x.shape[0], c0.shape[-1]
    plan = split(observer.edits, steps, hidden)
    if plan is None:
        return _step_direction(LSTM, x, h0, c0, w, lengths, False, observer)
    parts: list[dict[str, Tensor]] = []  # kind -> (t, B, H), consecutive runs of steps

    def run(stop: int, how) -> None:  # steps t..stop-1 of x; how(x, h, c, t) -> kind -> (stop - t, B, H)
        nonlocal h, c, t
        if t < stop:
            parts.append(how(x[t:stop], h, c, t))
            h, c, t = parts[-1]["h"][-1], parts[-1]["c"][-1], stop

    fused = lambda x, h, c, t: _fused(LSTM, x, h, c, w)[1]  # noqa: E731
    if x.shape[1] < ONEDNN_MIN_ROWS:  # small batch: the loop's own overhead is the cost, compiled away
        stepped = lambda x, h, c, t: _compiled(x, h, c, w, observer, t)  # noqa: E731
    else:
        stepped = lambda x, h, c, t: _stepped(x, h, c, w, observer, t)  # noqa: E731
    h, c, t = h0, c0, 0
    for start, stop in plan.runs:
        run(start, fused)
        if plan.fold is None:
            run(stop, stepped)
            continue
        units = torch.tensor(list(plan.fold), device=x.device)
        values = torch.tensor(list(plan.fold.values()), dtype=x.dtype, device=x.device)  # (U,)
        if not torch.equal(h[:, units], values.expand(h.shape[0], -1)):  # one step sets h_t to the constant
            run(t + 1, stepped)
        folded = _folded(w, units, values)
        run(stop, lambda x, h, c, t: _with_h(_fused(LSTM, x, h, c, folded)[1], units, values))
    run(steps, fused)
    kept = {kind: parts[0][kind] if len(parts) == 1 else torch.cat([p[kind] for p in parts]) for kind in
            observer.keep | {"h", "c"}}  # (T, B, H)
    out, cells = kept["h"], kept["c"]
    h_n, c_n = (out[-1], cells[-1]) if lengths is None else (_at_last(out, lengths), _at_last(cells, lengths))
    if observer.sink is not None:
        for kind in observer.keep:
            observer.sink(kind, kept[kind], lengths)
    return out, h_n, c_n


def _with_h(quantities: dict[str, Tensor], units: Tensor, values: Tensor) -> dict[str, Tensor]:
    """The fused kernel's quantities with h's ``units`` set to ``values``: its own output is h before the edit."""
    quantities["h"][..., units] = values
    return quantities


def _stepped(x, h0, c0, w, observer, offset) -> dict[str, Tensor]:
    """The step route over x (T, B, I) from input position ``offset``, with ``observer``'s edits: kind -> (T, B, H)."""
    kept: dict[str, Tensor] = {}
    sink = lambda kind, values, lengths: kept.__setitem__(kind, torch.stack(values))  # noqa: E731
    inner = Observer(observer.keep | {"h", "c"}, observer.edits, sink)
    _step_direction(LSTM, x, h0, c0, w, None, False, inner, offset=offset)
    return kept


def _compiled(x, h0, c0, w, observer, offset) -> dict[str, Tensor]:
    """The compiled step loop (gatescope.recorder.compiled) over x (T, B, I) from input position ``offset``,
    ``observer``'s Interventions as one affine map per kind: kind -> (T, B, H)."""
    steps, batch = x.shape[:2]
    hidden = c0.shape[-1]
    maps = {kind: affine(fns, offset, steps, batch, hidden, x.dtype, x.device)
            for kind, fns in observer.edits.items() if fns}
    return compiled.lstm_run(input_projection(x, w, fold_bias_hh=True), h0, c0, w.weight_hh, maps)


def _folded(w: CellWeights, units: Tensor, values: Tensor) -> CellWeights:
    """``w`` for h_{t-1} whose ``units`` hold ``values``: their columns of W_hh (4H, H) zeroed and carried
    by b_hh instead (W_hh h = W_hh' h + W_hh[:, units] values), so the fused kernel can run them."""
    weight_hh = w.weight_hh.detach().clone()
    shift = weight_hh[:, units] @ values  # (4H,)
    weight_hh[:, units] = 0
    if not bool(values.any()):  # setting to 0: nothing to carry, the biases stay as they are
        return CellWeights(w.weight_ih, weight_hh, w.bias_ih, w.bias_hh)
    zeros = shift.new_zeros(shift.shape)
    bias_ih = zeros if w.bias_ih is None else w.bias_ih
    bias_hh = shift if w.bias_hh is None else w.bias_hh.detach() + shift
    return CellWeights(w.weight_ih, weight_hh, bias_ih, bias_hh)


def _reverse_within(x: Tensor, lengths: Tensor | None) -> Tensor:
    """Reverse each sequence of x (T, B, ·) within its own length; padding stays in place."""
    if lengths is None:
        return x.flip(0)
    steps = x.shape[0]
    t = torch.arange(steps, device=x.device).unsqueeze(1)  # (T, 1)
    index = torch.where(t < lengths, lengths - 1 - t, t)  # (T, B), an involution
    return x.gather(0, index.unsqueeze(-1).expand_as(x))


def _at_last(x: Tensor, lengths: Tensor) -> Tensor:
    """x (T, B, ·) at each sequence's last valid step -> (B, ·)."""
    return x[lengths - 1, torch.arange(x.shape[1], device=x.device)]


def _repack(output: Tensor, like: PackedSequence) -> PackedSequence:
    """Padded (T, B, ·) output in the caller's batch order -> a PackedSequence shaped like ``like``."""
    batch_sizes = like.batch_sizes
    if like.sorted_indices is not None:
        output = output.index_select(1, like.sorted_indices)
    steps, batch = output.shape[:2]
    valid = torch.arange(batch).unsqueeze(0) < batch_sizes[:steps].unsqueeze(1)  # (T, B), time-major
    data = output[valid.to(output.device)]
    return PackedSequence(data, batch_sizes, like.sorted_indices, like.unsorted_indices)
