"""What a model can record, known without running it: its recurrent modules, their quantities, their widths.

A model's recurrent modules are the torch.nn.LSTM / GRU / LSTMCell / GRUCell (gatescope's LSTM and GRU
subclass the first two) in ``model.named_modules()``, each under its path (`gatescope.names.root_name`
for the root itself). Each records the kinds of its cell type (`gatescope.kinds`) at every layer and
direction, under the names of `gatescope.names`; ``h`` is ``proj_size`` wide on a projected LSTM, every
other quantity ``hidden_size``. `quantities` lists them all; `check_name` and `check_units` say in one
line what a name or a unit gets wrong. The recorder, the interventions' checks and the analysis layer
all read these.
"""
from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from torch import nn

from gatescope.errors import GatescopeError
from gatescope.kinds import DIRECTIONS, cell_type
from gatescope.names import UnitName, format_name, parse_name, parse_unit, recurrent_class, root_name

RECURRENT_TYPES = (nn.LSTM, nn.GRU, nn.LSTMCell, nn.GRUCell)


def is_cell(module: nn.Module) -> bool:
    """An LSTMCell or GRUCell: one step per call, the caller runs the loop."""
    return isinstance(module, (nn.LSTMCell, nn.GRUCell))


def find_recurrent(root: nn.Module) -> dict[str, nn.Module]:
    """Every recurrent module in ``root`` by its record path (`root_name` for the root itself)."""
    return {name or root_name(module): module for name, module in root.named_modules()
            if isinstance(module, RECURRENT_TYPES)}


def kinds_of(module: nn.Module) -> tuple[str, ...]:
    """The kinds a recurrent module records, in step order (``m`` only for an LSTM with proj_size)."""
    return cell_type(recurrent_class(module)).kinds_for(getattr(module, "proj_size", 0))


def directions_of(module: nn.Module) -> tuple[str, ...]:
    return DIRECTIONS if getattr(module, "bidirectional", False) else DIRECTIONS[:1]


def width_of(module: nn.Module, kind: str) -> int:
    """Units of quantity ``kind`` of ``module``: proj_size for a projected LSTM's h, else hidden_size."""
    proj = getattr(module, "proj_size", 0)
    return proj if kind == "h" and proj else module.hidden_size


def module_quantities(path: str, module: nn.Module) -> dict[str, int]:
    """Every quantity of one recurrent module, in layer, direction and kind order, with its width."""
    return {format_name(path, layer, d, kind): width_of(module, kind)
            for layer in range(getattr(module, "num_layers", 1))
            for d in directions_of(module)
            for kind in kinds_of(module)}


def quantities(model: nn.Module) -> dict[str, int]:
    """Every recordable quantity of ``model`` -> its number of units, without running the model.

    Args:
        model: any nn.Module.

    Returns:
        ``{"rnn.l0.fwd.i": 650, ..., "rnn.l1.fwd.h": 650}``, in module, layer, direction and kind order (the
        order of a recorded trace's names); empty when the model holds no recurrent module.
    """
    widths: dict[str, int] = {}
    for path, module in find_recurrent(model).items():
        widths.update(module_quantities(path, module))
    return widths


def check_name(targets: dict[str, nn.Module], name: str) -> None:
    """Raise a one-line GatescopeError unless ``name`` is a quantity of one of ``targets``."""
    path, layer, direction, kind = parse_name(name)
    module = targets.get(path)
    if module is None:
        raise GatescopeError(f"no recurrent module {path!r} for {name}; the model has: {', '.join(targets)}")
    layers = getattr(module, "num_layers", 1)
    if layer >= layers:
        raise GatescopeError(f"{name}: {path} has {layers} layer(s)")
    if direction not in directions_of(module):
        raise GatescopeError(f"{name}: {path} is not bidirectional")
    if kind not in kinds_of(module):
        raise GatescopeError(
            f"{name}: {type(module).__name__} has no kind {kind!r} (it has {' '.join(kinds_of(module))})"
        )


def check_units(model: nn.Module, units: Iterable[str | UnitName]) -> list[UnitName]:
    """Parse unit names and check them against ``model``; unknown ones raise GatescopeError."""
    widths = quantities(model)
    out = []
    for unit in units:
        parsed = parse_unit(unit) if isinstance(unit, str) else unit
        if parsed.name not in widths:
            raise GatescopeError(f"unknown unit {unit}: the model has no quantity {parsed.name}")
        if not 0 <= parsed.index < widths[parsed.name]:
            raise GatescopeError(f"unknown unit {unit}: {parsed.name} has {widths[parsed.name]} units")
        out.append(parsed)
    if not out:
        raise GatescopeError("no units given")
    return out


def module_info(path: str, module: nn.Module) -> dict[str, Any]:
    """The architecture of one recurrent module, as the trace metadata and `inspect --json` give it."""
    return {
        "name": path,
        "cell": recurrent_class(module),
        "input_size": module.input_size,
        "hidden_size": module.hidden_size,
        "num_layers": getattr(module, "num_layers", 1),
        "bidirectional": bool(getattr(module, "bidirectional", False)),
        "proj_size": getattr(module, "proj_size", 0),
        "bias": bool(module.bias),
    }
