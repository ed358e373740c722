"""Hook-point modules: every recorded quantity as an identity nn.Module, for captum, nnsight and pyvene.

TransformerLens's HookPoint (Nanda 2022) for recurrent gates: ``hooked = gatescope.hook_points(model)``
is an nn.Module that runs ``model`` with every recorded quantity passing through an identity module of its
own, ``hooked.get_submodule("hooks." + name)`` (``hooks.rnn.l0.fwd.f`` for the quantity ``rnn.l0.fwd.f``;
``hooked.points[name]`` is the same module). Standard forward hooks on it read the value and may return a
replacement, which the rest of the recurrence uses. ``hooks.{path}.out`` is the recurrent module's output
sequence (the tensor of its ``(output, hidden)`` tuple; a PackedSequence's ``data``) as a module of its own:
the layer to give captum when the question is about the whole LSTM or GRU rather than one gate (an
nn.LSTM / GRU / gatescope.LSTM / GRU; a cell's output is one step's state, so cells have none, and neither
have other packages' modules, gatescope.recorder.packaged, whose outputs their packages shape).

Two ways of passing a quantity, chosen by ``per``:

* ``per="step"`` (the default, one forward): the point is called at every timestep with the value
  [B, H]; ``point.step`` (the input position, for ``bwd`` too) and ``point.context`` (the `HookContext`)
  say which. A replacement is the core's hook edit: carried through the recurrence exactly as an
  `Intervention`. Cheap, but a library that wants one tensor per layer per forward (captum's Layer*
  methods, nnsight's ``.output``, pyvene) would see only one of T calls: use ``per="sequence"`` for them.
* ``per="sequence"`` (two forwards): the point is called once per forward with the quantity at every
  step, [B, T, H] batch-first (the unedited run's values, from a first forward), and what it returns is
  applied as a patch in a second forward, whose output is the model's: an entry the point changed takes
  the returned value at that step, every other entry keeps what the second forward computes there
  (recomputed downstream of the changes). So setting or interchanging chosen units at chosen steps
  equals the `Intervention` that does the same (set, or patch from the counterfactual's values).

  Gradients with respect to a point that has forward hooks (captum's, pyvene's: the layer attributed)
  are those of the model with the returned tensor as the quantity at every step (patch semantics: one
  function of one tensor, so captum's completeness holds; at the last step this is gatescope's per-step
  gradient, at earlier ones it leaves out the paths through the quantity's own later values, which the
  tensor holds fixed); input gradients pass through the point once. A point without hooks that changes
  nothing is left out of the second forward. Integrated gradients on a point sum to the output with the
  returned tensor minus the output with the baseline's values patched in.

  The model's own submodules run twice: read the hooked model's output, not theirs. The second forward
  draws the same random numbers (dropout masks) as the first. Each recurrent module must be called once
  per forward (a module called twice, or a cell loop whose batch shrinks, is a one-line error: use
  ``per="step"``), and a ``record()`` block around the hooked model, which would see both forwards, is
  refused (``per="step"`` nests in one).

Everything runs through `gatescope.record` hooks (the core's one stepper); nothing here touches a
recording that does not ask for hook points.
"""
from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator
from typing import Any, Literal

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence

from gatescope.errors import GatescopeError
from gatescope.recorder.hooks import HookContext, Selector, select
from gatescope.recorder.recordable import check_name, find_recurrent, is_cell, on_request, packaged_of, quantities
from gatescope.recorder.recording import _STACKS, record  # _STACKS: the recordings active on each module

Per = Literal["step", "sequence"]
OUTPUT = "out"  # hooks.{path}.out: the recurrent module's output sequence (nnsight keeps .output for its own)


class HookPoint(nn.Module):
    """An identity module standing for one recorded quantity: forward hooks on it read and replace it."""

    def __init__(self, name: str, per: Per) -> None:
        super().__init__()
        self.name = name  # rnn.l0.fwd.f, or rnn.output
        self.per = per
        self.step = -1  # per="step": the input position of the value being passed
        self.context: HookContext | None = None  # per="step": the core's hook context of that value

    def forward(self, x: Tensor) -> Tensor:
        return x

    def extra_repr(self) -> str:
        return f"{self.name!r}, per={self.per!r}"


class HookPointTree(nn.Module):
    """A container of hook points and of further containers, one level per part of a name."""

    def forward(self, *args: Any, **kwargs: Any) -> None:
        raise GatescopeError("a container of hook points is not called; run the hooked model itself")


