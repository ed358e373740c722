"""The door of a trace file: every tensor, every metadata key and how they fit together, checked once.

The format is docs/trace-format.md, whose list of constraints is this module's. `validate_trace`
reads the safetensors header (gatescope.validation.safetensors), parses the ``gatescope``
metadata against `TraceMeta`, reads ``offsets`` and checks:

- tensor names: quantities ``PATH.lLAYER.fwd|bwd.KIND`` (gatescope.names), ``offsets``,
  ``token_ids``, ``feature.NAME``; nothing else;
- dtypes and shapes: quantities F32 / F16 / BF16 / F64 [N, H] with 1 <= H <= MAX_UNITS;
  offsets I64 [S + 1], S >= 1, from 0, never decreasing, ending at N >= 1; token_ids I64 or I32
  [N] (an id outside the vocabulary is shown as ``<id>``, not refused); features F32 / F64 / F16 [N];
- against the ``modules`` metadata (when given): every quantity belongs to a listed module, its
  kind is one of the module's cell type (gatescope.kinds), its layer below num_layers, ``bwd``
  only for a bidirectional module, its width the module's (its ``widths`` entry for the kind where it has
  one, proj_size for an LSTM's ``h`` with a projection, hidden_size otherwise). Without it, one path's
  kinds still come from one cell type.

What it returns, `TraceLayout`, is what the reader maps; the reader checks nothing again.
Torch-free: the browser reads traces without importing torch.
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from gatescope.errors import GatescopeError, shown
from gatescope.files import open_regular
from gatescope.kinds import CELL_TYPES, KINDS, cell_type_of, module_directions
from gatescope.names import QuantityName, canonical_order, parse_name
from gatescope.validation.limits import MAX_DIM, MAX_LAYERS, MAX_NAME_CHARS, MAX_UNITS, MAX_VOCAB
from gatescope.validation.safetensors import FLOATS, META_KEY, Header, TensorEntry, check_dtype, parse_json, read_header
from gatescope.validation.schema import bounded, one_of, parse, sized
from gatescope.vocab import TOKENIZERS

FORMAT = "gatescope.trace"
FORMAT_VERSION = 1
FEATURE_PREFIX = "feature."


def check_layout(
    offsets: np.ndarray,
    shapes: Mapping[str, tuple[int, ...]],
    token_ids: int | None = None,
    features: Mapping[str, int] | None = None,
) -> int:
    """Check that quantities, token ids and features all have one row per token -> that count.

    offsets (S+1,) must start at 0 and never decrease; shapes: quantity name -> shape, each
    [N, hidden]; token_ids / features: their lengths. Anything else is a one-line GatescopeError.
    """
    if offsets.ndim != 1 or len(offsets) < 1 or offsets[0] != 0 or (np.diff(offsets) < 0).any():
        raise GatescopeError("trace offsets must start at 0 and never decrease")
    n = int(offsets[-1])
    for name, shape in shapes.items():
        parse_name(name)
        if len(shape) != 2 or shape[0] != n or shape[1] < 1:
            raise GatescopeError(f"trace tensor {name} has shape {tuple(shape)}; expected [{n}, hidden]")
    if token_ids is not None and token_ids != n:
        raise GatescopeError(f"token_ids has {token_ids} entries for {n} tokens")
    for name, count in (features or {}).items():
        if count != n:
            raise GatescopeError(f"feature {name!r} has {count} values; the trace has {n} tokens")
    return n

CELLS = tuple(f"{name}{suffix}" for name in CELL_TYPES for suffix in ("", "Cell"))  # LSTM LSTMCell GRU GRUCell
QUANTITY_DTYPES = FLOATS
FEATURE_DTYPES = ("F32", "F64", "F16")  # bfloat16 has no numpy dtype: a feature is read as it is stored
ID_DTYPES = ("I64", "I32")


@dataclass(frozen=True)
class ModuleMeta:
    """One entry of the metadata's ``modules``: a recorded module's architecture."""

    name: str = sized(max_chars=MAX_NAME_CHARS)
    cell: str = one_of(CELLS)
    hidden_size: int = bounded(1, MAX_UNITS)
    input_size: int = bounded(0, MAX_DIM, default=0)
    num_layers: int = bounded(1, MAX_LAYERS, default=1)
    bidirectional: bool = False
    proj_size: int = bounded(0, MAX_UNITS, default=0)
    bias: bool = True
    reverse_only: bool = False  # the backward direction alone (gatescope.kinds.module_directions)
    widths: dict[str, int] | None = None  # kind -> units where not hidden_size (an mLSTM's per-head gates)


@dataclass(frozen=True)
class TraceMeta:
    """The ``gatescope`` metadata document of a trace (keys it does not name are kept, unchecked)."""

    format: str = one_of((FORMAT,))
    format_version: int = bounded(1, FORMAT_VERSION)
    modules: list[ModuleMeta] = sized(max_items=10_000, default=())
    vocab: list[str] | None = sized(max_items=MAX_VOCAB, default=None)
    tokenizer: str | None = one_of(TOKENIZERS, default=None)
    lexicon: dict[str, list[str]] | None = None  # word classes (the browser's vocabulary-class track)


@dataclass(frozen=True)
class TraceLayout:
    """A checked trace file: what to map, in the recorded order."""

    header: Header
    meta: dict[str, Any]  # the metadata document as written (checked against TraceMeta)
    quantities: list[TensorEntry]  # in module, layer, direction and kind order
    offsets: np.ndarray  # (S+1,) int64, read
    token_ids: TensorEntry | None
    features: dict[str, TensorEntry] = field(default_factory=dict)  # feature name -> its tensor

    @property
    def num_tokens(self) -> int:
        return int(self.offsets[-1])


def validate_trace(path: str | os.PathLike) -> TraceLayout:
    """Check the trace file ``path`` against every constraint of docs/trace-format.md."""
    path = Path(path)
    header = read_header(path, "trace file")
    meta = _metadata(path, header)
    parsed = parse(TraceMeta, meta, f"{path}: metadata")
    tensors = dict(header.tensors)
    if "offsets" not in tensors:
        raise GatescopeError(f"{path} is not a gatescope trace: it has no 'offsets' tensor")
    offsets = _offsets(path, header, tensors.pop("offsets"))
    token_ids = tensors.pop("token_ids", None)
    features = {}
    for name in [k for k in tensors if k.startswith(FEATURE_PREFIX)]:
        entry = tensors.pop(name)
        if not name[len(FEATURE_PREFIX):]:
            raise GatescopeError(f"{path}: the tensor {shown(name)} has no feature name after {FEATURE_PREFIX!r}")
        check_dtype(path, entry, FEATURE_DTYPES, "feature")
        _one_dim(path, entry, "feature")
        features[name[len(FEATURE_PREFIX):]] = entry
    names = {}
    for name in tensors:
        try:
            names[name] = parse_name(name)
        except GatescopeError:
            raise GatescopeError(
                f"{path}: tensor {shown(name)} is none of a quantity (PATH.lLAYER.fwd|bwd.KIND, e.g. rnn.l0.fwd.h), "
                "offsets, token_ids, feature.NAME"
            ) from None
    if not names:
        raise GatescopeError(f"{path}: the trace holds no recorded quantities")
    for name, entry in tensors.items():
        check_dtype(path, entry, QUANTITY_DTYPES, "quantity")
        if len(entry.shape) == 2 and entry.shape[1] > MAX_UNITS:
            raise GatescopeError(f"{path}: quantity {shown(name)} has {entry.shape[1]} units; the limit is {MAX_UNITS}")
    if token_ids is not None:
        check_dtype(path, token_ids, ID_DTYPES, "tensor")
        _one_dim(path, token_ids, "tensor")
    try:
        check_layout(
            offsets,
            {name: entry.shape for name, entry in tensors.items()},
            None if token_ids is None else token_ids.numel,
            {name: entry.numel for name, entry in features.items()},
        )
    except GatescopeError as exc:
        raise GatescopeError(f"{path} is not a valid trace: {exc}") from None
    _check_modules(path, names, tensors, parsed.modules)
    _check_cells(path, meta.get("modules") or [])
    order = canonical_order(names, [m.name for m in parsed.modules])
    return TraceLayout(header, meta, [tensors[n] for n in order], offsets, token_ids, features)


def _metadata(path: Path, header: Header) -> dict[str, Any]:
    raw = header.metadata.get(META_KEY)
    if raw is None:
        raise GatescopeError(f"{path} is a safetensors file but not a gatescope trace (no '{META_KEY}' metadata)")
    meta = parse_json(raw, f"{path}: the '{META_KEY}' metadata")
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        got = meta.get("format") if isinstance(meta, dict) else meta
        raise GatescopeError(f"{path} is not a gatescope trace (its metadata's format is {shown(got)}, not {FORMAT!r})")
    version = meta.get("format_version")
    if isinstance(version, int) and not isinstance(version, bool) and version > FORMAT_VERSION:
        raise GatescopeError(
            f"{path} is trace format version {shown(version)}; this gatescope reads up to {FORMAT_VERSION}"
        )
    return meta


def _one_dim(path: Path, entry: TensorEntry, role: str) -> None:
    if len(entry.shape) != 1:
        raise GatescopeError(f"{path}: {role} {shown(entry.name)} has shape {list(entry.shape)}; expected [tokens]")


def _read(path: Path, header: Header, entry: TensorEntry, dtype: str, start: int = 0, count: int | None = None):
    """Elements start:start+count of a 1-D tensor (bounded by its checked place in the file)."""
    count = entry.numel - start if count is None else count
    itemsize = np.dtype(dtype).itemsize
    with open_regular(path, "trace file") as f:
        f.seek(header.data_start + entry.begin + start * itemsize)
        data = f.read(count * itemsize)
    if len(data) != count * itemsize:
        raise GatescopeError(f"{path} changed while it was read (tensor {shown(entry.name)} is cut short)")
    return np.frombuffer(data, dtype=dtype)


def _offsets(path: Path, header: Header, entry: TensorEntry) -> np.ndarray:
    check_dtype(path, entry, ("I64",), "tensor")
    if len(entry.shape) != 1 or entry.shape[0] < 2:
        raise GatescopeError(
            f"{path}: offsets has shape {list(entry.shape)}; expected [sequences + 1] with at least one sequence"
        )
    offsets = _read(path, header, entry, "<i8").astype(np.int64)  # (S+1,)
    if offsets[0] != 0 or (np.diff(offsets) < 0).any():
        raise GatescopeError(f"{path} is not a valid trace: offsets must start at 0 and never decrease")
    if offsets[-1] < 1:
        raise GatescopeError(f"{path}: the trace holds no tokens (offsets end at {int(offsets[-1])})")
    return offsets


def _check_cells(path: Path, modules: list[dict[str, Any]]) -> None:
    """Each module's cell type reads back (gatescope.kinds.cell_type_of: a variant's activations, coupling, ...)."""
    for info in modules:
        try:
            cell_type_of(info)
        except (ValueError, TypeError) as exc:
            raise GatescopeError(f"{path}: metadata 'modules' entry {shown(str(info.get('name')))}: {exc}") from None


def _check_modules(path: Path, names: dict[str, QuantityName], tensors: dict[str, TensorEntry], modules) -> None:
    by_path = {}
    for module in modules:
        if module.name in by_path:
            raise GatescopeError(f"{path}: metadata 'modules' lists {shown(module.name)} twice")
        by_path[module.name] = module
    cells_of_path: dict[str, set[str]] = {}
    for name, q in names.items():
        cells = {c for c, t in CELL_TYPES.items() if q.kind in t.kinds_for(1)}
        seen = cells_of_path.setdefault(q.path, set(cells))
        seen &= cells
        if not seen:
            raise GatescopeError(f"{path}: module {shown(q.path)} has kinds of both an LSTM and a GRU (at {name})")
        if not by_path:
            continue
        module = by_path.get(q.path)
        if module is None:
            raise GatescopeError(
                f"{path}: quantity {shown(name)} belongs to no module of the metadata 'modules' "
                f"({', '.join(map(shown, by_path)) or 'none'})"
            )
        cell = CELL_TYPES[module.cell.removesuffix("Cell")]
        kinds = cell.kinds_for(module.proj_size)
        if q.kind not in kinds:
            raise GatescopeError(
                f"{path}: quantity {shown(name)} is a {KINDS[q.kind].title}, which a {module.cell}"
                f"{' with proj_size' if module.proj_size else ''} does not have (kinds: {' '.join(kinds)})"
            )
        if q.layer >= module.num_layers or q.direction not in module_directions(module):
            raise GatescopeError(
                f"{path}: quantity {shown(name)} is not a layer/direction of {module.name} "
                f"({module.num_layers} layers, {' and '.join(module_directions(module))} only)"
            )
        width = module.proj_size if q.kind == "h" and module.proj_size else module.hidden_size
        width = (module.widths or {}).get(q.kind, width)
        if tensors[name].shape[1] != width:
            raise GatescopeError(
                f"{path}: quantity {shown(name)} has {tensors[name].shape[1]} units; module {module.name} gives {width}"
            )
