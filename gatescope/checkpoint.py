"""Loading a safetensors checkpoint as a runnable model: discovery of its recurrent modules.

The checkpoint is read with safetensors' own API, never unpickled. Recurrent modules are
found by torch.nn's parameter names under any key prefix: nn.LSTM / nn.GRU store
``weight_ih_l{k}``, ``weight_hh_l{k}``, ``bias_ih_l{k}``, ``bias_hh_l{k}`` (``_reverse`` for the
backward direction, ``weight_hr_l{k}`` for an LSTM with proj_size, Sak et al. 2014), and
nn.LSTMCell / nn.GRUCell store the same names without the ``_l{k}`` suffix. The cell type
and sizes follow from the shapes (torch/nn/modules/rnn.py): weight_hh is (4H, H) for an LSTM,
(3H, H) for a GRU, (4H, proj) with a projection. The input embedding and the output decoder
are guessed as in PyTorch's word_language_model example (``encoder.weight`` / ``decoder``), and
the optional metadata JSON (``__metadata__['gatescope']``, see docs/architecture.md) overrides
the guesses and carries the vocabulary. A model with a vocabulary but no embedding, whose input
is as wide as the vocabulary, takes one-hot token ids (the char-rnn of Karpathy et al. 2015).
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from gatescope.errors import GatescopeError
from gatescope.modules import GRU, LSTM
from gatescope.vocab import Vocabulary

META_KEY = "gatescope"
MODEL_FORMAT = "gatescope.model"
MODEL_FORMAT_VERSION = 1

_LAYER_KEY = re.compile(
    r"^(?:(?P<prefix>.*)\.)?(?P<param>weight_ih|weight_hh|bias_ih|bias_hh|weight_hr)_l(?P<layer>\d+)(?P<rev>_reverse)?$"
)
_CELL_KEY = re.compile(r"^(?:(?P<prefix>.*)\.)?(?P<param>weight_ih|weight_hh|bias_ih|bias_hh)$")
_GATES = {4: "LSTM", 3: "GRU"}  # rows of weight_hh per hidden unit -> cell
_DECODER_HINTS = ("dec", "out", "fc", "head", "linear", "classifier", "proj")

Shapes = dict[str, tuple[int, ...]]


@dataclass(frozen=True)
class RecurrentSpec:
    """One recurrent module found in a checkpoint: its name in the model, key prefix and sizes."""

    name: str  # submodule path in the LoadedModel, e.g. "encoder.rnn" ("lstm" for a bare state dict)
    prefix: str  # key prefix in the file, e.g. "encoder.rnn." ("" for a bare state dict)
    cell: str  # LSTM, GRU, LSTMCell or GRUCell
    input_size: int
    hidden_size: int
    num_layers: int
    bidirectional: bool
    proj_size: int
    bias: bool

    @property
    def output_size(self) -> int:
        """Width of the module's output: directions x (proj_size or hidden_size)."""
        return (2 if self.bidirectional else 1) * (self.proj_size or self.hidden_size)

    @property
    def is_cell(self) -> bool:
        return self.cell.endswith("Cell")

    def info(self) -> dict[str, Any]:
        """The public description (docs/architecture.md, `inspect --json` "modules" entries)."""
        info = asdict(self)
        del info["prefix"]
        return info

    def expected_shapes(self) -> Shapes:
        """Every parameter key of this module in the file, with the shape torch gives it."""
        gates = 4 if self.cell.startswith("LSTM") else 3
        rows, state = gates * self.hidden_size, self.proj_size or self.hidden_size
        if self.is_cell:
            shapes = {"weight_ih": (rows, self.input_size), "weight_hh": (rows, state)}
            if self.bias:
                shapes |= {"bias_ih": (rows,), "bias_hh": (rows,)}
            return {self.prefix + k: v for k, v in shapes.items()}
        shapes = {}
        for layer in range(self.num_layers):
            width = self.input_size if layer == 0 else self.output_size
            for suffix in ("", "_reverse")[: 1 + self.bidirectional]:
                end = f"_l{layer}{suffix}"
                shapes[f"weight_ih{end}"] = (rows, width)
                shapes[f"weight_hh{end}"] = (rows, state)
                if self.bias:
                    shapes[f"bias_ih{end}"] = (rows,)
                    shapes[f"bias_hh{end}"] = (rows,)
                if self.proj_size:
                    shapes[f"weight_hr{end}"] = (self.proj_size, self.hidden_size)
        return {self.prefix + k: v for k, v in shapes.items()}


