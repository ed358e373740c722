"""gatescope: gate introspection and interpretability for LSTM and GRU networks.

The public API; everything here is re-exported from the module that holds it::

    with gatescope.record(model) as rec:      # every gate of every LSTM/GRU, every step
        model(x)
    rec.trace["rnn.l0.fwd.f"]                 # (tokens, hidden)
    rec.trace.save("run.safetensors"); gatescope.load_trace("run.safetensors")
"""
from gatescope.errors import GatescopeError
from gatescope.modules import GRU, LSTM
from gatescope.record import Intervention, Recording, record
from gatescope.trace import Trace, load_trace

__all__ = ["GRU", "LSTM", "GatescopeError", "Intervention", "Recording", "Trace", "load", "load_trace", "record"]
__version__ = "0.1.0"


def __getattr__(name: str):
    # gatescope.load lives in checkpoint.py, imported on first use
    if name == "load":
        from gatescope.checkpoint import load

        return load
    raise AttributeError(f"module 'gatescope' has no attribute {name!r}")
