"""What a model can record, known without running it: its recurrent modules, their quantities, their widths.

A model's recurrent modules are, in ``model.named_modules()``, each under its path (`gatescope.names.root_name`
for the root itself):

* torch.nn.LSTM / GRU / RNN / LSTMCell / GRUCell / RNNCell (gatescope's drop-ins and variant modules
  subclass them), run by gatescope.recorder.engine;
* the recurrent modules of other packages that `PACKAGED` describes (gatescope.recorder.packaged: xlstm's
  sLSTM cell and mLSTM layers, minGRU-pytorch's minGRU and minLSTM), recognised by class and run through
  their own code; the root itself is named after its cell type (``slstm``);
* any other module that declares its cell type and runs its own steps (`is_recordable`): a ``cell_type``
  attribute (a gatescope.kinds.CellType) and a method ``forward_observed(observer_for, *args, **kwargs)``
  that computes what its forward computes, passing every quantity of layer ``l``, direction ``d`` through
  the `engine.Observer` that ``observer_for(l, d)`` returns (gatescope.recorder.engine.Taps does the
  bookkeeping). It may also have ``num_layers``, ``bidirectional`` (default 1, False), and
  ``kind_width(kind)`` when a kind is not ``hidden_size`` wide.

Each records the kinds of its cell type (`gatescope.kinds.module_cell_type`) at every layer and direction,
under the names of `gatescope.names`; ``h`` is ``proj_size`` wide on a projected LSTM, every other quantity
``hidden_size``. `quantities` lists them all; `check_name` and `check_units` say in one line what a name
or a unit gets wrong. The recorder, the interventions' checks and the analysis layer all read these.
"""
from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from torch import nn

from gatescope.errors import GatescopeError
from gatescope.kinds import CellType, module_cell_type, module_directions
from gatescope.names import UnitName, format_name, parse_name, parse_unit, recurrent_class, root_name
from gatescope.recorder.mingru import MINGRU_MODULES, MINLSTM_MODULES
from gatescope.recorder.packaged import Packaged
from gatescope.recorder.xlstm import MLSTM_LAYERS, SLSTM_CELLS
from gatescope.recorder.xlstm_large import LARGE_MLSTM_LAYERS

RECURRENT_TYPES = (nn.LSTM, nn.GRU, nn.RNN, nn.LSTMCell, nn.GRUCell, nn.RNNCell)
CELL_MODULES = (nn.LSTMCell, nn.GRUCell, nn.RNNCell)
PACKAGED: tuple[Packaged, ...] = (SLSTM_CELLS, MLSTM_LAYERS, LARGE_MLSTM_LAYERS, MINGRU_MODULES, MINLSTM_MODULES)


def packaged_of(module: nn.Module) -> Packaged | None:
    """How another package's recurrent module is recorded (gatescope.recorder.packaged), or None."""
    if isinstance(module, RECURRENT_TYPES):
        return None
    return next((p for p in PACKAGED if p.recognises(module)), None)


def is_cell(module: nn.Module) -> bool:
    """An LSTMCell, GRUCell or RNNCell: one step per call, the caller runs the loop."""
    return isinstance(module, CELL_MODULES)


def is_recordable(module: nn.Module) -> bool:
    """One of torch's recurrent modules, or a module that declares a ``cell_type`` and a ``forward_observed``."""
    return isinstance(module, RECURRENT_TYPES) or packaged_of(module) is not None or (
        isinstance(getattr(module, "cell_type", None), CellType) and callable(getattr(module, "forward_observed", None))
    )


def find_recurrent(root: nn.Module) -> dict[str, nn.Module]:
    """Every recurrent module in ``root`` by its record path (`root_name` for the root itself)."""
    return {name or _root_name(module): module for name, module in root.named_modules() if is_recordable(module)}


def _root_name(module: nn.Module) -> str:
    packaged = packaged_of(module)
    return root_name(module) if packaged is None else packaged.root


def kinds_of(module: nn.Module) -> tuple[str, ...]:
    """The kinds a recurrent module records, in step order (``m`` only for an LSTM with proj_size)."""
    packaged = packaged_of(module)
    if packaged is not None:
        return packaged.cell.kinds
    return module_cell_type(module).kinds_for(getattr(module, "proj_size", 0))


def directions_of(module: nn.Module) -> tuple[str, ...]:
    return module_directions(module)


def width_of(module: nn.Module, kind: str) -> int:
    """Units of quantity ``kind`` of ``module``: its ``kind_width(kind)`` where it has one, proj_size for a
    projected LSTM's h, else hidden_size."""
    packaged = packaged_of(module)
    if packaged is not None:
        return packaged.width(module, kind)
    own = getattr(module, "kind_width", None)
    if callable(own):
        return int(own(kind))
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


def on_request(targets: dict[str, nn.Module], name: str) -> bool:
    """Whether quantity ``name`` is one its cell records only when asked for by name or kind (the mLSTM's
    matrix memory, gatescope.recorder.packaged): left out of everything a model records by default."""
    path, _, _, kind = parse_name(name)
    packaged = packaged_of(targets[path])
    return packaged is not None and kind in packaged.on_request


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
        raise GatescopeError(f"{name}: {path} runs the backward direction alone" if getattr(module, "reverse_only", False)
                             else f"{name}: {path} is not bidirectional")
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
    packaged = packaged_of(module)
    if packaged is not None:
        info = {"name": path, **packaged.info(module)}
        widths = {k: width_of(module, k) for k in kinds_of(module) if width_of(module, k) != info["hidden_size"]}
        return {**info, "widths": widths} if widths else info
    return {
        "name": path,
        "cell": recurrent_class(module),
        "input_size": getattr(module, "input_size", 0),
        "hidden_size": module.hidden_size,
        "num_layers": getattr(module, "num_layers", 1),
        "bidirectional": bool(getattr(module, "bidirectional", False)),
        "proj_size": getattr(module, "proj_size", 0),
        "bias": bool(getattr(module, "bias", True)),
        **({"reverse_only": True} if getattr(module, "reverse_only", False) else {}),
        **module_cell_type(module).info(),  # what a variant computes differently (gatescope.kinds.CellType.info)
    }
