"""Trainable modules for the variants of the LSTM, GRU and RNN that torch does not have.

``VariantLSTM``, ``VariantGRU`` and ``VariantRNN`` take torch.nn.LSTM / GRU / RNN's constructor
arguments and forward contract (they subclass them), plus keyword arguments that say what their cell
computes (gatescope.kinds.CellType; gatescope.recorder.cells has the equations):

- ``gate_activation``, ``activation``, ``output_activation``: a gatescope.kinds.Activation or its text
  (``"sigmoid"``, ``"hard_sigmoid(0.2,0.5)"``: Keras 1/2's hard sigmoid; ``"hard_sigmoid(0.16666666666666666,0.5)"``
  = ``kinds.HARD_SIGMOID``: Keras 3's and torch's), ONNX's list of activations with their alpha and beta;
- ``clip``: every pre-activation clipped to [-clip, clip] (ONNX);
- LSTM only: ``peepholes`` (Gers & Schmidhuber 2000), ``coupling`` (``"forget_from_input"``: f = 1 - i,
  ONNX input_forget; ``"input_from_forget"``: i = 1 - f, TF's CoupledInputForgetGateLSTMCell),
  ``cell_clip``, ``proj_clip``, ``forget_bias`` (TF's LSTMCell);
- GRU only: ``reset_after=False``, the original GRU of Cho et al. 2014.

Parameters keep torch's names and layout, with these additions: a peephole LSTM has ``weight_ch_l{k}``
(``_reverse``), shape (K*H,), the peephole weights of the gates ``cell_type.peephole_kinds`` (i, f, o, less a
coupled gate) block after block; a coupled LSTM's weight_ih / weight_hh / biases have the three row blocks
of ``cell_type.blocks`` (i g o, or f g o), not four; with ``learned_h0=True`` (any of the three) the initial
hidden state is learned, ``h0_l{k}`` (``_reverse``), shape (P,), used wherever the caller gives no h_0 (the
initial cell state of an LSTM stays zero). A checkpoint of one is read back by `gatescope.load`
(and ``inspect`` / ``trace``): peepholes from the names alone, the rest from the metadata key ``cells``
that `cells_metadata` gives.

They run through gatescope.recorder.engine's step route (no native kernel computes them), with autograd,
on any device; inside ``gatescope.record`` every quantity is recorded and editable as for torch's modules.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence

from gatescope.kinds import (
    CELL_TYPES,
    GRU,
    LSTM,
    RNN,
    VARIANT_FIELDS,
    Activation,
    CellType,
    module_cell_type,
    module_directions,
    param_suffix,
    parse_activation,
)
from gatescope.recorder import engine
from gatescope.recorder.recordable import find_recurrent

METADATA_KEY = "cells"  # checkpoint metadata: module name -> {"cell": family, **CellType.info()}


def _cell_type(base: CellType, changes: dict[str, Any]) -> CellType:
    """``base`` with the constructor's variant arguments (activations may be given as text)."""
    fields = {}
    for key, value in changes.items():
        if key.endswith("activation") and isinstance(value, str):
            value = parse_activation(value)
        elif key.endswith("activation") and not isinstance(value, Activation):
            raise TypeError(f"{key} must be an Activation or its text, not {type(value).__name__}")
        fields[key] = value
    return base.variant(**fields)


class _Variant:
    """A torch recurrent module whose cell is ``cell_type``, run by the engine's step route."""

    cell_type: CellType
    learned_h0: bool = False
    reverse_only: bool = False

    def _finish(self, learned_h0: bool, reverse_only: bool) -> None:
        if reverse_only:
            self._make_reverse_only()
        if learned_h0:
            self._add_learned_h0()

    def _add_learned_h0(self) -> None:
        """Register ``h0_l{k}`` (``_reverse``), zeros: the learned initial hidden state of each layer and direction."""
        self.learned_h0 = True
        width = getattr(self, "proj_size", 0) or self.hidden_size
        for layer in range(self.num_layers):
            for direction in self._directions():
                tensor = torch.zeros(width, device=self.weight_ih_l0.device, dtype=self.weight_ih_l0.dtype)
                self.register_parameter("h0" + param_suffix(layer, direction), nn.Parameter(tensor))

    def forward(self, input: Tensor | PackedSequence, hx=None):
        return engine.run(self, input, hx, route="step")

    def flatten_parameters(self) -> None:
        """Nothing to flatten: no cuDNN kernel runs these cells."""

    def __prepare_scriptable__(self) -> nn.Module:
        raise RuntimeError(f"torch.jit.script: {type(self).__name__} ({self.cell_type.describe()}) runs "
                           "gatescope's engine, which TorchScript cannot compile")

    def extra_repr(self) -> str:
        own = {k: True for k in ("learned_h0", "reverse_only") if getattr(self, k)}
        info = ", ".join(f"{k}={v!r}" for k, v in (self.cell_type.info() | own).items())
        return f"{super().extra_repr()}, {info}" if info else super().extra_repr()

    def _directions(self) -> tuple[str, ...]:
        return module_directions(self)

    def _make_reverse_only(self) -> None:
        """Run the backward direction alone (ONNX ``direction="reverse"``): each layer's parameters are renamed
        ``..._l{k}_reverse``, and the engine runs and records direction ``bwd`` only."""
        if self.bidirectional:
            raise ValueError("reverse_only runs one direction: bidirectional must be False")
        for layer in range(self.num_layers):
            for name in [n for n in self._parameters if n.endswith(f"_l{layer}")]:
                param = self._parameters.pop(name)
                self.register_parameter(f"{name}_reverse", param)
        self._flat_weights_names = [f"{n}_reverse" for n in self._flat_weights_names]
        self._all_weights = [[f"{n}_reverse" for n in names] for names in self._all_weights]
        self.reverse_only = True
        self._init_flat_weights()