# -- discovery from shapes alone -------------------------------------------------------------
def discover_recurrent(shapes: Shapes) -> list[RecurrentSpec]:
    """Every recurrent module among the checkpoint's keys, validated against torch's shapes."""
    layered: dict[str, set[str]] = {}
    cells: dict[str, set[str]] = {}
    for key in shapes:
        if match := _LAYER_KEY.match(key):
            layered.setdefault(match["prefix"] or "", set()).add(key)
        elif match := _CELL_KEY.match(key):
            cells.setdefault(match["prefix"] or "", set()).add(key)
    specs = [_layered_spec(prefix, keys, shapes) for prefix, keys in layered.items()]
    specs += [_cell_spec(prefix, keys, shapes) for prefix, keys in cells.items()]
    return sorted(specs, key=lambda spec: spec.prefix)


def _shape(shapes: Shapes, key: str, dims: int) -> tuple[int, ...]:
    if key not in shapes:
        raise GatescopeError(f"inconsistent recurrent weights: {key} is missing")
    if len(shapes[key]) != dims or 0 in shapes[key]:
        raise GatescopeError(f"inconsistent shapes: {key} has shape {list(shapes[key])}; expected {dims} dimensions")
    return shapes[key]


def _gates(key: str, rows: int, hidden: int, allowed: tuple[int, ...] = (4, 3)) -> int:
    if hidden == 0 or rows % hidden or rows // hidden not in allowed:
        raise GatescopeError(
            f"inconsistent shapes: {key} has {rows} rows for hidden size {hidden}; "
            f"expected {' or '.join(f'{g}x{hidden}' for g in allowed)}"
        )
    return rows // hidden


def _layered_spec(prefix: str, keys: set[str], shapes: Shapes) -> RecurrentSpec:
    base = f"{prefix}." if prefix else ""
    rows, state = _shape(shapes, f"{base}weight_hh_l0", 2)
    if f"{base}weight_hr_l0" in keys:
        proj, hidden = _shape(shapes, f"{base}weight_hr_l0", 2)
        _gates(f"{base}weight_hh_l0", rows, hidden, allowed=(4,))
        cell = "LSTM"
    else:
        proj, hidden = 0, state
        cell = _GATES[_gates(f"{base}weight_hh_l0", rows, hidden)]
    layers = 1 + max(int(_LAYER_KEY.match(k)["layer"]) for k in keys)
    spec = RecurrentSpec(
        name=prefix or cell.lower(),
        prefix=base,
        cell=cell,
        input_size=_shape(shapes, f"{base}weight_ih_l0", 2)[1],
        hidden_size=hidden,
        num_layers=layers,
        bidirectional=any(k.endswith("_reverse") for k in keys),
        proj_size=proj,
        bias=any("bias_" in k for k in keys),
    )
    _check_shapes(spec, keys, shapes)
    return spec


def _cell_spec(prefix: str, keys: set[str], shapes: Shapes) -> RecurrentSpec:
    base = f"{prefix}." if prefix else ""
    rows, hidden = _shape(shapes, f"{base}weight_hh", 2)
    cell = _GATES[_gates(f"{base}weight_hh", rows, hidden)] + "Cell"
    spec = RecurrentSpec(
        name=prefix or cell.lower(),
        prefix=base,
        cell=cell,
        input_size=_shape(shapes, f"{base}weight_ih", 2)[1],
        hidden_size=hidden,
        num_layers=1,
        bidirectional=False,
        proj_size=0,
        bias=any("bias_" in k for k in keys),
    )
    _check_shapes(spec, keys, shapes)
    return spec


