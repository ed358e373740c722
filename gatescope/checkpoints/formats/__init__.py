"""Checkpoints in other formats, read as torch-named tensors plus gatescope metadata.

Every reader here returns the same thing, a `Converted`: the tensors under the names torch.nn
gives them (``rnn.weight_ih_l0``, ``decoder.weight``; docs/architecture.md), the gatescope metadata
(docs/architecture.md "Checkpoint metadata": ``roles``, and ``reset_before``, which names the GRUs
that need gatescope.recorder.rnn.ResetBeforeGRU rather than torch's class), and notes on what was
changed on the way. So the loader
(gatescope.checkpoints.loader, through `open_checkpoint`) and `gatescope convert` treat every format alike.

One module per format (`FORMATS`, the one list of what gatescope reads):

- `torch_state`: ``.pt`` / ``.pth`` / ``.bin`` / ``.ckpt`` state dicts, read with ``torch.load(weights_only=True)``
  (torch's restricted unpickler, which builds only tensors and plain containers, never user code);
  fastai's AWD-LSTM layout is recognised there (`awd_lstm`), and TorchScript archives are handed to
  `torchscript`, which reads their weights with a restricted unpickler and never their code.
- `keras`: Keras 3 ``.keras`` archives and ``.weights.h5`` files, and Keras 2 ``.h5`` / ``.hdf5`` files, read
  with h5py.
- `onnx`: ONNX graphs with LSTM / GRU / RNN nodes, read with the onnx package (`onnx_graph` finds the nodes,
  `onnx_zeros` tells the values that are always zero).
- `madmom`: madmom's pickled networks (``.pkl``), read by a restricted unpickler that admits madmom's layer
  classes as plain records and numpy's arrays, nothing else (madmom is never imported).

A safetensors file is not converted: `read` returns None for it and the loader reads it lazily.
"""
from __future__ import annotations

import functools
import os
import zipfile
import zlib
from pathlib import Path

from gatescope.checkpoints.formats.converted import (  # noqa: F401  (re-exported: the readers' records)
    CONVERTED_KEY,
    META_KEY,
    Converted,
    ErrorWithFix,
    from_numpy,
    need,
    owned,
)
from gatescope.errors import GatescopeError
from gatescope.files import open_regular, reading

TORCH_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt")
KERAS_SUFFIXES = (".keras", ".h5", ".hdf5")
ONNX_SUFFIXES = (".onnx",)
_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
MADMOM_MARK = b"madmom.ml.nn"  # the module of the first class a madmom model's pickle names
# What gatescope reads, the one list: (name, the modules here that read it, what the help adds). READABLE,
# which the command line's help and errors quote, is made from it; the convert command's one-line help
# and gatescope.cli.convert name every format in it (tests/cli/test_inspect.py holds them to it, and
# tests/checkpoints/test_loading.py holds it to the modules here).
FORMATS = (
    ("safetensors", (), ""),
    ("torch", ("torch_state",), f"state dicts: {' '.join(TORCH_SUFFIXES)}"),
    ("fastai", ("awd_lstm",), "AWD-LSTM state dicts"),
    ("TorchScript", ("torchscript",), "torch.jit.save archives, weights only"),
    ("Keras", ("keras",), " ".join(KERAS_SUFFIXES)),
    ("ONNX", ("onnx",), " ".join(ONNX_SUFFIXES)),
    ("madmom", ("madmom",), ".pkl"),
)
READABLE = ", ".join(f"{name} ({detail})" if detail else name for name, _, detail in FORMATS)