class VariantLSTM(_Variant, nn.LSTM):
    """torch.nn.LSTM's arguments and contract, computing a variant LSTM (peepholes, coupled gates,
    activations, clipping, forget_bias); see the module docstring."""

    def __init__(self, *args: Any, gate_activation: Activation | str = "sigmoid", activation: Activation | str = "tanh",
                 output_activation: Activation | str = "tanh", peepholes: bool = False, coupling: str | None = None,
                 clip: float | None = None, cell_clip: float | None = None, proj_clip: float | None = None,
                 forget_bias: float = 0.0, learned_h0: bool = False, reverse_only: bool = False,
                 **kwargs: Any) -> None:
        cell = _cell_type(LSTM, dict(
            gate_activation=gate_activation, activation=activation, output_activation=output_activation,
            peepholes=peepholes, coupling=coupling, clip=clip, cell_clip=cell_clip, proj_clip=proj_clip,
            forget_bias=forget_bias))
        super().__init__(*args, **kwargs)
        self.cell_type = cell
        if cell.proj_clip is not None and not self.proj_size:
            raise ValueError("proj_clip clips the projection: it needs proj_size > 0")
        rows = cell.gates * self.hidden_size
        factory = dict(device=self.weight_ih_l0.device, dtype=self.weight_ih_l0.dtype)
        for layer in range(self.num_layers):
            for direction in self._directions():
                sfx = param_suffix(layer, direction)
                if cell.gates != 4:  # a coupled LSTM: the derived gate has no rows
                    for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                        old = getattr(self, name + sfx, None)
                        if old is not None:
                            setattr(self, name + sfx, nn.Parameter(old.new_empty((rows, *old.shape[1:]))))
                if cell.peepholes:
                    width = len(cell.peephole_kinds) * self.hidden_size
                    self.register_parameter("weight_ch" + sfx, nn.Parameter(torch.empty(width, **factory)))
        self.reset_parameters()
        self._finish(learned_h0, reverse_only)


class VariantGRU(_Variant, nn.GRU):
    """torch.nn.GRU's arguments and contract, computing a variant GRU (activations, clipping, reset_after)."""

    def __init__(self, *args: Any, gate_activation: Activation | str = "sigmoid", activation: Activation | str = "tanh",
                 clip: float | None = None, reset_after: bool = True, learned_h0: bool = False,
                 reverse_only: bool = False, **kwargs: Any) -> None:
        cell = _cell_type(GRU, dict(gate_activation=gate_activation, activation=activation, clip=clip,
                                    reset_after=reset_after))
        super().__init__(*args, **kwargs)
        self.cell_type = cell
        self._finish(learned_h0, reverse_only)


class VariantRNN(_Variant, nn.RNN):
    """torch.nn.RNN's arguments and contract with any activation (``activation``, not torch's
    ``nonlinearity``, which stays "tanh" and is not read) and ``clip``: h = activation(clip(W x + b + U h + b'))."""

    def __init__(self, *args: Any, activation: Activation | str = "tanh", clip: float | None = None,
                 learned_h0: bool = False, reverse_only: bool = False, **kwargs: Any) -> None:
        if "nonlinearity" in kwargs:
            raise TypeError("VariantRNN takes activation=..., not nonlinearity")
        cell = _cell_type(RNN, dict(activation=activation, clip=clip))
        super().__init__(*args, **kwargs)
        self.cell_type = cell
        self._finish(learned_h0, reverse_only)


VARIANTS: dict[str, type[nn.Module]] = {"LSTM": VariantLSTM, "GRU": VariantGRU, "RNN": VariantRNN}


def variant_module(cell: CellType, *args: Any, **kwargs: Any) -> nn.Module:
    """A fresh module of the family's Variant class computing ``cell`` (torch's constructor arguments)."""
    base = CELL_TYPES[cell.name]
    changes = {f: getattr(cell, f) for f in VARIANT_FIELDS if getattr(cell, f) != getattr(base, f)}
    return VARIANTS[cell.name](*args, **changes, **kwargs)


def cells_metadata(model: nn.Module) -> dict[str, dict[str, Any]]:
    """``{"cells": {module name: {"cell": family, **variant}}}`` for every recurrent module of ``model`` whose cell
    is not its family's default (what parameter names alone say; a relu nn.RNN too): the checkpoint metadata that
    lets `gatescope.load` rebuild them. Merge it into the ``gatescope`` metadata document when saving
    ``model.state_dict()`` with safetensors."""
    cells = {}
    for name, module in find_recurrent(model).items():
        cell = module_cell_type(module)
        if cell != CELL_TYPES[cell.name]:
            cells[name] = {"cell": cell.name, **cell.info()}
    return {METADATA_KEY: cells} if cells else {}