def _check_shapes(spec: RecurrentSpec, keys: set[str], shapes: Shapes) -> None:
    expected = spec.expected_shapes()
    for key, shape in expected.items():
        if key not in shapes:
            raise GatescopeError(f"inconsistent recurrent weights: {spec.name} has no {key}")
        if tuple(shapes[key]) != shape:
            raise GatescopeError(
                f"inconsistent shapes: {key} has shape {list(shapes[key])}; expected {list(shape)} "
                f"for {spec.cell} with input {spec.input_size}, hidden {spec.hidden_size}"
            )
    if extra := sorted(keys - expected.keys()):
        raise GatescopeError(f"inconsistent recurrent weights: {spec.name} has unexpected keys {', '.join(extra)}")


# -- roles: embedding, recurrent chain, decoder ------------------------------------------------
@dataclass(frozen=True)
class Roles:
    """Which tensors the runnable model uses: embedding key, recurrent chain, decoder path."""

    embedding: str | None  # key of the embedding matrix [V, E], e.g. "encoder.weight"
    recurrent: list[RecurrentSpec]  # run in this order
    decoder: str | None  # module path of the output Linear, e.g. "decoder"
    decoder_bias: bool


def resolve_roles(shapes: Shapes, specs: list[RecurrentSpec], roles: dict[str, Any]) -> Roles:
    """The embedding, recurrent chain and decoder: explicit metadata roles first, else guesses."""
    used = {key for spec in specs for key in spec.expected_shapes()}
    free = [k for k in shapes if k not in used and k.endswith(".weight") and len(shapes[k]) == 2]
    by_name = {spec.name: spec for spec in specs}

    if "embedding" in roles:
        embedding = _role_key(shapes, roles["embedding"], "embedding")
    else:
        embedding = _guess_embedding(shapes, free, {spec.input_size for spec in specs})

    if "recurrent" in roles:
        names = roles["recurrent"] if isinstance(roles["recurrent"], list) else [roles["recurrent"]]
        if not names or not all(isinstance(n, str) for n in names):
            raise GatescopeError(f"metadata role 'recurrent' must list module names, not {roles['recurrent']!r}")
        unknown = [n for n in names if n not in by_name]
        if unknown:
            raise GatescopeError(
                f"metadata roles name recurrent modules {unknown} not in the file (found: {sorted(by_name)})"
            )
        chain = [by_name[n] for n in names]
    else:
        chain = _guess_chain(specs, shapes[embedding][1] if embedding else None)
    _check_chain(chain, shapes, embedding)

    if "decoder" in roles:
        decoder = _role_key(shapes, roles["decoder"], "decoder")
        decoder = decoder.removesuffix(".weight") if decoder else None
    else:
        candidates = [k for k in free if k != embedding and shapes[k][1] == chain[-1].output_size]
        decoder = _guess_decoder(shapes, candidates)
    decoder_bias = False
    if decoder is not None:
        weight = shapes[f"{decoder}.weight"]
        if len(weight) != 2 or weight[1] != chain[-1].output_size:
            raise GatescopeError(
                f"inconsistent shapes: decoder {decoder}.weight has shape {list(weight)}; expected "
                f"[vocabulary, {chain[-1].output_size}] after {chain[-1].name}"
            )
        bias = shapes.get(f"{decoder}.bias")
        decoder_bias = bias is not None
        if decoder_bias and tuple(bias) != (weight[0],):
            raise GatescopeError(f"inconsistent shapes: {decoder}.bias has shape {list(bias)}; expected [{weight[0]}]")
    return Roles(embedding, chain, decoder, decoder_bias)