class HookedModel(nn.Module):
    """``model`` run with a `HookPoint` per recorded quantity (see the module docstring)."""

    def __init__(self, model: nn.Module, names: Selector | None = None, per: Per = "step") -> None:
        super().__init__()
        if per not in ("step", "sequence"):
            raise GatescopeError(f"per={per!r}: hook points are passed per 'step' ([B, H]) or per 'sequence' "
                                 "([B, T, H])")
        targets = find_recurrent(model)
        if not targets:
            raise GatescopeError(f"no LSTM or GRU module found in {type(model).__name__}")
        widths = quantities(model)
        chosen = ([n for n in widths if not on_request(targets, n)] if names is None
                  else select(names, list(widths), functools.partial(check_name, targets)))
        self.model = model
        self.per = per
        self.hooks = HookPointTree()
        self.names = chosen  # the quantities passed through hook points, in the trace's order
        self.points: dict[str, HookPoint] = {n: self._add(n) for n in chosen}
        self._recurrent = targets
        # a cell's output is one step's state; another package's module returns what its package chose
        self._sequences = {p: m for p, m in targets.items() if not is_cell(m) and packaged_of(m) is None}
        self.outputs: dict[str, HookPoint] = {p: self._add(f"{p}.{OUTPUT}") for p in self._sequences}

    def _add(self, name: str) -> HookPoint:
        parent: nn.Module = self.hooks
        *parts, last = name.split(".")
        for part in parts:
            child = parent._modules.get(part)
            if child is None:
                child = HookPointTree()
                _add_module(parent, part, child, name)
            parent = child
        point = HookPoint(name, self.per)
        _add_module(parent, last, point, name)
        return point

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        if self.per == "step":
            with self._outputs(), record(self.model, kinds=(), hooks=[(self.names, self._through_point)]):
                return self.model(*args, **kwargs)
        return self._patched(args, kwargs)

    def _through_point(self, value: Tensor, hook: HookContext) -> Tensor:
        point = self.points[hook.name]
        point.step, point.context = hook.step, hook
        out = point(value)
        if out is not value and (not isinstance(out, Tensor) or out.shape != value.shape):
            shape = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
            raise GatescopeError(f"hook point {hook.name} returned {shape} at step {hook.step}; it passes a tensor "
                                 f"{tuple(value.shape)} [batch, units] and must return one of that shape")
        return out

    def _patched(self, args: tuple, kwargs: dict) -> Any:
        """per="sequence": a first forward gathers every quantity [B, T, H]; each point sees it once; a
        second forward applies what the points returned as a patch (the entries they changed)."""
        recorded = [p for p, m in self._recurrent.items() if m in _STACKS]
        if recorded:
            raise GatescopeError(f"{', '.join(recorded)} is being recorded: per='sequence' hook points run the model "
                                 "twice, which the recording would see twice; use per='step', or record outside")
        seen: dict[str, dict[int, Tensor]] = {n: {} for n in self.names}

        def gather(value: Tensor, hook: HookContext) -> None:
            steps = seen[hook.name]
            if hook.step in steps:
                raise GatescopeError(f"hook point {hook.name} (per='sequence'): step {hook.step} came twice in "
                                     "one forward (a recurrent module called twice?); use per='step'")
            steps[hook.step] = value

        draws = _random_state()
        with record(self.model, kinds=(), hooks=[(self.names, gather)]):
            self.model(*args, **kwargs)
        _set_random_state(draws)  # the second forward draws the same dropout masks as the first
        patches = {name: _patch(self.points[name], _by_sequence(name, seen[name]))
                   for name in self.names if seen[name]}  # a module the forward did not call has nothing to patch
        patches = {name: patch for name, patch in patches.items() if patch.needed()}
        hooks = [(list(patches), functools.partial(_apply, patches))] if patches else None
        with self._outputs(), record(self.model, kinds=(), hooks=hooks):
            return self.model(*args, **kwargs)

    @contextlib.contextmanager
    def _outputs(self) -> Iterator[None]:
        """Pass each recurrent module's output sequence through its ``hooks.{path}.out`` point."""
        handles = [module.register_forward_hook(functools.partial(_through_output, self.outputs[path]))
                   for path, module in self._sequences.items()]
        try:
            yield
        finally:
            for handle in handles:
                handle.remove()


def hook_points(model: nn.Module, names: Selector | None = None, per: Per = "step") -> HookedModel:
    """``model`` with every recorded quantity (or those ``names`` selects) passing through a `HookPoint`.

    ``gatescope.hook_points(model, per="sequence").get_submodule("hooks.rnn.l0.fwd.f")`` is the point of
    ``rnn.l0.fwd.f``.

    Args:
        model: any nn.Module with recurrent modules inside; shared, not copied.
        names: a selector of the quantities to give points (a name, a glob, a list or a predicate;
            default: every quantity).
        per: ``"step"``: a point is called at every step with [B, H], one forward; ``"sequence"``: once per
            forward with [B, T, H], what it returns patched in by a second forward (what captum, nnsight
            and pyvene need).

    Returns:
        An nn.Module (``.model`` is ``model``) to call, trace or attribute in place of ``model``; the
        points are its submodules ``hooks.{name}``, and ``hooks.{path}.out`` is each recurrent module's output.

    Raises:
        GatescopeError: a selector that matches nothing, or a quantity whose name cannot be a module path.
    """
    return HookedModel(model, names, per)


