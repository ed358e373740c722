"""gatescope.LSTM, GRU and RNN: drop-in replacements for torch.nn.LSTM, torch.nn.GRU and torch.nn.RNN.

They subclass torch's modules, so constructor arguments (num_layers, bias, batch_first, dropout,
bidirectional, proj_size), parameter names (weight_ih_l0, bias_hh_l1_reverse, weight_hr_l0) and
state_dicts are torch's own and load both ways. The forward runs through gatescope.recorder.engine:

* ``route="auto"`` (default): torch's fused kernel when nothing needs more, except where that
  kernel breaks autograd (cuDNN's backward refuses eval mode, captum #564): there the step route.
* ``route="step"`` / ``"replay"``: force one of the engine's routes (tests, benchmarks); replay only
  where no gradient is needed (else it would cut the outputs from the graph, and the step route runs).

Inside ``gatescope.record`` every recurrent module, these and torch's, is recorded the same way.

``ResetBeforeGRU`` is the original GRU (Cho et al. 2014), which torch.nn.GRU does not compute: torch applies
the reset gate after the recurrent product, ``n = tanh(W_in x + b_in + r ⊙ (W_hn h + b_hn))``; the original
(Keras ``reset_after=False``, ONNX ``linear_before_reset=0``) before it, ``n = tanh(W_in x + b_in + W_hn (r ⊙ h)
+ b_hn)``. It keeps torch's GRU parameters and forward contract and runs through the engine's step route.
Checkpoints say which GRUs are reset-before in the metadata key ``cells`` (gatescope.recorder.variants), or in
the older key ``reset_before`` (module names).
"""
from __future__ import annotations


import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence

from gatescope.recorder import engine


class _Recurrent:
    """The forward shared by LSTM and GRU: torch's kernel, or gatescope's engine when needed."""

    route: engine.Route = "auto"

    def forward(self, input: Tensor | PackedSequence, hx=None):
        if self.route == "auto" and not self._native_breaks_autograd(input):
            return super().forward(input, hx)
        return engine.run(self, input, hx, route=self.route)

    def _native_breaks_autograd(self, input) -> bool:
        data = input.data if isinstance(input, PackedSequence) else input
        return (
            data.is_cuda
            and not self.training
            and torch.is_grad_enabled()
            and (data.requires_grad or any(p.requires_grad for p in self.parameters()))
        )

    def __prepare_scriptable__(self) -> nn.Module:
        """``torch.jit.script`` compiles torch's own module, sharing these parameters.

        TorchScript cannot compile the engine (a Python loop over observers); the scripted module is
        torch's fused kernel, which computes the same values (what route="auto" runs on a CPU). As
        with any ``__prepare_scriptable__``, torch puts the returned module in place of this one in
        the scripted model's tree; it shares these parameters, and ``gatescope.record`` records it.
        """
        if self.route != "auto":
            raise RuntimeError(
                f"torch.jit.script: a gatescope {type(self).__name__} with route={self.route!r} cannot be "
                "scripted (TorchScript runs torch's kernel only); script it with route='auto'"
            )
        base = next(b for b in (nn.LSTM, nn.GRU, nn.RNN) if isinstance(self, b))
        stock = base.__new__(base)
        own = ("route", "forward")  # gatescope's route, and a forward record() may have put on the instance
        stock.__dict__.update({k: v for k, v in self.__dict__.items() if k not in own})  # configuration, hooks
        stock._parameters = dict(self._parameters)  # the very Parameters, in a dict of its own
        stock._buffers, stock._modules = dict(self._buffers), dict(self._modules)
        return stock

    def extra_repr(self) -> str:
        text = super().extra_repr()
        return text if self.route == "auto" else f"{text}, route={self.route!r}"


class LSTM(_Recurrent, nn.LSTM):
    """torch.nn.LSTM whose gates gatescope can record and edit at every timestep."""


class GRU(_Recurrent, nn.GRU):
    """torch.nn.GRU whose gates gatescope can record and edit at every timestep."""


class RNN(_Recurrent, nn.RNN):
    """torch.nn.RNN (tanh or relu) whose hidden state gatescope can record and edit at every timestep."""


METADATA_KEY = "reset_before"


class ResetBeforeGRU(nn.GRU):
    """torch.nn.GRU's parameters and forward contract, computing the reset-before GRU."""

    reset_after = False  # read by gatescope.recorder.engine and gatescope.kinds.module_cell_type

    def forward(self, input: Tensor | PackedSequence, hx: Tensor | None = None):
        return engine.run(self, input, hx, route="step")

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, reset_after=False"