def _role_key(shapes: Shapes, value: Any, role: str) -> str | None:
    """The tensor key a metadata role names (``"decoder"`` or ``"decoder.weight"``); None = absent."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise GatescopeError(f"metadata role {role!r} must be a tensor or module name, not {value!r}")
    key = value if value.endswith(".weight") else f"{value}.weight"
    if key not in shapes:
        raise GatescopeError(f"metadata role {role!r} names {value!r}, which is not in the file")
    if len(shapes[key]) != 2:
        raise GatescopeError(f"inconsistent shapes: {role} {key} has shape {list(shapes[key])}; expected 2-D")
    return key


def _has_bias(shapes: Shapes, weight_key: str) -> bool:
    return weight_key.removesuffix("weight") + "bias" in shapes


def _guess_embedding(shapes: Shapes, free: list[str], widths: set[int]) -> str | None:
    """A 2-D weight as wide as some module's input, named like one (emb, encoder.weight) if possible.

    A weight with a bias, or named like an output layer, is a Linear, not an nn.Embedding.
    """
    def named(k: str) -> bool:
        return "emb" in k.lower() or k.endswith("encoder.weight")

    candidates = [
        k for k in free
        if shapes[k][1] in widths
        and (named(k) or not (_has_bias(shapes, k) or any(h in k.lower() for h in _DECODER_HINTS)))
    ]
    return min(candidates, key=lambda k: not named(k), default=None)


def _guess_decoder(shapes: Shapes, candidates: list[str]) -> str | None:
    """The output Linear: named like one (decoder, out, fc, ...) and with a bias if possible."""
    def rank(k: str) -> tuple[bool, bool]:
        return (not any(h in k.lower() for h in _DECODER_HINTS), not _has_bias(shapes, k))

    best = min(candidates, key=rank, default=None)
    return best.removesuffix(".weight") if best else None


def _guess_chain(specs: list[RecurrentSpec], width: int | None) -> list[RecurrentSpec]:
    """The modules to run in order: from the one fed by the embedding (or by no other module),
    each next one the first whose input is as wide as the previous output."""
    outputs = {spec.output_size for spec in specs}
    if width is not None:
        starts = [s for s in specs if s.input_size == width] or specs
    else:
        starts = [s for s in specs if s.input_size not in outputs] or specs
    chain = [starts[0]]
    while nxt := next(
        (s for s in specs if s not in chain and s.input_size == chain[-1].output_size), None
    ):
        chain.append(nxt)
    return chain


def _check_chain(chain: list[RecurrentSpec], shapes: Shapes, embedding: str | None) -> None:
    if embedding is not None and shapes[embedding][1] != chain[0].input_size:
        raise GatescopeError(
            f"inconsistent shapes: embedding {embedding} has width {shapes[embedding][1]}; "
            f"{chain[0].name} takes inputs of size {chain[0].input_size}"
        )
    for prev, spec in zip(chain, chain[1:]):
        if spec.input_size != prev.output_size:
            raise GatescopeError(
                f"inconsistent shapes: {spec.name} takes inputs of size {spec.input_size}, "
                f"but {prev.name} gives {prev.output_size}"
            )


# -- the runnable model ----------------------------------------------------------------------
def _build_recurrent(spec: RecurrentSpec) -> nn.Module:
    """A fresh module with the spec's sizes and the checkpoint's parameter names: gatescope's
    drop-in LSTM / GRU for layered modules (batch-first), torch's cells for LSTMCell / GRUCell."""
    if spec.cell == "LSTMCell":
        return nn.LSTMCell(spec.input_size, spec.hidden_size, bias=spec.bias)
    if spec.cell == "GRUCell":
        return nn.GRUCell(spec.input_size, spec.hidden_size, bias=spec.bias)
    kwargs = dict(num_layers=spec.num_layers, bias=spec.bias, batch_first=True, bidirectional=spec.bidirectional)
    if spec.cell == "LSTM":
        return LSTM(spec.input_size, spec.hidden_size, proj_size=spec.proj_size, **kwargs)
    return GRU(spec.input_size, spec.hidden_size, **kwargs)