def not_a_checkpoint(path: Path) -> GatescopeError | None:
    """The error for a file that is no checkpoint at all (a README, a CSV): it is in none of the formats read
    (``kind_of`` finds none) and does not start like a safetensors file (8 bytes of length, then ``{``). None
    for anything that may be a checkpoint, even a damaged one, and for a ``.safetensors`` file (whose reader
    says what is wrong with it)."""
    if path.name.lower().endswith(".safetensors") or not path.is_file() or kind_of(path) is not None:
        return None
    with open_regular(path, "checkpoint file") as f:
        head = f.read(9)
    if len(head) == 9 and head[8:] == b"{":
        return None
    return GatescopeError(f"{path} is not a checkpoint: gatescope reads {READABLE}")


def kind_of(path: Path) -> str | None:
    """``torch``, ``keras``, ``onnx`` or ``madmom`` for a file in another format; None for safetensors (or no file).

    The first bytes decide where they can (safetensors' header length and ``{``, HDF5's signature, a
    zip archive: Keras' holds config.json, torch's does not; a pickle opcode: torch's legacy format),
    so a misnamed file is still read right; else the suffix (ONNX's protobuf has no signature)."""
    name = path.name.lower()
    if not path.is_file() or name.endswith(".safetensors"):  # safetensors' own reader says what is wrong
        return None
    with open_regular(path, "checkpoint file") as f, reading(path, "checkpoint file"):
        head = f.read(256)
    if MADMOM_MARK in head:  # a pickle whose first class is madmom's network, whatever the suffix
        return "madmom"
    head = head[:9]
    if len(head) == 9 and head[8:] == b"{" and int.from_bytes(head[:8], "little") > 1:
        return None
    if head[:8] == _HDF5_MAGIC:
        return "keras"
    if head.startswith(b"PK") and zipfile.is_zipfile(path):
        try:
            with zipfile.ZipFile(path) as archive:
                return "keras" if "config.json" in archive.namelist() else "torch"
        except zipfile.BadZipFile:
            raise GatescopeError(f"{path} is a damaged zip archive (not a readable torch or Keras file)") from None
    if name.endswith(TORCH_SUFFIXES) or head[:1] == b"\x80":
        return "torch"
    if name.endswith(KERAS_SUFFIXES):
        return "keras"
    if name.endswith(ONNX_SUFFIXES):
        return "onnx"
    return None


def read(path: str | os.PathLike) -> Converted | None:
    """The checkpoint at ``path`` converted to torch names, or None when it is a safetensors file."""
    path = Path(path)
    kind = kind_of(path)
    if kind is None:
        return None
    with reading(path, "checkpoint file"):
        stat = path.stat()
    return _read_cached(str(path.resolve()), stat.st_mtime_ns, stat.st_size, kind, str(path))


@functools.lru_cache(maxsize=1)  # the loader reads a file's header, then its tensors: convert once
def _read_cached(resolved: str, mtime_ns: int, size: int, kind: str, path: str) -> Converted:
    if kind == "torch":
        from gatescope.checkpoints.formats import torch_state as reader
    elif kind == "keras":
        from gatescope.checkpoints.formats import keras as reader
    elif kind == "madmom":
        from gatescope.checkpoints.formats import madmom as reader
    else:
        from gatescope.checkpoints.formats import onnx as reader
    with reading(path, "checkpoint file"):
        try:
            converted = reader.read(Path(path))
        except GatescopeError:
            raise
        except (KeyError, IndexError, ValueError, TypeError, AttributeError, EOFError, zipfile.BadZipFile,
                zlib.error) as exc:  # a damaged file's contents
            raise GatescopeError(f"{path} is not a {kind} checkpoint gatescope can read "
                                 f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})") from None
    converted.metadata[CONVERTED_KEY] = {"from": converted.source, "file": Path(path).name, "notes": converted.notes}
    return converted


def open_checkpoint(path: str | os.PathLike):
    """The one entry point of the loader: safetensors' ``safe_open`` for a safetensors file, else the
    converted tensors behind the same interface (keys, get_slice(k).get_shape(), get_tensor, metadata)."""
    from safetensors import safe_open

    converted = read(path)
    return safe_open(path, framework="pt") if converted is None else converted.open()