# -- helpers ------------------------------------------------------------------------------------------
def _random_state() -> tuple[Tensor, list[Tensor] | None]:
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else None
    return torch.get_rng_state(), cuda


def _set_random_state(state: tuple[Tensor, list[Tensor] | None]) -> None:
    torch.set_rng_state(state[0])
    if state[1] is not None:
        torch.cuda.set_rng_state_all(state[1])


def _add_module(parent: nn.Module, part: str, child: nn.Module, name: str) -> None:
    try:
        parent.add_module(part, child)
    except (KeyError, TypeError) as error:
        raise GatescopeError(f"cannot name a hook point {name!r}: {part!r} is not a free module name ({error})")


def _by_sequence(name: str, steps: dict[int, Tensor]) -> Tensor:
    """Step -> (B, H) values -> (B, T, H)."""
    if sorted(steps) != list(range(len(steps))):
        raise GatescopeError(f"hook point {name} (per='sequence'): steps {sorted(steps)[:8]} are not 0..T-1")
    sizes = {v.shape for v in steps.values()}
    if len(sizes) != 1:
        raise GatescopeError(f"hook point {name} (per='sequence'): the batch changes from step to step "
                             f"({sorted(s[0] for s in sizes)}, a cell loop whose batch shrinks?); use per='step'")
    return torch.stack([steps[t] for t in range(len(steps))], dim=1)  # (B, T, H)


class _Patch:
    """What one point was given and returned, where they differ, and whether the point is watched."""

    def __init__(self, given: Tensor, returned: Tensor, changed: Tensor, watched: bool) -> None:
        self.given = given  # (B, T, H) the first forward's values, in its graph
        self.returned = returned  # (B, T, H)
        self.changed = changed  # (B, T, H) bool
        self.watched = watched  # the point had forward hooks: it is the layer gradients are taken at
        self.steps = changed.any(2).any(0).tolist()  # (T,) whether any entry of step t changed

    def graph(self) -> bool:
        """Whether the second forward must carry gradients to the point's output."""
        return torch.is_grad_enabled() and (self.returned.requires_grad or self.given.requires_grad)

    def needed(self) -> bool:
        """Whether the second forward has anything to do at this point: an edit, or gradients to take at
        a watched point (an unchanged point without hooks is left out: its values and gradients are the
        forward's own)."""
        return any(self.steps) or (self.watched and self.graph())


def _patch(point: HookPoint, values: Tensor) -> _Patch:
    before = values.detach().clone()  # what the point was given, whatever it edits in place
    watched = bool(point._forward_hooks or point._forward_pre_hooks)
    point.step, point.context = -1, None
    returned = point(values.view_as(values))  # a node of its own, so that gradients can tell it from values
    if not isinstance(returned, Tensor) or returned.shape != before.shape:
        shape = tuple(returned.shape) if isinstance(returned, Tensor) else type(returned).__name__
        raise GatescopeError(f"hook point {point.name} returned {shape}; it passes a tensor {tuple(before.shape)} "
                             "[batch, time, units] and must return one of that shape")
    returned = returned.to(before.dtype)
    return _Patch(values, returned, returned.detach().ne(before), watched)


def _apply(patches: dict[str, _Patch], value: Tensor, hook: HookContext) -> Tensor | None:
    """The second forward's hook: changed entries from the point, the rest as computed now.

    With grad enabled the kept entries are numerically the value computed now, and in the graph:
    on a watched point (one with forward hooks: captum's, pyvene's) ``value.detach() + (r - r.detach())``,
    the point's output r patched in, so gradients with respect to r are those of the model with r as the
    quantity at every step (one function of one tensor, what captum's layer methods assume); on any
    other point ``value + (r - r.detach()) - (g - g.detach())`` (g what it was given): the step's own
    value, whose gradient r sees, and nothing passes twice through the first forward."""
    patch = patches[hook.name]
    t = hook.step
    changed, returned = patch.changed[:, t], patch.returned[:, t]  # (B, H)
    if patch.graph():
        if patch.watched:
            kept = value.detach() + (returned - returned.detach())
        else:
            given = patch.given[:, t]
            kept = value + (returned - returned.detach()) - (given - given.detach())
        return torch.where(changed, returned, kept)
    return torch.where(changed, returned, value) if patch.steps[t] else None


def _through_output(point: HookPoint, module: nn.Module, args: tuple, output: Any) -> Any:
    sequence, hidden = output
    if isinstance(sequence, PackedSequence):
        return sequence._replace(data=point(sequence.data)), hidden
    return point(sequence), hidden