class LoadedModel(nn.Module):
    """A checkpoint as a runnable model: embedding -> recurrent modules -> decoder.

    Submodules carry the checkpoint's key prefixes as names (keys ``encoder.rnn.weight_ih_l0``
    give the submodule ``encoder.rnn``; a bare nn.LSTM state dict gives ``lstm``), so recorded
    quantities read ``encoder.rnn.l0.fwd.h``.
    """

    def __init__(
        self,
        specs: list[RecurrentSpec],
        roles: Roles,
        shapes: Shapes,
        metadata: dict[str, Any],
        vocab: Vocabulary | None,
    ) -> None:
        super().__init__()
        # plain attributes first: the checkpoint's module names may be anything, even "vocab"
        self.metadata = metadata
        self.vocab = vocab
        self.modules_info = [spec.info() for spec in specs]
        self.recurrent_names = [spec.name for spec in roles.recurrent]
        self._is_cell = {spec.name: spec.is_cell for spec in specs}
        self.embedding_name = roles.embedding.removesuffix(".weight") if roles.embedding else None
        self.decoder_name = roles.decoder
        if roles.embedding:
            self._place(self.embedding_name, nn.Embedding(*shapes[roles.embedding]))
        for spec in specs:
            self._place(spec.name, _build_recurrent(spec))
        if roles.decoder:
            out_features, in_features = shapes[f"{roles.decoder}.weight"]
            self._place(roles.decoder, nn.Linear(in_features, out_features, bias=roles.decoder_bias))

    def _place(self, path: str, module: nn.Module) -> None:
        """Register `module` at dotted `path`, creating empty parent modules on the way."""
        parent = self
        *parents, leaf = path.split(".")
        for part in parents:
            child = parent._modules.get(part)
            if child is None:
                child = parent._modules[part] = nn.Module()
            elif type(child) is not nn.Module:
                raise GatescopeError(f"cannot build the model: {path} lies inside the {type(child).__name__} {part}")
            parent = child
        if leaf in parent._modules:
            raise GatescopeError(f"cannot build the model: two modules are named {path}")
        parent._modules[leaf] = module  # not add_module: names like "embedding" are also attributes here

    def get_submodule(self, target: str) -> nn.Module:
        """torch's get_submodule, walking registered modules only (names may shadow attributes)."""
        module: nn.Module = self
        for part in target.split(".") if target else []:
            if part not in module._modules:
                raise AttributeError(f"{type(module).__name__} has no submodule {part!r} (in {target!r})")
            module = module._modules[part]
        return module

    @property
    def embedding(self) -> nn.Embedding | None:
        return self.get_submodule(self.embedding_name) if self.embedding_name else None

    @property
    def decoder(self) -> nn.Linear | None:
        return self.get_submodule(self.decoder_name) if self.decoder_name else None

    @property
    def input_size(self) -> int:
        """Width of the float inputs the first recurrent module takes (without an embedding)."""
        return self.get_submodule(self.recurrent_names[0]).input_size

    def encode(self, text: str, add_eos: bool = False) -> list[int]:
        """Token ids of `text` in the checkpoint's vocabulary."""
        if self.vocab is None:
            raise GatescopeError("this model has no vocabulary in its metadata; give token ids instead of text")
        return self.vocab.encode(text, add_eos=add_eos)

    @property
    def takes_ids(self) -> bool:
        """True when `forward` takes token ids: through the embedding, or one-hot when there is none
        and the vocabulary is as large as the input (a char-rnn as in Karpathy et al. 2015)."""
        return self.embedding is not None or (self.vocab is not None and len(self.vocab) == self.input_size)

    def check_input(self, ids: torch.Tensor) -> None:
        """Raise GatescopeError unless `ids` is what `forward` takes: ids [B, T] or floats [B, T, input]."""
        if self.takes_ids:
            size = self.embedding.num_embeddings if self.embedding is not None else len(self.vocab)
            if ids.dim() != 2 or ids.dtype.is_floating_point or ids.dtype == torch.bool:
                raise GatescopeError(f"this model takes token ids [batch, time]; got {ids.dtype} {list(ids.shape)}")
            if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= size):
                raise GatescopeError(f"token ids must lie in 0..{size - 1}; got {int(ids.min())}..{int(ids.max())}")
        elif ids.dim() != 3 or ids.shape[-1] != self.input_size:
            raise GatescopeError(
                f"this model has no embedding and takes float inputs [batch, time, {self.input_size}]; "
                f"got {list(ids.shape)}"
            )
        if ids.shape[1] == 0:
            raise GatescopeError("empty input: sequences need at least one step")

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """ids [B, T] (or floats [B, T, input_size] without an embedding), lengths [B] -> logits [B, T, V]
        (or the last recurrent output [B, T, D*H] without a decoder). Padded positions are not run."""
        embedding = self.embedding
        if embedding is not None:
            x = embedding(ids)  # (B, T, E)
        elif self.takes_ids:
            x = nn.functional.one_hot(ids, self.input_size).to(self._dtype())  # (B, T, V)
        else:
            x = ids.to(self._dtype())  # (B, T, I)
        for name in self.recurrent_names:
            module = self.get_submodule(name)
            x = _step_cell(module, x, lengths) if self._is_cell[name] else _run_layered(module, x, lengths)
        decoder = self.decoder
        return decoder(x) if decoder is not None else x  # (B, T, V) or (B, T, D*H)

    def _dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype


