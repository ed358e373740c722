"""Recurrent modules of other packages, recorded through their own code: what gatescope knows of each.

gatescope records torch's LSTM and GRU by running them in its own engine. A recurrent module of another
package (the xlstm package's sLSTM and mLSTM, Beck et al. 2024; minGRU-pytorch's minGRU and minLSTM,
Feng et al. 2024) is recorded by running the package's own forward with gatescope's taps where the package
computes its gates: its pointwise or backend function where it has one (gatescope.recorder.xlstm), or,
where the package computes the gates only inside a log-space parallel scan, the same recurrence step by
step from the same weights (gatescope.recorder.mingru). A `Packaged` says how, for one family of classes:

- which classes: recognised by class name and top-level package anywhere in the class hierarchy (so a
  user's subclass is one too), read without importing the package;
- its cell type (gatescope.kinds), the width of each kind, its description in the trace's metadata, the
  kinds recorded only on request (the mLSTM's matrix memory);
- ``forward(module, steps, *args, **kwargs)``: the module's own forward, every quantity of every step
  passing through ``steps`` (a `Steps`).

`Steps` is the per-step tap of gatescope's step route (gatescope.recorder.engine) for these forwards: the
edits in order (interventions and hooks, whose replacement the rest of the computation uses), the values
kept, and the sink they go to when the call ends. Everything is differentiable, as on the step route.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from gatescope.errors import GatescopeError
from gatescope.kinds import CellType
from gatescope.recorder.engine import Observer


class Steps:
    """The taps of one call of a packaged module: ``tap(kind, value, t)`` for each quantity of step t."""

    def __init__(self, observer: Observer | None) -> None:
        self.keep = observer.keep if observer else frozenset()
        self.edits = observer.edits if observer else {}
        self.sink = observer.sink if observer else None
        self.kept: dict[str, dict[int, Tensor]] = {kind: {} for kind in self.keep}
        self.t = -1  # the step a stepping function is at (`advance`)

    def wants(self, kind: str) -> bool:
        """Whether ``kind`` is kept or edited (else tapping it is the identity, and may be skipped)."""
        return kind in self.keep or kind in self.edits

    def advance(self) -> int:
        """The next step's index, for a function the package calls once per step (0, 1, ...)."""
        self.t += 1
        return self.t

    def tap(self, kind: str, value: Tensor, t: int) -> Tensor:
        """``value`` (B, ...) of ``kind`` at step t after every edit, kept as (B, W) if recorded."""
        if not self.wants(kind):
            return value
        shape = value.shape
        flat = value.reshape(shape[0], -1)  # (B, W): heads and their rows in order, head-major
        for edit in self.edits.get(kind, ()):
            changed = edit(flat, t)
            if changed is not None:
                flat = changed
        if kind in self.kept:
            self.kept[kind][t] = flat
        return flat.reshape(shape)

    def over_time(self, kind: str, values: Tensor) -> Tensor:
        """A quantity the package computes for every step at once, ``values`` (B, T, ...), tapped step by step."""
        if not self.wants(kind):
            return values
        return torch.stack([self.tap(kind, values[:, t], t) for t in range(values.shape[1])], dim=1)

    def done(self) -> None:
        """Hand the kept values to the sink: per kind, T tensors (B, W) in time order."""
        if self.sink is None:
            return
        for kind, by_step in self.kept.items():
            if by_step:
                self.sink(kind, [by_step[t] for t in sorted(by_step)], None)


@dataclass(frozen=True)
class Packaged:
    """How gatescope records one family of recurrent module classes of another package."""

    package: str  # the top-level package of the classes: "xlstm", "minGRU_pytorch"
    classes: tuple[str, ...]  # class names recognised anywhere in a module's class hierarchy
    cell: CellType  # its kinds, in step order
    width: Callable[[nn.Module, str], int]  # (module, kind) -> units
    info: Callable[[nn.Module], dict[str, Any]]  # the module's architecture, for the trace's metadata
    forward: Callable[..., Any]  # (module, steps, *args, **kwargs) -> what the module's forward returns
    on_request: tuple[str, ...] = ()  # kinds recorded only when asked for by kinds= or names=
    refuse: Callable[[nn.Module], "str | None"] = lambda module: None  # why it cannot be recorded, or None
    unrecorded: tuple[str, ...] = ()  # its other methods that run steps: refused while it is recorded

    @property
    def root(self) -> str:
        """The record path of such a module that is the recorded model itself (``slstm``, ``mingru``)."""
        return self.cell.name.lower()

    def recognises(self, module: nn.Module) -> bool:
        return any(cls.__name__ in self.classes and cls.__module__.split(".")[0] == self.package
                   for cls in type(module).__mro__)

    def check(self, path: str, module: nn.Module) -> None:
        """Raise a one-line GatescopeError if this module cannot be recorded (before any forward)."""
        why = self.refuse(module)
        if why is not None:
            raise GatescopeError(f"{path} ({type(module).__name__}): {why}")

    def refusal(self, path: str, method: str) -> Callable[..., Any]:
        """What ``module.<method>`` is while the module is recorded: a one-line error, not an unrecorded run."""
        def refused(*args: Any, **kwargs: Any) -> Any:
            raise GatescopeError(f"{path}: {method}() is not recorded by gatescope (only forward is); "
                                 "call it outside the record() block, or record the forward over the whole sequence")
        return refused

