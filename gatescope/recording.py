"""record(): capture every gate of every recurrent module in any nn.Module, and edit them.

Inside ``with gatescope.record(model) as rec:`` each torch.nn.LSTM / GRU / LSTMCell / GRUCell (and
gatescope's own LSTM / GRU) found in ``model.named_modules()`` runs through gatescope's engine,
which computes the same outputs as torch's kernel while handing every quantity to the recording.
No model code changes; the originals are restored when the block ends.

Every recorded quantity is also a hook point in the sense of TransformerLens's HookPoint
(``fn(value, step) -> value``): `Intervention` (set, scale, add or patch chosen units at chosen
timesteps, as pyvene's interventions do) and plain ``hooks`` change the value during the forward,
and the change is carried through the recurrence to every later step, layer and output.
"""
from __future__ import annotations

import functools
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import Tensor, nn

from gatescope import engine
from gatescope.cells import CellWeights, gru_step, input_projection, lstm_step, step_weights
from gatescope.errors import GatescopeError
from gatescope.names import GRU_KINDS, LSTM_KINDS, LSTM_PROJ_KINDS, format_name, parse_name
from gatescope.trace import Trace

RECURRENT_TYPES = (nn.LSTM, nn.GRU, nn.LSTMCell, nn.GRUCell)
Hook = Callable[[Tensor, int], "Tensor | None"]


@dataclass(frozen=True)
class Intervention:
    """Change chosen units of one recorded quantity during the forward.

    name: a quantity name, e.g. ``"rnn.l1.fwd.h"``; units: unit indices (None = all);
    op: ``set`` / ``scale`` / ``add`` with a scalar or a tensor broadcastable to [B, len(units)],
    or ``patch`` with a tensor [B, T, len(units)] (batch-first) whose ``[:, t]`` replaces step t;
    steps: input positions t to change: any iterable of ints, or a slice such as ``slice(5, None)``
    for "from step 5 on" (None = every step).
    """

    name: str
    units: Sequence[int] | None = None
    op: Literal["set", "scale", "add", "patch"] = "set"
    value: float | Tensor = 0.0
    steps: Iterable[int] | slice | None = None
    _indices: dict = field(default_factory=dict, init=False, repr=False, compare=False)  # device -> units

    def __post_init__(self) -> None:
        parse_name(self.name)
        if self.op not in ("set", "scale", "add", "patch"):
            raise GatescopeError(f"unknown intervention op {self.op!r}: use set, scale, add or patch")
        if self.op == "patch" and not (isinstance(self.value, Tensor) and self.value.dim() == 3):
            raise GatescopeError("a patch intervention needs a value tensor [batch, time, units]")
        object.__setattr__(self, "units", None if self.units is None else tuple(int(u) for u in self.units))
        if isinstance(self.steps, slice):
            if self.steps.step not in (None, 1):
                raise GatescopeError("a slice of steps takes no stride: use a list of steps instead")
        elif self.steps is not None:
            object.__setattr__(self, "steps", frozenset(int(s) for s in self.steps))

    def __call__(self, value: Tensor, step: int) -> Tensor | None:
        """The edited copy of ``value`` [B, H] at ``step``, or None when this step is untouched."""
        if not self._applies(step):
            return None
        index = self._index(value.device)
        new = self.value
        if isinstance(new, Tensor):
            new = new.to(device=value.device, dtype=value.dtype)
            if self.op == "patch":
                if new.shape[0] != value.shape[0] or step >= new.shape[1]:
                    raise GatescopeError(
                        f"patch for {self.name}: source has shape {tuple(new.shape)}, but this run has "
                        f"batch {value.shape[0]} and reaches step {step}"
                    )
                new = new[:, step]
        if self.op == "scale":
            new = value[:, index] * new
        elif self.op == "add":
            new = value[:, index] + new
        out = value.clone()
        out[:, index] = new
        return out

    def _index(self, device: torch.device) -> slice | Tensor:
        """The units as an index into [B, H] columns: a slice when they are a run, else a tensor."""
        if self.units is None:
            return slice(None)
        first = self.units[0]
        if self.units == tuple(range(first, first + len(self.units))):
            return slice(first, first + len(self.units))
        if device not in self._indices:
            self._indices[device] = torch.tensor(self.units, device=device)
        return self._indices[device]

    def _applies(self, step: int) -> bool:
        if isinstance(self.steps, slice):
            start, stop = self.steps.start, self.steps.stop
            return (start is None or step >= start) and (stop is None or step < stop)
        return self.steps is None or step in self.steps


