"""record(): capture every gate of every recurrent module in any nn.Module, and edit them.

Inside ``with gatescope.record(model) as rec:`` every recurrent module found in ``model.named_modules()``
(gatescope.recorder.recordable says which, `find_recurrent`) is recorded, its forward replaced for the
block; no model code changes, and the originals are restored when the block ends:

- torch.nn.LSTM / GRU / RNN and the cells LSTMCell / GRUCell / RNNCell, and the modules that subclass them
  (gatescope's drop-in LSTM / GRU / RNN and ResetBeforeGRU, gatescope.recorder.rnn; VariantLSTM / GRU / RNN,
  gatescope.recorder.variants: other activations, clipping, peepholes, coupled gates, a learned h0), run
  through gatescope's engine, which computes what the module's own forward computes (torch's kernel's
  outputs, for torch's modules) while handing every quantity to the recording;
- another package's recurrent module (`recordable.PACKAGED`, gatescope.recorder.packaged: the xlstm
  package's sLSTM and mLSTM layers, large mLSTM included, minGRU-pytorch's minGRU and minLSTM) runs its own
  forward with gatescope's taps in it. A kind such a cell records only on request (the mLSTM's matrix
  memory) is kept only when ``kinds`` or ``names`` ask for it, and its size is said (a GatescopeWarning)
  before anything is recorded;
- any other module that declares a ``cell_type`` and a ``forward_observed`` runs that, with the taps.

Every recorded quantity is also a hook point in the sense of TransformerLens's HookPoint
(gatescope.recorder.hooks): `Intervention` (set, scale, add or patch chosen units at chosen timesteps, as
pyvene's interventions do) and ``hooks`` change the value during the forward, and the change is carried
through the recurrence to every later step, layer and output.

Blocks nest: each recurrent module keeps a stack of the recordings active on it. Every active recording
sees every call of the modules it covers, and every active recording's edits apply, outermost first, so
each recording keeps the values after all of them. The recording holds one `_Buffer` per quantity; the
`Trace` it assembles holds detached values, while `Recording.gradients` differentiates through the very
tensors the forward used.
"""
from __future__ import annotations

import functools
import warnings
import weakref
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence

from gatescope.errors import GatescopeError, GatescopeWarning
from gatescope.kinds import ALL_KINDS, kinds_by_cell
from gatescope.names import format_name, parse_name
from gatescope.recorder import engine
from gatescope.recorder.hooks import Edit, HookContext, Hooks, Selector, context_for, edits_of, select
from gatescope.recorder.interventions import Intervention, unapplied
from gatescope.recorder.recordable import (  # noqa: F401  (find_recurrent, module_info, RECURRENT_TYPES: public here too)
    RECURRENT_TYPES,
    check_name,
    directions_of,
    find_recurrent,
    is_cell,
    kinds_of,
    module_info,
    module_quantities,
    on_request,
    packaged_of,
)
from gatescope.recorder.rows import check_still_running, joined, pad_shrinking, to_rows
from gatescope.traces.trace import Trace

Hook = Edit  # ``fn(value [B, H], step) -> Tensor | None``: the mapping form of ``hooks``


@dataclass
class _Buffer:
    """Everything recorded of one quantity, call by call."""

    rows: list[Tensor] = field(default_factory=list)  # (n, H) per call, detached, in the storage dtype
    lengths: list[Tensor] = field(default_factory=list)  # (B,) per call: each sequence's length
    calls: list[int] = field(default_factory=list)  # the root call each chunk belongs to
    graph: list["list[Tensor] | None"] = field(default_factory=list)  # per call: T x (B, H) the forward used
    pending: list[Tensor] = field(default_factory=list)  # a cell's steps (B_t, H) since the root call began