def _run_layered(module: nn.Module, x: torch.Tensor, lengths: torch.Tensor | None) -> torch.Tensor:
    """An nn.LSTM/GRU (batch_first) over x [B, T, in]; with lengths, through a PackedSequence."""
    if lengths is None:
        return module(x)[0]
    packed = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
    return pad_packed_sequence(module(packed)[0], batch_first=True, total_length=x.shape[1])[0]


def _step_cell(cell: nn.Module, x: torch.Tensor, lengths: torch.Tensor | None) -> torch.Tensor:
    """An LSTMCell/GRUCell stepped over x [B, T, in] from a zero state -> h for every step [B, T, H].

    With lengths, step t runs only the sequences longer than t (longest first, as in a
    PackedSequence), so padded positions are never computed; their outputs are zero.
    """
    batch, steps = x.shape[:2]
    order = torch.arange(batch, device=x.device)
    if lengths is not None:
        lengths = lengths.to(x.device)
        order = torch.argsort(lengths, descending=True, stable=True)
        x = x[order]
    out = x.new_zeros(batch, steps, cell.hidden_size)  # (B, T, H)
    state = None
    for t in range(steps):
        active = batch if lengths is None else int((lengths > t).sum())
        if active == 0:
            break
        if state is not None:
            state = tuple(s[:active] for s in state) if isinstance(state, tuple) else state[:active]
        state = cell(x[:active, t], state)
        out[:active, t] = state[0] if isinstance(state, tuple) else state
    result = torch.empty_like(out)
    result[order] = out
    return result


# -- reading the file ------------------------------------------------------------------------
def load(
    path: str | os.PathLike,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
) -> LoadedModel:
    """Load a safetensors checkpoint as a runnable `LoadedModel` (in eval mode).

    dtype: the parameters' dtype; by default float32 for half-precision weights on the CPU
    (which computes half precision slowly or not at all), else the stored dtype.
    """
    path = Path(path)
    device = _device(device)
    shapes, metadata = read_header(path)
    specs = discover_recurrent(shapes)
    if not specs:
        shown = ", ".join(f"{k} {list(v)}" for k, v in list(shapes.items())[:8])
        more = f" and {len(shapes) - 8} more" if len(shapes) > 8 else ""
        raise GatescopeError(f"no recurrent weights in {path} (found: {shown or 'no tensors'}{more})")
    try:
        roles = resolve_roles(shapes, specs, metadata.get("roles") or {})
        vocab = Vocabulary.from_metadata(metadata)
    except GatescopeError as exc:
        raise GatescopeError(f"{path}: {exc}") from None
    with torch.device("meta"):  # no random initialisation: every parameter comes from the file
        model = LoadedModel(specs, roles, shapes, metadata, vocab)
    if vocab is not None and model.embedding is not None and len(vocab) != model.embedding.num_embeddings:
        raise GatescopeError(
            f"{path}: the vocabulary has {len(vocab)} tokens "
            f"but the embedding has {model.embedding.num_embeddings} rows"
        )
    state = _read_tensors(path, model, specs)
    stored = _common_dtype(state.values())
    if dtype is None:
        half = stored in (torch.float16, torch.bfloat16)
        dtype = torch.float32 if half and device.type == "cpu" else stored
    model.load_state_dict({k: v.to(dtype) for k, v in state.items()}, strict=True, assign=True)
    return model.to(device=device, dtype=dtype).eval()


