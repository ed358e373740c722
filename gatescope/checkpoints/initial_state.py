"""Learned initial states: the tensors a checkpoint's recurrent modules start from, instead of zeros.

A model may learn h0 / c0 as parameters (torch's modules take them as ``hx``; e.g. a state dict with
``rnn.h0`` [num_layers * num_directions, 1, hidden] beside ``rnn.weight_ih_l0``). They are found here,
in the order:

- named in the metadata roles: ``"initial_state": {"rnn": {"h": "h0", "c": "c0"}}`` (module -> kind -> tensor);
- else recognised in the checkpoint's tensors the chain does not use, by a usual name (`NAMES`: ``h0``,
  ``init_h``, ``initial_c``, ...) and a shape that fits exactly one recurrent module:
  [layers * directions, width] or [layers * directions, 1, width], width the module's h (proj_size or
  hidden_size) or c (hidden_size). A recognised state is said in a warning (it is a guess from a name).

The loader keeps each as a buffer under its own key and runs the module from it, broadcast over the
batch; a trace then records from the true initial state.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from gatescope.checkpoints.discovery import RecurrentSpec, Shapes
from gatescope.errors import GatescopeError

NAMES = {
    "h": ("h0", "h_0", "init_h", "initial_h", "h_init", "hidden0", "init_hidden", "initial_hidden", "hx"),
    "c": ("c0", "c_0", "init_c", "initial_c", "c_init", "cell0", "init_cell", "initial_cell", "cx"),
}


@dataclass(frozen=True)
class InitialState:
    """Tensor ``key`` is the initial ``kind`` (h or c) of recurrent module ``module``."""

    module: str
    kind: str
    key: str
    guessed: bool  # recognised by name, not named in the metadata


def width(spec: RecurrentSpec, kind: str) -> int:
    return spec.proj_size or spec.hidden_size if kind == "h" else spec.hidden_size


def fits(shape: tuple[int, ...], spec: RecurrentSpec, kind: str) -> bool:
    """Whether a tensor of ``shape`` is an initial ``kind`` of ``spec``: [L*D, width] or [L*D, 1, width]."""
    if spec.is_cell or (kind == "c" and spec.cell != "LSTM"):
        return False
    rows = spec.num_layers * (2 if spec.bidirectional else 1)
    return tuple(shape) in ((rows, width(spec, kind)), (rows, 1, width(spec, kind)))


def find(shapes: Shapes, chain: Sequence[RecurrentSpec], unused: Sequence[str], roles: dict[str, Any]
         ) -> list[InitialState]:
    """The initial states of the ``chain``'s modules: named in ``roles["initial_state"]``, else recognised
    among the ``unused`` tensors. A named state that does not fit is a GatescopeError."""
    by_name = {spec.name: spec for spec in chain}
    named = roles.get("initial_state")
    if named is not None:
        found = []
        for module, states in named.items():
            spec = by_name.get(module)
            if spec is None:
                raise GatescopeError(f"metadata role 'initial_state' names {module!r}, not a recurrent module of "
                                     f"the chain ({', '.join(by_name)})")
            for kind, key in states.items():
                if kind not in ("h", "c") or key not in shapes or not fits(shapes[key], spec, kind):
                    rows = spec.num_layers * (2 if spec.bidirectional else 1)
                    raise GatescopeError(
                        f"metadata role 'initial_state' gives {module} {kind}={key!r}: expected h or c, a tensor of "
                        f"the file shaped [{rows}, {width(spec, kind if kind in ('h', 'c') else 'h')}] or "
                        f"[{rows}, 1, ...]")
                found.append(InitialState(module, kind, key, guessed=False))
        return found
    found = []
    for key in unused:
        prefix, _, last = key.rpartition(".")
        kind = next((k for k, names in NAMES.items() if last in names), None)
        if kind is None:
            continue
        candidates = [s for s in chain if fits(shapes[key], s, kind)]
        owners = [s for s in candidates if prefix and s.name in chain_names(prefix)] or candidates
        if len(owners) == 1 and not any(f.module == owners[0].name and f.kind == kind for f in found):
            found.append(InitialState(owners[0].name, kind, key, guessed=True))
    return found


def chain_names(prefix: str) -> tuple[str, ...]:
    """The module paths a key prefix may belong to: ``encoder.rnn`` for ``encoder.rnn``, and its parents."""
    parts = prefix.split(".")
    return tuple(".".join(parts[:i]) for i in range(len(parts), 0, -1))


def expanded(value: Any, batch: int) -> Any:
    """A stored state [L*D, width] or [L*D, 1, width] as torch's hx for ``batch`` sequences: [L*D, batch, width]."""
    rows, size = value.shape[0], value.shape[-1]
    return value.reshape(rows, 1, size).expand(rows, batch, size).contiguous()
