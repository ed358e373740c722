"""torch ``.pt`` / ``.pth`` / ``.bin`` checkpoints: state dicts read with torch's restricted loader.

``torch.load(path, weights_only=True)`` unpickles only tensors and plain containers (dicts, lists,
numbers, strings); a file that needs any other class, such as a whole pickled model
(``torch.save(model)``), is refused by torch before any of its code can run. Such a file is
converted in the user's own environment, where the model's code is installed: the error says so in
one line and carries the two lines of code that do it (`WHOLE_MODEL_FIX`).

The state dict may be the whole file or sit under a ``state_dict`` / ``model`` / ``model_state_dict``
entry (PyTorch Lightning, fastai's ``learn.save``). Key prefixes that wrappers add are removed:
``module.`` (nn.DataParallel, DistributedDataParallel) and ``_orig_mod.`` (torch.compile). Tied
weights (an embedding shared with the decoder, Press & Wolf 2017) come out as two tensors.
fastai's AWD-LSTM layout is renamed by gatescope.checkpoints.formats.awd_lstm.
"""
from __future__ import annotations

import pickle
import re
import warnings
from pathlib import Path
from typing import Any

from gatescope.checkpoints.formats import awd_lstm, torchscript
from gatescope.checkpoints.formats.converted import Converted, ErrorWithFix, owned
from gatescope.errors import GatescopeError

NESTED_KEYS = ("state_dict", "model_state_dict", "model", "net", "module")
WRAPPER_PREFIX = "module."  # DataParallel / DistributedDataParallel
COMPILED_SEGMENT = "_orig_mod."  # torch.compile's OptimizedModule

WHOLE_MODEL = (
    "{path} holds a pickled {what} (e.g. a whole model saved with torch.save(model)), which gatescope does "
    "not unpickle: that would run code from the file; where the model is built by its own code, save its "
    "weights (model: the torch module) and use the .safetensors file:"
)
WHOLE_MODEL_FIX = (  # from the user's own model object: never advice to unpickle the file
    "import safetensors.torch",
    "safetensors.torch.save_file({{k: v.clone().contiguous() for k, v in model.state_dict().items()}}, {out_repr})",
)


def read(path: Path) -> Converted:
    """The state dict in ``path`` with torch's names (wrapper prefixes removed); a TorchScript archive's
    parameters read by gatescope.checkpoints.formats.torchscript, nothing of it run."""
    import torch

    if torchscript.is_archive(path):
        return _torchscript(path)
    try:
        with warnings.catch_warnings():  # torch's own advice (pickle protocols, weights_only=False) is not printed
            warnings.simplefilter("ignore")
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        reason = _unpickler_reason(exc)
        if found := re.search(r"Unsupported global: GLOBAL (\S+)", reason):
            names = dict(path=path, what=found[1], path_repr=repr(str(path)),
                         out_repr=repr(str(path.with_suffix(".safetensors"))))
            fix = [line.format(**names) for line in WHOLE_MODEL_FIX]
            raise ErrorWithFix(WHOLE_MODEL.format(**names), fix) from None
        raise GatescopeError(f"{path} is not a readable torch checkpoint ({reason})") from None
    except Exception as exc:  # torch.load's errors on a damaged file are of many types: one line each
        raise GatescopeError(f"{path} is not a readable torch checkpoint ({_first_line(exc)})") from None
    state, notes = _state_dict(path, obj)
    state = _strip_wrappers(path, state, notes)
    if awd_lstm.matches(state):
        tensors, metadata, more = awd_lstm.convert(state)
        return Converted(owned(tensors), metadata, "fastai AWD-LSTM state dict", notes + more)
    return Converted(owned(state), {}, "torch state dict", notes)


def _torchscript(path: Path) -> Converted:
    """The tensors of a TorchScript archive's module records, under their attribute paths."""
    state, classes = torchscript.state_dict(torchscript.read_records(path))
    if not state:
        raise GatescopeError(f"{path}: the TorchScript archive's modules hold no tensors")
    recurrent = [f"{name or 'the root'} ({cls})" for name, cls in classes.items()
                 if cls in ("LSTM", "GRU", "LSTMCell", "GRUCell", "RNN", "RNNCell")]
    found = f"recurrent modules by class: {', '.join(recurrent)}" if recurrent else "no recurrent module by class"
    notes = [f"read the parameters of a TorchScript archive without running its code; {found}"]
    state = _strip_wrappers(path, state, notes)
    return Converted(owned(state), {}, "TorchScript archive (weights only)", notes)


def _state_dict(path: Path, obj: Any) -> tuple[dict[str, Any], list[str]]:
    """The tensors of the file: the object itself, or its state-dict entry (noting what else it held)."""
    import torch

    if not isinstance(obj, dict):
        raise GatescopeError(f"{path} holds a {type(obj).__name__}, not a state dict (a dict of tensors)")
    if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return dict(obj), []
    for key in NESTED_KEYS:
        inner = obj.get(key)
        if isinstance(inner, dict) and inner and all(isinstance(v, torch.Tensor) for v in inner.values()):
            others = sorted(str(k) for k in obj if k != key)
            note = f"read the state dict under '{key}'" + (f"; not read: {', '.join(others)}" if others else "")
            return dict(inner), [note]
    tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        shown = ", ".join(f"{k!s} ({type(v).__name__})" for k, v in list(obj.items())[:6])
        raise GatescopeError(f"{path} holds no tensors at its top level or under {'/'.join(NESTED_KEYS)} ({shown})")
    others = sorted(str(k) for k in obj if k not in tensors)
    return tensors, [f"not read (not tensors): {', '.join(others)}"]


def _strip_wrappers(path: Path, state: dict[str, Any], notes: list[str]) -> dict[str, Any]:
    """Remove ``module.`` when every key has it (repeatedly: DDP of DataParallel) and ``_orig_mod.`` anywhere."""
    keys = list(state)
    stripped = 0
    while keys and all(k.startswith(WRAPPER_PREFIX) for k in keys):
        keys = [k[len(WRAPPER_PREFIX):] for k in keys]
        stripped += 1
    compiled = any(COMPILED_SEGMENT in k for k in keys)
    keys = [k.replace(COMPILED_SEGMENT, "") for k in keys]
    if len(set(keys)) != len(keys):
        raise GatescopeError(f"{path}: removing the module./_orig_mod. prefixes makes two keys the same")
    if stripped:
        notes.append(f"removed the prefix '{WRAPPER_PREFIX * stripped}' (DataParallel / DistributedDataParallel)")
    if compiled:
        notes.append(f"removed '{COMPILED_SEGMENT}' from the keys (torch.compile)")
    return dict(zip(keys, state.values()))


def _unpickler_reason(exc: BaseException) -> str:
    """What torch's restricted unpickler refused, from its long message ("Unsupported global: ...")."""
    text = str(exc)
    _, found, rest = text.partition("WeightsUnpickler error:")
    lines = [line.strip() for line in (rest if found else text).splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
