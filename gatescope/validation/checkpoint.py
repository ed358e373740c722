"""The door of a checkpoint file: its tensors' names, dtypes and shapes, and its metadata, checked once.

A checkpoint is a safetensors file of torch.nn parameters (docs/architecture.md, "Checkpoints"),
read through gatescope.validation.safetensors (bounded header, dtype x shape = bytes, inside the
file). On top of that, `validate_checkpoint` checks:

- dtypes: float8 / float6 / float4 tensors are refused by name (torch cannot run an LSTM in them;
  convert the checkpoint to float32, float16 or bfloat16); a parameter (a key whose last part
  starts with ``weight`` or ``bias``) must be F32, F16, BF16 or F64. Other integer tensors (a step
  counter) are left to the loader, which reports tensors it does not use;
- names: a torch layer suffix ``_l{k}`` has k below MAX_LAYERS (no 5,000-digit layer numbers, no
  billion-layer allocations);
- the ``gatescope`` metadata against `ModelMeta`: format ``gatescope.model``, version 1, the
  vocabulary a list of strings, the tokenizer word or char, unk / eos strings, roles naming
  tensors or modules by strings (``outside``: tensors the model's outputs do not go through).

Discovery (gatescope.checkpoints.discovery) then works from shapes it can trust.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gatescope.errors import GatescopeError, shown
from gatescope.validation.limits import MAX_LAYERS, MAX_NAME_CHARS, MAX_VOCAB
from gatescope.validation.safetensors import (
    FLOATS,
    LOW_PRECISION,
    META_KEY,
    TensorEntry,
    check_dtype,
    parse_json,
    read_header,
)
from gatescope.validation.schema import bounded, one_of, parse, sized
from gatescope.vocab import TOKENIZERS

MODEL_FORMAT = "gatescope.model"
MODEL_FORMAT_VERSION = 1
_LAYER_SUFFIX = re.compile(r"_l(\d+)(?:_reverse)?$")  # torch's weight_ih_l{k}[_reverse]
_PARAMETER = re.compile(r"(?:^|\.)(?:weight|bias)[^.]*$")

Shapes = dict[str, tuple[int, ...]]


@dataclass(frozen=True)
class RolesMeta:
    """Metadata ``roles``: which tensors are the embedding and the decoder, which modules run in order."""

    embedding: str | None = sized(max_chars=MAX_NAME_CHARS, default=None)
    recurrent: str | list[str] | None = sized(max_items=1000, max_chars=MAX_NAME_CHARS, default=None)
    decoder: str | None = sized(max_chars=MAX_NAME_CHARS, default=None)
    initial_state: dict[str, dict[str, str]] | None = None  # module -> h / c -> tensor (checkpoints.initial_state)
    outside: str | list[str] | None = sized(max_items=100000, max_chars=MAX_NAME_CHARS, default=None)  # not in the chain


@dataclass(frozen=True)
class ModelMeta:
    """The ``gatescope`` metadata document of a checkpoint (keys it does not name are kept, unchecked)."""

    format: str = one_of((MODEL_FORMAT,), default=MODEL_FORMAT)
    version: int = bounded(1, MODEL_FORMAT_VERSION, default=MODEL_FORMAT_VERSION)
    vocab: list[str] | None = sized(max_items=MAX_VOCAB, default=None)
    tokenizer: str = one_of(TOKENIZERS, default="word")
    unk: str | None = None
    eos: str | None = None
    roles: RolesMeta = RolesMeta()
    lexicon: dict[str, list[str]] | None = None


def validate_checkpoint(path: str | os.PathLike) -> tuple[Shapes, dict[str, Any]]:
    """The tensor shapes and the checked metadata of the safetensors checkpoint ``path``, without
    reading weights."""
    path = Path(path)
    header = read_header(path, "checkpoint file")
    tensors = {name: (e.dtype, e.shape) for name, e in header.tensors.items()}
    return check_contents(path, tensors, header.metadata.get(META_KEY))


def check_contents(
    path: Path, tensors: dict[str, tuple[str, tuple[int, ...]]], raw_meta: str | None
) -> tuple[Shapes, dict[str, Any]]:
    """Check a checkpoint's tensors (name -> (safetensors dtype, shape)) and its metadata JSON ->
    (shapes, parsed metadata). For safetensors files through `validate_checkpoint`; a reader of another
    format (gatescope.checkpoints.formats) calls it with what it converted."""
    for name, (dtype, shape) in tensors.items():
        entry = TensorEntry(name, dtype, tuple(shape), 0, 0)
        if dtype in LOW_PRECISION or _PARAMETER.search(name):
            check_dtype(path, entry, FLOATS, "tensor")
        if (match := _LAYER_SUFFIX.search(name)) and (len(match[1]) > 4 or int(match[1]) >= MAX_LAYERS):
            raise GatescopeError(
                f"{path}: tensor {shown(name)} names layer {shown(match[1])}; gatescope loads up to {MAX_LAYERS} layers"
            )
    return {name: tuple(shape) for name, (_, shape) in tensors.items()}, _metadata(path, raw_meta)


def _metadata(path: Path, raw: str | None) -> dict[str, Any]:
    if raw is None:
        return {}
    meta = parse_json(raw, f"{path}: the '{META_KEY}' metadata")
    if not isinstance(meta, dict):
        raise GatescopeError(f"{path}: the '{META_KEY}' metadata must be a JSON object; got {shown(meta)}")
    fmt, version = meta.get("format", MODEL_FORMAT), meta.get("version", MODEL_FORMAT_VERSION)
    if isinstance(fmt, str) and fmt != MODEL_FORMAT:
        raise GatescopeError(f"{path} is a {fmt[:60]} file, not a model checkpoint")
    if isinstance(version, int) and not isinstance(version, bool) and version > MODEL_FORMAT_VERSION:
        raise GatescopeError(
            f"{path} is model format version {shown(version)}; this gatescope reads up to {MODEL_FORMAT_VERSION}"
        )
    parse(ModelMeta, meta, f"{path}: metadata")
    return meta
