"""Intervention: change chosen units of one recorded quantity at chosen steps, during the forward.

pyvene's interventions in the small: ``set`` / ``scale`` / ``add`` a value, or ``patch`` in the
values of a counterfactual run (an interchange intervention, Geiger et al. 2021; activation patching,
Vig et al. 2020). An Intervention is a hook ``fn(value [B, H], step) -> value`` (see gatescope.recorder.hooks),
checked against its quantity's width before any forward runs (`check`), so that a unit that does not
exist is a one-line error and never an edit silently dropped.
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import Tensor

from gatescope.errors import GatescopeError
from gatescope.names import check_unit_indices, parse_name

OPS = ("set", "scale", "add", "patch")


@dataclass(frozen=True, eq=False)
class Intervention:
    """Change chosen units of one recorded quantity during the forward.

    name: a quantity name, e.g. ``"rnn.l1.fwd.h"``; units: unit indices (None = all);
    op: ``set`` / ``scale`` / ``add`` with a scalar or a tensor broadcastable to [B, len(units)],
    or ``patch`` with a tensor [B, T, len(units)] (batch-first; `Trace.padded` gives one) whose
    ``[:, t]`` replaces step t; steps: input positions t to change: any iterable of ints, or a slice
    such as ``slice(5, None)`` for "from step 5 on" (None = every step).

    Two interventions are equal when they make the same edit (tensor values compared by value), and
    hashing never looks into a tensor, so either kind of value can be a dict key or a set member.
    """

    name: str
    units: Sequence[int] | None = None
    op: Literal["set", "scale", "add", "patch"] = "set"
    value: float | Tensor = 0.0
    steps: Iterable[int] | slice | None = None
    _indices: dict = field(default_factory=dict, init=False, repr=False)  # device -> units as a tensor

    def __post_init__(self) -> None:
        parse_name(self.name)
        if self.op not in OPS:
            raise GatescopeError(f"unknown intervention op {self.op!r}: use set, scale, add or patch")
        if self.op == "patch" and not (isinstance(self.value, Tensor) and self.value.dim() == 3):
            raise GatescopeError("a patch intervention needs a value tensor [batch, time, units]")
        if self.units is not None:
            units = (self.units,) if isinstance(self.units, int) else tuple(int(u) for u in self.units)
            if not units:
                raise GatescopeError(f"intervention on {self.name}: units=[] selects no unit (None means all)")
            if min(units) < 0:
                raise GatescopeError(f"intervention on {self.name}: unit indices are >= 0, got {min(units)}")
            object.__setattr__(self, "units", units)
        if isinstance(self.steps, slice):
            if self.steps.step not in (None, 1):
                raise GatescopeError("a slice of steps takes no stride: use a list of steps instead")
            start, stop = (None if s is None else int(s) for s in (self.steps.start, self.steps.stop))
            object.__setattr__(self, "steps", slice(start, stop))
            bounds = [s for s in (start, stop) if s is not None]
        elif self.steps is not None:
            object.__setattr__(self, "steps", frozenset(int(s) for s in self.steps))
            bounds = list(self.steps)
        else:
            bounds = []
        if bounds and min(bounds) < 0:
            raise GatescopeError(f"intervention on {self.name}: steps are input positions >= 0, got {min(bounds)}")

    def check(self, width: int) -> None:
        """Raise a one-line GatescopeError unless this edit fits a quantity of ``width`` units."""
        if self.units is not None:
            check_unit_indices(self.name, self.units, width, where=f"intervention on {self.name}: ")
        count = width if self.units is None else len(self.units)
        if isinstance(self.value, Tensor) and self.value.dim() > 0:
            last = self.value.shape[-1]
            if last != count and (self.op == "patch" or last != 1):
                raise GatescopeError(f"intervention on {self.name}: the value has {last} units in its last "
                                     f"dimension, the intervention edits {count}")

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

    def steps_within(self, steps: int) -> range | list[int]:
        """The input positions below ``steps`` that this edit changes, in order."""
        if self.steps is None:
            return range(steps)
        if isinstance(self.steps, slice):
            stop = steps if self.steps.stop is None else min(self.steps.stop, steps)
            return range(self.steps.start or 0, stop)
        return sorted(s for s in self.steps if s < steps)

    def steps_shown(self) -> str:
        """The steps as a user gave them, for messages: ``every step``, ``5 on``, ``5 to 8``, ``3, 10``."""
        if self.steps is None:
            return "every step"
        if isinstance(self.steps, slice):
            start = self.steps.start or 0
            return f"{start} on" if self.steps.stop is None else f"{start} to {self.steps.stop - 1}"
        return ", ".join(str(s) for s in sorted(self.steps))

    def constant(self) -> float | None:
        """The finite scalar this edit sets at every step from its first one on, or None when it is not
        such an edit (another op, a tensor of values, a last step, a set of steps)."""
        open_ended = self.steps is None or (isinstance(self.steps, slice) and self.steps.stop is None)
        value = self.value
        if self.op != "set" or not open_ended or (isinstance(value, Tensor) and value.dim() != 0):
            return None
        value = float(value)
        return value if math.isfinite(value) else None

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

    # -- equality: the same edit, whatever the value's type ----------------------------------
    def _key(self) -> tuple:
        steps = ("from", self.steps.start, self.steps.stop) if isinstance(self.steps, slice) else self.steps
        return (self.name, self.units, self.op, steps)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Intervention):
            return NotImplemented
        if self._key() != other._key():
            return False
        a, b = self.value, other.value
        if isinstance(a, Tensor) or isinstance(b, Tensor):
            if not (isinstance(a, Tensor) and isinstance(b, Tensor)):
                return False
            if a is b:
                return True
            same = a.shape == b.shape and a.dtype == b.dtype and a.device == b.device
            return same and torch.equal(a.isnan(), b.isnan()) and torch.equal(a.nan_to_num(), b.nan_to_num())
        return a == b

    def __hash__(self) -> int:
        return hash((self._key(), None if isinstance(self.value, Tensor) else self.value))


def unapplied(edits: Mapping[str, Sequence], longest: Mapping[str, int]) -> Iterator[str]:
    """What to say of each Intervention among ``edits`` (quantity name -> its edits) that changed nothing, given
    the most steps any call of each module ran (``longest``: module path -> steps; a module absent never ran):
    its module never ran, or its steps lie beyond every sequence (an edit that silently did nothing would read
    as no effect)."""
    for name, fns in edits.items():
        path = parse_name(name).path
        steps = longest.get(path)
        for edit in fns:
            if not isinstance(edit, Intervention):
                continue
            if steps is None:
                yield f"intervention on {name} changed nothing: {path} never ran in the block"
            elif not len(edit.steps_within(steps)):
                yield (f"intervention on {name} changed nothing: its steps ({edit.steps_shown()}) lie beyond every "
                       f"sequence {path} ran ({steps} steps at most)")


@dataclass(frozen=True)
class Split:
    """Where the edits of one layer and direction leave the fused kernel free to run (see `split`)."""

    runs: list[tuple[int, int]]  # [start, stop) of consecutive edited steps, in order; no step outside is edited
    fold: dict[int, float] | None  # h unit -> the constant it is set to at every step of the one run


def split(edits: Mapping[str, Sequence], steps: int, width: int) -> Split | None:
    """How ``edits`` (kind -> edits of one layer and direction, in the order they apply) can run
    outside the step loop.

    None unless every edit is an Intervention (a hook's changes cannot be foreseen). ``runs`` are the
    runs of consecutive steps below ``steps`` that any of them changes. ``fold`` is set when every edit
    that changes something sets h units (``width`` of them) to a constant from one step to the end:
    h_{t-1} reaches step t only through W_hh h_{t-1}, so those units' columns of W_hh can carry the
    constant instead (a later set of the same unit wins, as it would at every step).
    """
    if not all(isinstance(e, Intervention) for fns in edits.values() for e in fns):
        return None
    active = [(kind, e, e.steps_within(steps)) for kind, fns in edits.items() for e in fns]
    active = [(kind, e, within) for kind, e, within in active if len(within)]
    edited = sorted(set().union(*(within for _, _, within in active)))
    runs: list[tuple[int, int]] = []
    for t in edited:
        if runs and runs[-1][1] == t:
            runs[-1] = (runs[-1][0], t + 1)
        else:
            runs.append((t, t + 1))
    foldable = len(runs) == 1 and all(
        kind == "h" and e.constant() is not None and within[0] == runs[0][0] for kind, e, within in active
    )
    if not foldable:
        return Split(runs, None)
    fold: dict[int, float] = {}
    for _, e, _ in active:
        fold.update(dict.fromkeys(range(width) if e.units is None else e.units, e.constant()))
    return Split(runs, fold)


def affine(edits: Sequence[Intervention], start: int, steps: int, batch: int, width: int,
           dtype: torch.dtype, device: torch.device) -> tuple[Tensor, Tensor]:
    """``edits`` of one quantity (in the order they apply) over input positions start..start+steps-1 as
    one affine map per step and unit: value -> value * scale + shift, each (steps, B, H). Every op is one:
    set (scale 0, shift the value), scale (both times the value), add (shift plus the value), patch (a
    set to the source's value at that step)."""
    scale = torch.ones(steps, batch, width, dtype=dtype, device=device)
    shift = torch.zeros(steps, batch, width, dtype=dtype, device=device)
    for e in edits:
        within = e.steps_within(start + steps)
        if isinstance(within, range):
            at = range(max(within.start, start) - start, within.stop - start)
            rows = torch.arange(at.start, at.stop, device=device)
        else:
            at = [s - start for s in within if s >= start]
            rows = torch.tensor(at, dtype=torch.int64, device=device)
        if not len(at):
            continue
        index = e._index(device)
        new = e.value.to(device=device, dtype=dtype) if isinstance(e.value, Tensor) else torch.tensor(
            e.value, dtype=dtype, device=device)
        if e.op == "patch":
            if new.shape[0] != batch or start + at[-1] >= new.shape[1]:
                raise GatescopeError(f"patch for {e.name}: source has shape {tuple(new.shape)}, but this run has "
                                     f"batch {batch} and reaches step {start + at[-1]}")
            new = new[:, rows + start].transpose(0, 1)  # (k, B, U)
        a, b = scale[rows], shift[rows]  # (k, B, H) copies
        if e.op in ("set", "patch"):
            a[..., index] = 0
            b[..., index] = new
        elif e.op == "scale":
            a[..., index] *= new
            b[..., index] *= new
        else:
            b[..., index] += new
        scale[rows], shift[rows] = a, b
    return scale, shift
