"""gatescope: gate introspection and interpretability for LSTM and GRU networks.

The public API; everything here is re-exported from the module that holds it:

    with gatescope.record(model) as rec:      # every gate of every LSTM/GRU, every step
        model(x)
    rec.trace["rnn.l0.fwd.f"]                 # (tokens, hidden)
    rec.trace.save("run.safetensors"); gatescope.load_trace("run.safetensors")
    gatescope.quantities(model)               # {name: width}, without running
    warnings.simplefilter("error", gatescope.GatescopeWarning)  # anything not done exactly as asked: raise
    out, trace = gatescope.run_with_cache(model, ids, names="*.h")
    hooked = gatescope.hook_points(model, per="sequence")  # hooked.hooks.rnn.l0.fwd.f: captum, nnsight

Names are imported on first use (PEP 562), so ``import gatescope`` and the command line's
``--help`` do not pay for importing torch until something needs it.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from gatescope import _moved
from gatescope.errors import GatescopeError, GatescopeWarning, UnknownNameError

_moved.install()

__version__ = "0.1.0"

_EXPORTS = {
    "LSTM": "gatescope.recorder.rnn",
    "GRU": "gatescope.recorder.rnn",
    "RNN": "gatescope.recorder.rnn",
    "ResetBeforeGRU": "gatescope.recorder.rnn",
    "VariantLSTM": "gatescope.recorder.variants",
    "VariantGRU": "gatescope.recorder.variants",
    "VariantRNN": "gatescope.recorder.variants",
    "record": "gatescope.recorder.recording",
    "run_with_cache": "gatescope.recorder.recording",
    "quantities": "gatescope.recorder.recordable",
    "HookContext": "gatescope.recorder.hooks",
    "hook_points": "gatescope.recorder.hookpoints",
    "Recording": "gatescope.recorder.recording",
    "Intervention": "gatescope.recorder.recording",
    "Trace": "gatescope.traces.trace",
    "load_trace": "gatescope.traces.trace",
    "load": "gatescope.checkpoints.loader",
    "show": "gatescope.display",
    "explain": "gatescope.analysis.explain",
}
__all__ = [
    "GRU", "LSTM", "RNN", "GatescopeError", "GatescopeWarning", "HookContext", "Intervention", "Recording",
    "ResetBeforeGRU", "Trace", "UnknownNameError", "VariantGRU", "VariantLSTM", "VariantRNN", "explain",
    "hook_points", "load", "load_trace", "quantities", "record", "run_with_cache", "show",
]

if TYPE_CHECKING:
    from gatescope.analysis.explain import explain
    from gatescope.checkpoints.loader import load
    from gatescope.display import show
    from gatescope.recorder.hookpoints import hook_points
    from gatescope.recorder.hooks import HookContext
    from gatescope.recorder.recordable import quantities
    from gatescope.recorder.recording import Intervention, Recording, record, run_with_cache
    from gatescope.recorder.rnn import GRU, LSTM, RNN, ResetBeforeGRU
    from gatescope.recorder.variants import VariantGRU, VariantLSTM, VariantRNN
    from gatescope.traces.trace import Trace, load_trace


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'gatescope' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