def read_header(path: Path) -> tuple[Shapes, dict[str, Any]]:
    """Tensor shapes and the parsed gatescope metadata of a safetensors file, without reading data."""
    if path.is_dir():
        raise GatescopeError(f"{path} is a folder, not a checkpoint file")
    try:
        with safe_open(path, framework="pt") as f:
            shapes = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
            raw = (f.metadata() or {}).get(META_KEY)
    except FileNotFoundError:
        raise GatescopeError(f"no such file: {path}") from None
    except PermissionError:
        raise GatescopeError(f"cannot read {path}: permission denied") from None
    except SafetensorError as exc:
        raise GatescopeError(f"{path} is not a readable safetensors file ({_first_line(exc)})") from None
    except OSError as exc:
        raise GatescopeError(f"cannot read {path}: {exc.strerror or _first_line(exc)}") from None
    return shapes, _parse_metadata(path, raw)


def _parse_metadata(path: Path, raw: str | None) -> dict[str, Any]:
    if raw is None:
        return {}
    try:
        meta = json.loads(raw)
    except json.JSONDecodeError:
        raise GatescopeError(f"{path}: the '{META_KEY}' metadata is not valid JSON") from None
    if not isinstance(meta, dict):
        raise GatescopeError(f"{path}: the '{META_KEY}' metadata must be a JSON object")
    if meta.get("format", MODEL_FORMAT) != MODEL_FORMAT:
        raise GatescopeError(f"{path} is a {meta['format']} file, not a model checkpoint")
    if meta.get("version", MODEL_FORMAT_VERSION) > MODEL_FORMAT_VERSION:
        raise GatescopeError(
            f"{path} is model format version {meta['version']}; this gatescope reads up to {MODEL_FORMAT_VERSION}"
        )
    if not isinstance(meta.get("roles", {}), dict):
        raise GatescopeError(f"{path}: metadata 'roles' must be a JSON object")
    return meta


def _read_tensors(path: Path, model: LoadedModel, specs: list[RecurrentSpec]) -> dict[str, torch.Tensor]:
    """The model's state dict read from the file (keys renamed where a bare state dict got a name)."""
    rename = {spec.prefix: f"{spec.name}." for spec in specs}
    state = {}
    try:
        with safe_open(path, framework="pt") as f:
            for spec in specs:
                for key in spec.expected_shapes():
                    state[rename[spec.prefix] + key.removeprefix(spec.prefix)] = f.get_tensor(key)
            for key in model.state_dict().keys() - state.keys():
                state[key] = f.get_tensor(key)
    except SafetensorError as exc:
        raise GatescopeError(f"{path}: cannot read the weights ({_first_line(exc)})") from None
    for key, tensor in state.items():
        if not tensor.is_floating_point():
            raise GatescopeError(f"{path}: {key} holds {tensor.dtype} values; weights must be floating point")
    return state


def _common_dtype(tensors) -> torch.dtype:
    dtype = None
    for tensor in tensors:
        dtype = tensor.dtype if dtype is None else torch.promote_types(dtype, tensor.dtype)
    return dtype


def _device(device: str | torch.device | None) -> torch.device:
    try:
        device = torch.device(device or "cpu")
    except (RuntimeError, TypeError):
        raise GatescopeError(f"unknown device {device!r} (expected e.g. cpu, cuda, cuda:1)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise GatescopeError(f"device {device} asked for, but CUDA is not available here")
    return device


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