class Recording:
    """A recording of ``model``'s recurrent modules: a context manager; ``.trace`` assembles what it saw.

    ``record(model, ...)`` builds one (same arguments); everything is checked here, before any forward.
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        modules: Sequence[str] | None = None,
        layers: Sequence[int] | None = None,
        kinds: Sequence[str] | None = None,
        names: Selector | None = None,
        dtype: torch.dtype = torch.float32,
        interventions: Iterable[Intervention] = (),
        hooks: Hooks | None = None,
        route: engine.Route = "auto",
        meta: Mapping[str, Any] | None = None,
        batch_first: bool | None = None,
    ) -> None:
        self.root = model
        self.dtype = dtype
        self.route = route
        self.batch_first = batch_first
        self.targets = find_recurrent(model)
        if not self.targets:
            raise GatescopeError(f"no LSTM or GRU module found in {type(model).__name__}")
        if modules is not None:
            unknown = sorted(set(modules) - set(self.targets))
            if unknown:
                raise GatescopeError(f"no recurrent module {', '.join(unknown)}; "
                                     f"the model has: {', '.join(self.targets)}")
        self.modules = list(self.targets) if modules is None else [m for m in self.targets if m in modules]
        for path in self.modules:
            packaged = packaged_of(self.targets[path])
            if packaged is not None:
                packaged.check(path, self.targets[path])
        self.layers = None if layers is None else frozenset(layers)
        if kinds is not None:
            bad = sorted(set(kinds) - set(ALL_KINDS))
            if bad:
                raise GatescopeError(f"unknown kind(s) {', '.join(bad)}: {kinds_by_cell()}")
        self.kinds = None if kinds is None else frozenset(kinds)
        self.widths = {n: w for path, module in self.targets.items()  # every recordable name -> units
                       for n, w in module_quantities(path, module).items()}
        check = functools.partial(check_name, self.targets)
        chosen = None if names is None else set(select(names, list(self.widths), check))
        kept = [n for n in self.widths if self._wanted(n) and (chosen is None or n in chosen)
                and (not on_request(self.targets, n) or kinds is not None or chosen is not None)]
        _say_sizes([n for n in kept if on_request(self.targets, n)], self.widths)
        most = max((getattr(self.targets[m], "num_layers", 1) for m in self.modules), default=1)
        if self.layers and max(self.layers) >= most:
            raise GatescopeError(f"no layer {max(self.layers)}: the recorded modules have at most {most} layer(s)")
        if not kept and (kinds is None or len(kinds)):  # kinds=() is "record nothing", what run() asks for
            more = " ..." if len(self.widths) > 12 else ""
            raise GatescopeError("modules / layers / kinds / names select no quantity of the model; "
                                 f"it has: {', '.join(list(self.widths)[:12])}{more}")

        edits: dict[str, list[Edit]] = defaultdict(list)
        for intervention in interventions:
            check(intervention.name)
            intervention.check(self.widths[intervention.name])
            edits[intervention.name].append(intervention)
        self._contexts: dict[str, HookContext] = {}
        for name, edit in edits_of(hooks, list(self.widths), check, self.hook):
            edits[name].append(edit)
        if route == "replay" and edits:
            raise GatescopeError("the replay route cannot apply interventions or hooks; use route='step' or 'auto'")
        self.edits = dict(edits)
        self.extra_meta = dict(meta or {})
        self._buffers = {name: _Buffer() for name in kept}
        self._plan = {  # (path, layer, direction) -> (kinds kept, kind -> edits)
            (path, layer, d): (
                frozenset(k for k in kinds_of(module) if format_name(path, layer, d, k) in self._buffers),
                {k: self.edits[n] for k in kinds_of(module) if (n := format_name(path, layer, d, k)) in self.edits},
            )
            for path, module in self.targets.items()
            for layer in range(getattr(module, "num_layers", 1))
            for d in directions_of(module)
        }
        self._ids: list[Tensor | None] = []  # per root call: its integer input, if any
        self._steps: dict[str, int] = defaultdict(int)  # cell path -> steps seen in this root call
        self._last_h: dict[str, Tensor] = {}  # cell path -> the h its last step returned (B, H), this root call
        self._longest: dict[str, int] = {}  # torch-kind module path -> the most steps one of its calls ran
        self._unaligned = False  # a cell's batch shrank: rows may not follow the input's batch order
        self._trace: Trace | None = None
        self._handles: list | None = None

    def _wanted(self, name: str) -> bool:
        path, layer, _, kind = parse_name(name)
        return (path in self.modules and (self.layers is None or layer in self.layers)
                and (self.kinds is None or kind in self.kinds))

    # -- which quantities -------------------------------------------------------------
    def kinds_of(self, path: str) -> tuple[str, ...]:
        return kinds_of(self.targets[path])

    def hook(self, name: str) -> HookContext:
        """The hook point of quantity ``name`` in this recording (one per name, shared by its hooks)."""
        if name not in self._contexts:
            check_name(self.targets, name)
            self._contexts[name] = context_for(name, self.targets[parse_name(name).path])
        return self._contexts[name]

    # -- the block --------------------------------------------------------------------
    def __enter__(self) -> Recording:
        if self._handles is not None:
            raise GatescopeError("this recording is already active; nest a new record() block instead")
        self._handles = [
            self.root.register_forward_pre_hook(self._before_root, with_kwargs=True),
            self.root.register_forward_hook(self._after_root, with_kwargs=True),
        ]
        for path, module in self.targets.items():
            _push(module, self, path)
        return self

    def __exit__(self, *exc_info) -> None:
        for handle in self._handles or ():
            handle.remove()
        self._handles = None
        for module in self.targets.values():
            _pop(module, self)
        self._flush_cells()
        if exc_info[0] is None:  # a block ended by an error has that to say, not what its edits missed
            self._say_unapplied()

    def _say_unapplied(self) -> None:
        """Warn of each Intervention that changed nothing in the block (`interventions.unapplied`). The steps of
        another package's module are its own to count, so its edits are not judged here."""
        judged = {name: edits for name, edits in self.edits.items()
                  if isinstance(self.targets[parse_name(name).path], RECURRENT_TYPES)}
        for message in unapplied(judged, self._longest):
            # level 3: the with statement's line (this method, __exit__, the block)
            warnings.warn(message, GatescopeWarning, stacklevel=3)

    def _before_root(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        first = args[0] if args else next(iter(kwargs.values()), None)
        integer = isinstance(first, Tensor) and not first.is_floating_point() and not first.is_complex()
        self._ids.append(first.detach() if integer else None)

    def _after_root(self, module: nn.Module, args: tuple, kwargs: dict, output: Any) -> None:
        if not is_cell(self.root):  # a cell recorded on its own: the whole block is one sequence
            self._flush_cells()

    # -- what the engine hands over ------------------------------------------------------
    def _sink(self, name: str, values: "list[Tensor] | Tensor", lengths: Tensor | None,
              steps: list[Tensor] | None = None) -> None:
        """Store values (T tensors (B, H), or one (T, B, H)) as rows: sequences in batch order.

        ``steps``: the forward's own tensors of each step when ``values`` is not that list (a cell's
        shrinking batch, padded), kept for gradients() when they are in the autograd graph."""
        buffer = self._buffers[name]
        steps = values if isinstance(values, list) else steps
        graph = steps if steps and steps[0].requires_grad else None  # the forward's own tensors, for gradients()
        if isinstance(values, list):
            by_sequence = torch.stack(values, dim=1).detach()  # (B, T, H): one copy, already in row order
        else:
            by_sequence = values.detach().transpose(0, 1)  # (B, T, H)
        batch, steps = by_sequence.shape[:2]
        buffer.rows.append(to_rows(by_sequence, lengths, self.dtype))
        whole = torch.full((batch,), steps, dtype=torch.int64) if lengths is None else lengths.cpu()
        buffer.lengths.append(whole)
        buffer.calls.append(len(self._ids) - 1)
        buffer.graph.append(graph)
        self._trace = None

    def _flush_cells(self) -> None:
        """Turn the steps of cells called in a loop into sequences (one per batch row).

        The batch may shrink from step to step as sequences end, as in a PackedSequence: each step
        then holds the rows still running, a prefix of the rows of the step before.
        """
        for name, buffer in self._buffers.items():
            if buffer.pending:
                steps, buffer.pending = buffer.pending, []
                values, lengths = pad_shrinking([s.detach() for s in steps], name)
                # rows are in the order the cell saw them, which need not be the input's
                self._unaligned |= lengths is not None
                self._sink(name, values, lengths, steps)
        self._steps.clear()
        self._last_h.clear()

    # -- the result ------------------------------------------------------------------------
    @property
    def kept(self) -> dict[str, int]:
        """What this recording keeps, known before any forward: quantity name -> units."""
        return {name: self.widths[name] for name in self._buffers}

    @property
    def trace(self) -> Trace:
        """Everything recorded so far, as a Trace of detached values (assembled once, then cached)."""
        if self._trace is None:
            self._trace = self._assemble()
        return self._trace

    def take(self) -> Trace:
        """The trace of what was recorded since the block opened or since the last ``take()``; the recording
        then starts afresh. A run over many batches keeps one block open and takes each batch's trace, so
        that the recording's set-up (finding the modules, checking the selection, the hooks) is paid once.
        A cell recorded on its own ends its sequence here, as at the end of the block."""
        self._flush_cells()
        trace = self.trace
        self._buffers = {name: _Buffer() for name in self._buffers}
        self._ids.clear()
        self._unaligned = False
        self._trace = None
        return trace

    def _assemble(self) -> Trace:
        names = [n for n, buffer in self._buffers.items() if buffer.rows]
        modules = [module_info(p, self.targets[p]) for p in self.modules]
        meta = {"modules": modules, **self._vocab_meta(), **self.extra_meta}
        if not names:
            return Trace({}, [0], meta=meta)
        lengths = torch.cat(self._buffers[names[0]].lengths)
        for name in names[1:]:
            if not torch.equal(torch.cat(self._buffers[name].lengths), lengths):
                raise GatescopeError(
                    f"{names[0]} and {name} saw sequences of different lengths (an encoder and a decoder?); "
                    "record them separately with modules=[...]"
                )
        offsets = torch.cat([torch.zeros(1, dtype=torch.int64), lengths.cumsum(0)])
        tensors = {name: joined(self._buffers[name].rows) for name in names}
        return Trace(tensors, offsets, token_ids=self._token_ids(names[0]), meta=meta)

    def gradients(self, output: Tensor, names: Sequence[str] | None = None) -> dict[str, Tensor]:
        """d output / d (each recorded value), laid out like the trace: name -> (N, H).

        ``output`` is a scalar computed inside the block with grad enabled (e.g. a logit difference).
        The gradient is taken with respect to the very tensors the forward used, after any edits; the
        model's parameters need not require grad. Rows of calls made under no_grad are zero.
        """
        names = self.trace.names if names is None else list(names)
        unknown = [n for n in names if n not in self._buffers]
        if unknown:
            raise GatescopeError(f"{', '.join(unknown)}: not kept by this recording (see its modules / layers / "
                                 "kinds / names)")
        missing = [n for n in names if not any(g is not None for g in self._buffers[n].graph)]
        if missing:
            raise GatescopeError(f"no gradients for {', '.join(missing)}: record with grad enabled "
                                 "(not under torch.no_grad()) and not on the replay route")
        flat = [t for n in names for call in self._buffers[n].graph if call is not None for t in call]
        if not output.requires_grad:
            raise GatescopeError("the output does not depend on the recorded values through autograd "
                                 "(was it computed under torch.no_grad()?)")
        grads = torch.autograd.grad(output, flat, allow_unused=True, retain_graph=True)
        out, k = {}, 0
        for name in names:
            buffer = self._buffers[name]
            chunks = []
            for call, lengths, rows in zip(buffer.graph, buffer.lengths, buffer.rows):
                if call is None:
                    chunks.append(rows.new_zeros(rows.shape, dtype=output.dtype))
                    continue
                g = [torch.zeros_like(t) if d is None else d for t, d in zip(call, grads[k : k + len(call)])]
                k += len(call)
                by_step, _ = pad_shrinking(g, name)  # T x (B, H), or (T, B, H) for a shrinking batch
                by_sequence = torch.stack(by_step, dim=1) if isinstance(by_step, list) else by_step.transpose(0, 1)
                chunks.append(to_rows(by_sequence, lengths))
            out[name] = torch.cat(chunks)
        return out

    def _token_ids(self, name: str) -> Tensor | None:
        """The integer inputs of the root's calls, cut to each sequence's length, laid out as the
        recorded module reads its input (its batch_first, or ``record(batch_first=...)``)."""
        if self._unaligned:
            return None
        module = self.targets[parse_name(name).path]
        batch_first = self.batch_first if self.batch_first is not None else getattr(module, "batch_first", None)
        buffer = self._buffers[name]
        pieces = []
        for call, lengths in zip(buffer.calls, buffer.lengths):
            ids = self._ids[call] if 0 <= call < len(self._ids) else None
            if ids is None or ids.dim() not in (1, 2):
                return None
            batch, longest = lengths.numel(), int(lengths.max()) if lengths.numel() else 0
            given = list(ids.shape)
            if ids.dim() == 1:
                ids = ids.unsqueeze(0)  # one unbatched sequence
            elif batch_first is not None:
                ids = ids if batch_first else ids.t()
            else:  # a cell has no layout of its own: only one that fits what it saw
                fits = [v for v in (ids, ids.t()) if v.shape[0] == batch and v.shape[1] >= longest]
                if len(fits) != 1 or ids.shape[0] == ids.shape[1]:
                    return _no_ids(f"the model's integer input {list(ids.shape)} could be time- or batch-major "
                                   f"for {name}; pass record(..., batch_first=True or False)")
                ids = fits[0]
            if ids.shape[0] != batch or ids.shape[1] < longest:
                layout = "[B, T]" if batch_first or batch_first is None else "[T, B]"
                return _no_ids(f"the model's integer input has shape {given}, read as {layout}, but {name} saw "
                               f"{batch} sequence(s) of up to {longest} steps; pass record(..., batch_first=...)")
            pieces.append(to_rows(ids[:, :longest, None].cpu(), lengths)[:, 0])  # (sum of lengths,)
        return torch.cat(pieces).to(torch.int64) if pieces else None

    def _vocab_meta(self) -> dict[str, Any]:
        vocab = getattr(self.root, "vocab", None)
        tokens = getattr(vocab, "tokens", None)
        if tokens is None:
            return {}
        return {"vocab": list(tokens), "tokenizer": getattr(vocab, "tokenizer", None)}


def _say_sizes(names: list[str], widths: dict[str, int]) -> None:
    """Say how large each quantity recorded on request is, before anything is recorded."""
    for name in names:
        warnings.warn(f"{name} is recorded: {widths[name]} values per step per sequence "
                      f"({widths[name] * 4} bytes per token at float32)", GatescopeWarning, stacklevel=4)


def _no_ids(reason: str) -> None:
    warnings.warn(f"gatescope: the trace has no token ids: {reason}", stacklevel=4)
    return None


# -- the stack of recordings on each module ------------------------------------------------------
@dataclass
class _Stack:
    previous: dict[str, Any]  # the module's own instance attributes ``forward`` (and other step methods), if any
    active: list[tuple[Recording, str]]  # (recording, the module's path in it), outermost first


_STACKS: "weakref.WeakKeyDictionary[nn.Module, _Stack]" = weakref.WeakKeyDictionary()


def _push(module: nn.Module, recording: Recording, path: str) -> None:
    stack = _STACKS.get(module)
    if stack is None:
        installed = {"forward": functools.partial(_forward, module)}
        packaged = packaged_of(module)
        for name, method in packaged.methods if packaged is not None else ():  # e.g. an mLSTM layer's step
            installed[name] = functools.partial(_packaged_method, module, method)
        stack = _STACKS[module] = _Stack({name: module.__dict__.get(name) for name in installed}, [])
        for name, value in installed.items():
            setattr(module, name, value)
    stack.active.append((recording, path))


def _pop(module: nn.Module, recording: Recording) -> None:
    stack = _STACKS.get(module)
    if stack is None:
        return
    stack.active = [(r, p) for r, p in stack.active if r is not recording]
    if not stack.active:
        del _STACKS[module]
        for name, previous in stack.previous.items():
            if previous is None:
                module.__dict__.pop(name, None)
            else:
                setattr(module, name, previous)


def _forward(module: nn.Module, *args, **kwargs):
    """The forward of a recorded module: the engine (or the module's own ``forward_observed``, see
    gatescope.recorder.recordable), observed by every recording active on it."""
    active = list(_STACKS[module].active)
    route = next((r.route for r, _ in reversed(active) if r.route != "auto"), "auto")
    graph = torch.is_grad_enabled() and route != "replay"  # recorded values join the graph (gradients())
    observer_for = _observer_for(active, graph)
    if not isinstance(module, RECURRENT_TYPES):
        packaged = packaged_of(module)  # another package's module, run through its own code
        if packaged is not None:
            return packaged.forward(module, observer_for, *args, **kwargs)
        return module.forward_observed(observer_for, *args, **kwargs)
    input, hx = _input_and_state(*args, **kwargs)
    if not is_cell(module):
        steps = _steps_of(module, input)
        for recording, path in active:
            recording._longest[path] = max(recording._longest.get(path, 0), steps)
        return engine.run(module, input, hx, observer_for, route)
    observer = _observer(active, 0, "fwd", graph, cell=True)
    for recording, path in active:
        check_still_running(path, recording._steps[path], recording._last_h.get(path), input, hx)
    out = engine.run_cell(module, input, hx, observer)
    h = out[0] if isinstance(out, tuple) else out  # (B, H)
    for recording, path in active:
        recording._steps[path] += 1
        recording._last_h[path] = h.detach()
        recording._longest[path] = max(recording._longest.get(path, 0), recording._steps[path])
    return out


def _steps_of(module: nn.Module, input) -> int:
    """The steps a call of a torch-kind layer runs (0 for an input torch will refuse)."""
    if isinstance(input, PackedSequence):
        return len(input.batch_sizes)
    if not isinstance(input, Tensor) or input.dim() not in (2, 3):
        return 0
    return input.shape[1] if input.dim() == 3 and module.batch_first else input.shape[0]


def _observer_for(active: list[tuple[Recording, str]], graph: bool) -> engine.ObserverFor:
    return lambda layer, d: _observer(active, layer, d, graph)


def _packaged_method(module: nn.Module, method, *args, **kwargs):
    """Another package's method that runs steps (an mLSTM layer's ``step``), observed as its forward is."""
    return method(module, _observer_for(list(_STACKS[module].active), torch.is_grad_enabled()), *args, **kwargs)


def _input_and_state(input, hx=None):
    """torch's recurrent forward arguments ``(input, hx=None)``."""
    return input, hx


def _observer(active: list[tuple[Recording, str]], layer: int, direction: str, graph: bool,
              cell: bool = False) -> engine.Observer:
    """One observer for every active recording: their kinds kept, their edits in nesting order."""
    keep: set[str] = set()
    edits: dict[str, list[Edit]] = defaultdict(list)
    sinks = []
    for recording, path in active:
        kept, own = recording._plan[(path, layer, direction)]
        for kind, fns in own.items():
            if cell:  # a cell runs one step per call: the recording counts the steps
                step = recording._steps[path]
                fns = [functools.partial(_at_step, fn, step) for fn in fns]
            edits[kind].extend(fns)
        if kept:
            keep |= kept
            sinks.append((recording, path, kept))
    if graph:
        for kind in keep:
            edits[kind].append(_join_graph)

    def sink(kind: str, values, lengths: Tensor | None) -> None:
        for recording, path, kept in sinks:
            if kind in kept:
                name = format_name(path, layer, direction, kind)
                if cell:
                    recording._buffers[name].pending.append(values[0])
                else:
                    recording._sink(name, values, lengths)

    return engine.Observer(frozenset(keep), dict(edits), sink)


def _at_step(fn: Edit, step: int, value: Tensor, _: int) -> Tensor | None:
    return fn(value, step)


def _join_graph(value: Tensor, step: int) -> Tensor | None:
    """With grad enabled, a recorded value outside the graph (a frozen model) becomes a leaf of it, so
    that gradients with respect to it exist; a value already in the graph is left as it is."""
    return None if value.requires_grad else value.detach().requires_grad_()


def record(
    model: nn.Module,
    *,
    modules: Sequence[str] | None = None,
    layers: Sequence[int] | None = None,
    kinds: Sequence[str] | None = None,
    names: Selector | None = None,
    dtype: torch.dtype = torch.float32,
    interventions: Iterable[Intervention] = (),
    hooks: Hooks | None = None,
    route: engine.Route = "auto",
    meta: Mapping[str, Any] | None = None,
    batch_first: bool | None = None,
) -> Recording:
    """Record (and optionally edit) every gate of every recurrent module of ``model``: ``with record(model) as rec``.

    Args:
        model: any nn.Module; every LSTM, GRU, LSTMCell and GRUCell inside it is recorded, unchanged.
        modules: the recurrent modules to keep, by path (default: all).
        layers: the layers to keep (default: all).
        kinds: the kinds to keep, e.g. ``["f", "c", "h"]`` (default: all the cell records).
        names: a selector of the quantities to keep: a name, a glob such as ``"*.f"``, a list or a predicate.
        dtype: storage dtype of the recorded values (float16 / bfloat16 halve the memory).
        interventions: `Intervention` edits, checked against each quantity's width now.
        hooks: ``[(selector, fn(value, hook))]`` (gatescope.recorder.hooks) or ``{name: fn(value, step)}``,
            each returning a replacement [B, H] or None.
        route: the engine route (``auto`` picks ``replay`` on CUDA when nothing needs the step loop).
        meta: extra entries for the trace's metadata.
        batch_first: the layout of the model's integer input (token ids), by default the recorded
            module's own batch_first.

    Returns:
        The `Recording`, a context manager; after the block, ``rec.trace`` is the Trace.

    Raises:
        GatescopeError: a filter or selector that selects nothing, or an intervention's units outside its
            quantity's width (all checked before any forward).
    """
    return Recording(model, modules=modules, layers=layers, kinds=kinds, names=names, dtype=dtype,
                     interventions=interventions, hooks=hooks, route=route, meta=meta, batch_first=batch_first)


def run(model: nn.Module, input: Any, interventions: Iterable[Intervention] = (), hooks: Hooks | None = None):
    """``model(input)`` under ``interventions`` and ``hooks``, recording nothing.

    With neither and grad disabled: the plain forward (torch's fused kernels). Otherwise inside a
    record() block (kinds=()), so that edits apply and, with grad enabled, the recurrent modules run
    gatescope's differentiable engine (cuDNN's RNN backward refuses eval mode; captum #564)."""
    interventions = list(interventions)
    if not interventions and not hooks and not torch.is_grad_enabled():
        return model(input)
    with record(model, kinds=(), interventions=interventions, hooks=hooks):
        return model(input)


def run_with_cache(model: nn.Module, *args: Any, names: Selector | None = None, **kwargs: Any) -> tuple[Any, Trace]:
    """Run ``model(*args, **kwargs)`` once and record it, as TransformerLens's ``run_with_cache``.

    Args:
        model: any nn.Module with recurrent modules inside.
        *args: the model's positional arguments.
        names: a selector of the quantities to keep: a name, a glob such as ``"*.h"``, a list or a
            predicate (default: every quantity).
        **kwargs: the model's keyword arguments.

    Returns:
        ``(output, trace)``: the model's output and a Trace of the selected quantities. Grad mode is the
        caller's; the trace holds detached values.

    Raises:
        GatescopeError: a selector that matches nothing.
    """
    with record(model, names=names) as rec:
        output = model(*args, **kwargs)
    return output, rec.trace