class Recording:
    """What ``record()`` yields: collects rows while the block runs; ``.trace`` assembles them."""

    def __init__(
        self,
        root: nn.Module,
        modules: Sequence[str] | None,
        layers: Sequence[int] | None,
        kinds: Sequence[str] | None,
        dtype: torch.dtype,
        edits: Mapping[str, list[Hook]],
        route: engine.Route,
        meta: Mapping[str, Any] | None,
    ) -> None:
        self.root = root
        self.dtype = dtype
        self.route = route
        self.targets = find_recurrent(root)
        if not self.targets:
            raise GatescopeError(f"no LSTM or GRU module found in {type(root).__name__}")
        if modules is not None:
            unknown = sorted(set(modules) - set(self.targets))
            if unknown:
                raise GatescopeError(f"no recurrent module {', '.join(unknown)}; the model has: {', '.join(self.targets)}")
        self.modules = list(self.targets) if modules is None else [m for m in self.targets if m in modules]
        self.layers = None if layers is None else frozenset(layers)
        if kinds is not None:
            bad = sorted(set(kinds) - set(LSTM_PROJ_KINDS) - set(GRU_KINDS))
            if bad:
                raise GatescopeError(f"unknown kind(s) {', '.join(bad)}: LSTM has i f g o c h (m with proj_size), GRU r z n h")
        self.kinds = None if kinds is None else frozenset(kinds)
        self.edits = dict(edits)
        for name in self.edits:
            self._check_name(name)
        self.extra_meta = dict(meta or {})
        self._rows: dict[str, list[Tensor]] = defaultdict(list)  # name -> [(n, H)] chunks
        self._lengths: dict[str, list[Tensor]] = defaultdict(list)  # name -> [(B,)] per call
        self._calls: dict[str, list[int]] = defaultdict(list)  # name -> root call of each chunk
        self._ids: list[Tensor | None] = []  # root call -> its integer input, if any
        self._cell_steps: dict[str, dict[str, list[Tensor]]] = {}  # cell path -> kind -> [(B, H)]
        self._used: dict[str, list[list[Tensor]]] = defaultdict(list)  # name -> per call, T x (B, H) in the graph
        self._trace: Trace | None = None
        self._unaligned = False  # a cell's batch shrank: rows may not follow the input's batch order

    # -- which quantities -------------------------------------------------------------
    def kinds_of(self, path: str) -> tuple[str, ...]:
        module = self.targets[path]
        if isinstance(module, (nn.GRU, nn.GRUCell)):
            return GRU_KINDS
        return LSTM_PROJ_KINDS if getattr(module, "proj_size", 0) else LSTM_KINDS

    def _check_name(self, name: str) -> None:
        path, layer, direction, kind = parse_name(name)
        module = self.targets.get(path)
        if module is None:
            raise GatescopeError(f"no recurrent module {path!r} for {name}; the model has: {', '.join(self.targets)}")
        layers = getattr(module, "num_layers", 1)
        if layer >= layers:
            raise GatescopeError(f"{name}: {path} has {layers} layer(s)")
        if direction == "bwd" and not getattr(module, "bidirectional", False):
            raise GatescopeError(f"{name}: {path} is not bidirectional")
        if kind not in self.kinds_of(path):
            raise GatescopeError(f"{name}: {type(module).__name__} has no kind {kind!r} (it has {' '.join(self.kinds_of(path))})")

    def _observer(self, path: str, layer: int, direction: str) -> engine.Observer:
        keep: frozenset[str] = frozenset()
        if path in self.modules and (self.layers is None or layer in self.layers):
            keep = frozenset(k for k in self.kinds_of(path) if self.kinds is None or k in self.kinds)
        edits = {}
        for kind in self.kinds_of(path):
            hooks = self.edits.get(format_name(path, layer, direction, kind))
            if hooks:
                edits[kind] = hooks
        return engine.Observer(keep, edits, functools.partial(self._sink, path, layer, direction))

    def _sink(self, path: str, layer: int, direction: str, kind: str, values, lengths: Tensor | None) -> None:
        """Store values (T tensors (B, H), or one (T, B, H)) as rows: sequences in batch order."""
        name = format_name(path, layer, direction, kind)
        if isinstance(values, list):
            if torch.is_grad_enabled() and values[0].requires_grad:
                self._used[name].append(values)  # the forward's own tensors, for gradients()
            by_sequence = torch.stack(values, dim=1)  # (B, T, H): one copy, already in row order
        else:
            by_sequence = values.transpose(0, 1)  # (B, T, H)
        batch, steps = by_sequence.shape[:2]
        if lengths is None:
            lengths = torch.full((batch,), steps, dtype=torch.int64)
        self._rows[name].append(_to_rows(by_sequence, lengths).to(self.dtype))
        self._lengths[name].append(lengths.cpu())
        self._calls[name].append(len(self._ids) - 1)
        self._trace = None

    # -- the patched forwards ---------------------------------------------------------------
    def _run_rnn(self, path: str, module: nn.Module, input, hx=None):
        return engine.run(module, input, hx, lambda layer, d: self._observer(path, layer, d), self.route)

    def _run_cell(self, path: str, module: nn.Module, input: Tensor, hx=None):
        is_lstm = isinstance(module, nn.LSTMCell)
        unbatched = input.dim() == 1
        x = input.unsqueeze(0) if unbatched else input  # (B, I)
        if hx is None:
            zeros = x.new_zeros(x.shape[0], module.hidden_size)
            hx = (zeros, zeros) if is_lstm else zeros
        elif unbatched:
            hx = tuple(s.unsqueeze(0) for s in hx) if is_lstm else hx.unsqueeze(0)
        steps = self._cell_steps.setdefault(path, defaultdict(list))
        step = len(steps["h"])
        observer = self._observer(path, 0, "fwd")

        def tap(kind: str, value: Tensor) -> Tensor:
            for edit in observer.edits.get(kind, ()):
                changed = edit(value, step)
                if changed is not None:
                    value = changed
            steps[kind].append(value)
            return value

        w = CellWeights(module.weight_ih, module.weight_hh, module.bias_ih, module.bias_hh)
        if is_lstm:
            out = lstm_step(input_projection(x, w, fold_bias_hh=True), hx[0], hx[1], step_weights(w, True), tap)
        else:
            out = gru_step(input_projection(x, w, fold_bias_hh=False), hx, step_weights(w, False), tap)
        if unbatched:
            out = tuple(s.squeeze(0) for s in out) if is_lstm else out.squeeze(0)
        return out

    def _flush_cells(self) -> None:
        """Turn the steps of cells called in a loop into sequences (one per batch row).

        The batch may shrink from step to step as sequences end, as in a PackedSequence: each step
        then holds the rows still running, a prefix of the rows of the step before.
        """
        for path, steps in self._cell_steps.items():
            observer = self._observer(path, 0, "fwd")
            for kind in observer.keep:
                if steps.get(kind):
                    values, lengths = _pad_shrinking(steps[kind], f"{path} ({kind})")
                    # rows are in the order the cell saw them, which need not be the input's
                    self._unaligned |= lengths is not None
                    self._sink(path, 0, "fwd", kind, values, lengths)
        self._cell_steps = {}

    def _before_root(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        first = args[0] if args else next(iter(kwargs.values()), None)
        integer = isinstance(first, Tensor) and not first.is_floating_point() and not first.is_complex()
        self._ids.append(first.detach() if integer else None)

    def _after_root(self, module: nn.Module, args: tuple, kwargs: dict, output: Any) -> None:
        if not _is_cell(self.root):  # a cell recorded on its own: the whole block is one sequence
            self._flush_cells()

    # -- the result ------------------------------------------------------------------------
    @property
    def trace(self) -> Trace:
        """Everything recorded so far, as a Trace (assembled once, then cached)."""
        if self._trace is None:
            self._trace = self._assemble()
        return self._trace

    def _assemble(self) -> Trace:
        names = [
            format_name(path, layer, d, kind)
            for path in self.modules
            for layer in range(getattr(self.targets[path], "num_layers", 1))
            for d in (("fwd", "bwd") if getattr(self.targets[path], "bidirectional", False) else ("fwd",))
            for kind in self.kinds_of(path)
        ]
        names = [n for n in names if self._rows.get(n)]
        meta = {"modules": [module_info(p, self.targets[p]) for p in self.modules], **self._vocab_meta(), **self.extra_meta}
        if not names:
            return Trace({}, [0], meta=meta)
        lengths = torch.cat(self._lengths[names[0]])
        for name in names[1:]:
            other = torch.cat(self._lengths[name])
            if not torch.equal(other, lengths):
                raise GatescopeError(
                    f"{names[0]} and {name} saw sequences of different lengths (an encoder and a decoder?); "
                    "record them separately with modules=[...]"
                )
        offsets = torch.cat([torch.zeros(1, dtype=torch.int64), lengths.cumsum(0)])
        tensors = {name: torch.cat(self._rows[name]) for name in names}
        return Trace(tensors, offsets, token_ids=self._token_ids(names[0]), meta=meta)

    def gradients(self, output: Tensor, names: Sequence[str] | None = None) -> dict[str, Tensor]:
        """d output / d (each recorded value), laid out like the trace: name -> (N, H).

        ``output`` is a scalar computed inside the block with grad enabled (e.g. a logit difference).
        The gradient is taken with respect to the very tensors the forward used, after any edits.
        """
        names = self.trace.names if names is None else list(names)
        missing = [n for n in names if not self._used.get(n)]
        if missing:
            raise GatescopeError(f"no gradients for {', '.join(missing)}: record with grad enabled (not under no_grad)")
        flat = [t for n in names for call in self._used[n] for t in call]
        grads = torch.autograd.grad(output, flat, allow_unused=True, retain_graph=True)
        out, k = {}, 0
        for name in names:
            chunks = []
            for call, lengths in zip(self._used[name], self._lengths[name]):
                g = [torch.zeros_like(t) if d is None else d for t, d in zip(call, grads[k : k + len(call)])]
                k += len(call)
                chunks.append(_to_rows(torch.stack(g, dim=1), lengths))
            out[name] = torch.cat(chunks)
        return out

    def _token_ids(self, name: str) -> Tensor | None:
        """The integer inputs of the root's calls, cut to each sequence's length, if they fit."""
        if self._unaligned:
            return None
        pieces = []
        for call, lengths in zip(self._calls[name], self._lengths[name]):
            ids = self._ids[call] if 0 <= call < len(self._ids) else None
            if ids is None:
                return None
            longest = int(lengths.max()) if lengths.numel() else 0
            if ids.dim() == 1 and lengths.numel() == 1 and ids.shape[0] >= longest:
                ids = ids.unsqueeze(0)
            elif ids.dim() != 2:
                return None
            elif not (ids.shape[0] == lengths.numel() and ids.shape[1] >= longest):
                if ids.shape[1] == lengths.numel() and ids.shape[0] >= longest:
                    ids = ids.t()
                else:
                    return None
            pieces += [ids[b, : int(n)].cpu() for b, n in enumerate(lengths)]
        return torch.cat(pieces).to(torch.int64) if pieces else None

    def _vocab_meta(self) -> dict[str, Any]:
        vocab = getattr(self.root, "vocab", None)
        tokens = getattr(vocab, "tokens", None)
        if tokens is None:
            return {}
        return {"vocab": list(tokens), "tokenizer": getattr(vocab, "tokenizer", None)}


def _pad_shrinking(steps: list[Tensor], what: str) -> tuple["list[Tensor] | Tensor", Tensor | None]:
    """Steps [(B_t, H)] with B_t never growing -> the steps themselves (equal batches) or a padded
    (T, B, H) tensor and each row's length."""
    sizes = [s.shape[0] for s in steps]
    if len(set(sizes)) == 1:
        return steps, None
    if any(b > a for a, b in zip(sizes, sizes[1:])):
        raise GatescopeError(
            f"{what}: the batch grew from one step to the next ({sizes}); record a cell whose batch only "
            "shrinks as sequences end (rows still running first), or one sequence at a time"
        )
    batch = torch.tensor(sizes)
    lengths = (batch.unsqueeze(0) > torch.arange(sizes[0]).unsqueeze(1)).sum(1)  # (B,)
    padded = steps[0].new_zeros(len(steps), sizes[0], steps[0].shape[1])
    for t, value in enumerate(steps):
        padded[t, : value.shape[0]] = value
    return padded, lengths


def _to_rows(by_sequence: Tensor, lengths: Tensor) -> Tensor:
    """(B, T, H) values -> (sum of lengths, H) rows, sequence by sequence (padding dropped)."""
    batch, steps = by_sequence.shape[:2]
    if bool((lengths == steps).all()):
        return by_sequence.reshape(batch * steps, by_sequence.shape[-1])  # explicit: B may be 0
    return torch.cat([by_sequence[b, : int(n)] for b, n in enumerate(lengths.tolist())])


def _root_name(root: nn.Module) -> str:
    return type(root).__name__.lower()


def _is_cell(module: nn.Module) -> bool:
    return isinstance(module, (nn.LSTMCell, nn.GRUCell))


def find_recurrent(root: nn.Module) -> dict[str, nn.Module]:
    """Every recurrent module in ``root`` by its record path (``lstm`` etc. for the root itself)."""
    found = {}
    for name, module in root.named_modules():
        if isinstance(module, RECURRENT_TYPES):
            found[name or _root_name(module)] = module
    return found


def module_info(path: str, module: nn.Module) -> dict[str, Any]:
    """The architecture of one recurrent module, as the trace metadata and `inspect --json` give it."""
    cell = next(t.__name__ for t in RECURRENT_TYPES if isinstance(module, t))
    return {
        "name": path,
        "cell": cell,
        "input_size": module.input_size,
        "hidden_size": module.hidden_size,
        "num_layers": getattr(module, "num_layers", 1),
        "bidirectional": bool(getattr(module, "bidirectional", False)),
        "proj_size": getattr(module, "proj_size", 0),
        "bias": bool(module.bias),
    }


@contextmanager
def record(
    model: nn.Module,
    *,
    modules: Sequence[str] | None = None,
    layers: Sequence[int] | None = None,
    kinds: Sequence[str] | None = None,
    dtype: torch.dtype = torch.float32,
    interventions: Iterable[Intervention] = (),
    hooks: Mapping[str, Hook | Sequence[Hook]] | None = None,
    route: engine.Route = "auto",
    meta: Mapping[str, Any] | None = None,
) -> Iterator[Recording]:
    """Record (and optionally edit) every gate of every recurrent module of ``model``.

    modules / layers / kinds: what to keep (default: everything); dtype: storage dtype of the
    recorded values (float16 / bfloat16 halve the memory); interventions / hooks: edits applied at
    every step, keyed by quantity name (hooks are ``fn(value [B, H], step) -> Tensor | None``);
    route: the engine route (``auto`` picks ``replay`` on CUDA when nothing needs the step loop);
    meta: extra entries for the trace's metadata. After the block, ``rec.trace`` is the Trace.
    """
    edits: dict[str, list[Hook]] = defaultdict(list)
    for intervention in interventions:
        edits[intervention.name].append(intervention)
    for name, fns in (hooks or {}).items():
        edits[name].extend([fns] if callable(fns) else fns)
    recording = Recording(model, modules, layers, kinds, dtype, edits, route, meta)
    patched = []
    for path, module in recording.targets.items():
        run = recording._run_cell if _is_cell(module) else recording._run_rnn
        patched.append((module, module.__dict__.get("forward")))
        module.forward = functools.partial(run, path, module)
    handles = [
        model.register_forward_pre_hook(recording._before_root, with_kwargs=True),
        model.register_forward_hook(recording._after_root, with_kwargs=True),
    ]
    try:
        yield recording
    finally:
        for handle in handles:
            handle.remove()
        for module, previous in patched:
            if previous is None:
                del module.forward
            else:
                module.forward = previous
        recording._flush_cells()
