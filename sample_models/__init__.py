"""The trained sample checkpoints, shipped inside the wheel as ``gatescope.sample_models``.

See ``gatescope.samples`` for how they are trained and ``gatescope samples train`` to rebuild them.
"""
from importlib.resources import files
from pathlib import Path

DEFAULT = "agreement_lstm.safetensors"


def path(name: str = DEFAULT) -> Path:
    """The installed path of a bundled sample model, e.g. ``path("agreement_gru.safetensors")``."""
    return Path(str(files(__name__) / name))
