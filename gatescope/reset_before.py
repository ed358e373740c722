"""The reset-before GRU: the original GRU of Cho et al. 2014, which torch.nn.GRU does not compute.

torch's GRU applies the reset gate after the recurrent product, ``n = tanh(W_in x + b_in + r ⊙
(W_hn h + b_hn))``; the original GRU (Cho et al. 2014, eq. 8; Keras ``reset_after=False``, ONNX
``linear_before_reset=0``) applies it before: ``n = tanh(W_in x + b_in + W_hn (r ⊙ h) + b_hn)``.
`ResetBeforeGRU` keeps torch's GRU parameters, names and forward contract and runs the variant
through gatescope's engine (the step route), so ``record()`` sees r z n h as for any GRU.
Checkpoints say which GRUs are reset-before in the metadata key ``reset_before`` (module names).
"""
from __future__ import annotations

from typing import Any

from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence

from gatescope import engine
from gatescope.errors import GatescopeError
from gatescope.kinds import GRU_RESET_BEFORE, module_cell_type

METADATA_KEY = "reset_before"


class ResetBeforeGRU(nn.GRU):
    """torch.nn.GRU's parameters and forward contract, computing the reset-before GRU."""

    reset_after = False  # read by gatescope.engine and gatescope.kinds.module_cell_type

    def forward(self, input: Tensor | PackedSequence, hx: Tensor | None = None):
        return engine.run(self, input, hx, route="step")

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, reset_after=False"


def reset_before_names(metadata: dict[str, Any], cells: dict[str, str]) -> frozenset[str]:
    """The module names the metadata's ``reset_before`` lists, checked against ``cells`` (name -> cell)."""
    names = metadata.get(METADATA_KEY, [])
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise GatescopeError(f"metadata '{METADATA_KEY}' must list GRU module names, not {names!r}")
    for name in names:
        if cells.get(name) != "GRU":
            found = ", ".join(n for n, c in cells.items() if c == "GRU") or "none"
            raise GatescopeError(f"metadata '{METADATA_KEY}' names {name!r}, which is not a GRU here (GRUs: {found})")
    return frozenset(names)


def variant_info(module: nn.Module) -> dict[str, bool]:
    """The extra entry a module's description carries when the kind registry says it is reset-before."""
    return {"reset_after": False} if module_cell_type(module) is GRU_RESET_BEFORE else {}
