"""gatescope: gate introspection and interpretability for LSTM and GRU networks.

The public API. Everything here is re-exported from the module that holds it.
"""
from gatescope.errors import GatescopeError

__all__ = ["GatescopeError"]
__version__ = "0.1.0"
