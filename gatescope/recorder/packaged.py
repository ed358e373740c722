"""Recurrent modules of other packages, recorded through their own code: what gatescope knows of each.

gatescope records torch's LSTM and GRU by running them in its own engine. A recurrent module of another
package (the xlstm package's sLSTM and mLSTM, Beck et al. 2024; minGRU-pytorch's minGRU and minLSTM,
Feng et al. 2024) is recorded by running the package's own forward with gatescope's taps where the package
computes its gates: its pointwise or backend function where it has one (gatescope.recorder.xlstm), or,
where the package computes the gates only inside a log-space parallel scan, the same recurrence step by
step from the same weights (gatescope.recorder.mingru). A `Packaged` says how, for one family of classes:

- which classes: recognised by class name and the package module they are defined in, anywhere in the
  class hierarchy (so a user's subclass is one too), read without importing the package;
- its cell type (gatescope.kinds), the width of each kind, its description in the trace's metadata, the
  kinds recorded only on request (the mLSTM's matrix memory);
- ``forward(module, observer_for, *args, **kwargs)``: the module's own forward, every quantity of every
  step passing through the `gatescope.recorder.engine.Taps` of ``observer_for(0, "fwd")`` (the protocol of a
  module's ``forward_observed``, gatescope.recorder.recordable), the values of any shape (B, ...)
  flattened to (B, W) head-major for the edits and the trace (`shaped_tap`, `over_time`).

Everything is differentiable, as on the step route.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from gatescope.errors import GatescopeError
from gatescope.kinds import CellType
from gatescope.recorder.cells import Tap
from gatescope.recorder.engine import Taps


def shaped_tap(taps: Taps, t: int) -> Tap:
    """Step t's tap for values (B, ...) of any shape: seen, edited and kept as (B, W), returned in their shape."""
    tap = taps.at(t)
    return lambda kind, value: tap(kind, value.reshape(value.shape[0], -1)).reshape(value.shape)


def over_time(taps: Taps, kind: str, values: Tensor) -> Tensor:
    """A quantity the package computes for every step at once, values (B, T, W), tapped step by step."""
    if kind not in taps.kept and kind not in taps.edits:
        return values
    return torch.stack([taps.at(t)(kind, values[:, t]) for t in range(values.shape[1])], dim=1)


@dataclass(frozen=True)
class Packaged:
    """How gatescope records one family of recurrent module classes of another package."""

    package: str  # the (sub)package defining the classes: "xlstm.blocks", "minGRU_pytorch"
    classes: tuple[str, ...]  # class names recognised anywhere in a module's class hierarchy
    cell: CellType  # its kinds, in step order
    width: Callable[[nn.Module, str], int]  # (module, kind) -> units
    info: Callable[[nn.Module], dict[str, Any]]  # the module's architecture, for the trace's metadata
    forward: Callable[..., Any]  # (module, observer_for, *args, **kwargs) -> what the module's forward returns
    on_request: tuple[str, ...] = ()  # kinds recorded only when asked for by kinds= or names=
    refuse: Callable[[nn.Module], "str | None"] = lambda module: None  # why it cannot be recorded, or None
    methods: tuple[tuple[str, Callable[..., Any]], ...] = ()  # its other methods that run steps, as `forward`

    @property
    def root(self) -> str:
        """The record path of such a module that is the recorded model itself (``slstm``, ``mingru``)."""
        return self.cell.name.lower()

    def recognises(self, module: nn.Module) -> bool:
        return any(cls.__name__ in self.classes and (cls.__module__ + ".").startswith(self.package + ".")
                   for cls in type(module).__mro__)

    def check(self, path: str, module: nn.Module) -> None:
        """Raise a one-line GatescopeError if this module cannot be recorded (before any forward)."""
        why = self.refuse(module)
        if why is not None:
            raise GatescopeError(f"{path} ({type(module).__name__}): {why}")
