"""Discovery of a checkpoint's recurrent modules, embedding and decoder from tensor shapes alone.

Recurrent modules are found by torch.nn's parameter names under any key prefix: nn.LSTM / nn.GRU /
nn.RNN store ``weight_ih_l{k}``, ``weight_hh_l{k}``, ``bias_ih_l{k}``, ``bias_hh_l{k}`` (``_reverse`` for
the backward direction, ``weight_hr_l{k}`` for an LSTM with proj_size, Sak et al. 2014; ``weight_ch_l{k}``
for a peephole LSTM, ``h0_l{k}`` for a learned initial state, gatescope.recorder.variants), and nn.LSTMCell / nn.GRUCell / nn.RNNCell store the
same names without the ``_l{k}`` suffix. The cell type and sizes follow from the shapes
(torch/nn/modules/rnn.py): weight_hh is (4H, H) for an LSTM, (3H, H) for a GRU, (H, H) for an RNN,
(4H, proj) with a projection; a weight_ch makes a peephole LSTM. What the names cannot say (a relu RNN,
a coupled LSTM, other activations, clipping, a reset-before GRU) the metadata key ``cells`` declares:
``{module name: {"cell": "LSTM", "coupling": ..., ...}}`` (gatescope.kinds.cell_type_of; the older
``reset_before`` list of GRU names is read too), and the declared cell's row blocks are checked. The input embedding and the output decoder are guessed
as in PyTorch's word_language_model example (``encoder.weight`` / ``decoder``), and a Linear
before the first recurrent module as its input projection (a time-series model's Linear(features
-> input)); explicit roles from the checkpoint's metadata override the guesses. Every tensor is
accounted for: used by the runnable chain, or listed as unused. Nothing here reads tensor data.
"""
from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Any

from gatescope.errors import GatescopeError, shown
from gatescope.kinds import (
    CELL_TYPES,
    GRU_RESET_BEFORE,
    LSTM,
    CellType,
    cell_type,
    cell_type_of,
    module_directions,
    param_suffix,
)
from gatescope.recorder.rnn import METADATA_KEY as RESET_BEFORE_KEY  # the older key: names of reset-before GRUs
from gatescope.recorder.variants import METADATA_KEY as CELLS_KEY  # module name -> its cell's description

_LAYER_KEY = re.compile(
    r"^(?:(?P<prefix>.*)\.)?(?P<param>weight_ih|weight_hh|bias_ih|bias_hh|weight_hr|weight_ch|h0)_l(?P<layer>\d+)"
    r"(?P<rev>_reverse)?$"
)
_CELL_KEY = re.compile(r"^(?:(?P<prefix>.*)\.)?(?P<param>weight_ih|weight_hh|bias_ih|bias_hh)$")
_GATES = {4: "LSTM", 3: "GRU", 1: "RNN"}  # rows of weight_hh per hidden unit -> cell

_DECODER_HINTS = ("dec", "out", "fc", "head", "linear", "classifier", "proj")
_INPUT_HINTS = ("in", "proj", "fc", "linear", "enc")

Shapes = dict[str, tuple[int, ...]]  # tensor name -> shape


@dataclass(frozen=True)
class RecurrentSpec:
    """One recurrent module found in a checkpoint: its name in the model, key prefix and sizes."""

    name: str  # submodule path in the LoadedModel, e.g. "encoder.rnn" ("lstm" for a bare state dict)
    prefix: str  # key prefix in the file, e.g. "encoder.rnn." ("" for a bare state dict)
    cell: str  # LSTM, GRU, RNN, LSTMCell, GRUCell or RNNCell
    input_size: int
    hidden_size: int
    num_layers: int
    bidirectional: bool
    proj_size: int
    bias: bool
    variant: CellType | None = None  # a cell type other than the family's torch cell (see the metadata "cells")
    learned_h0: bool = False  # a learned initial hidden state, h0_l{k} (gatescope.recorder.variants)
    reverse_only: bool = False  # the backward direction alone (its keys all _reverse; ONNX direction="reverse")

    @property
    def cell_type(self) -> CellType:
        """What the module computes: its declared or discovered variant, else its family's torch cell."""
        return self.variant or cell_type(self.cell)

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
        del info["prefix"], info["variant"], info["learned_h0"], info["reverse_only"]
        own = {k: True for k in ("learned_h0", "reverse_only") if getattr(self, k)}
        return info | self.cell_type.info() | own

    def expected_shapes(self) -> Shapes:
        """Every parameter key of this module in the file, with the shape torch gives it."""
        cell = self.cell_type
        rows, state = cell.gates * self.hidden_size, self.proj_size or self.hidden_size
        if self.is_cell:
            shapes = {"weight_ih": (rows, self.input_size), "weight_hh": (rows, state)}
            if self.bias:
                shapes |= {"bias_ih": (rows,), "bias_hh": (rows,)}
            return {self.prefix + k: v for k, v in shapes.items()}
        shapes = {}
        for layer in range(self.num_layers):
            width = self.input_size if layer == 0 else self.output_size
            for direction in module_directions(self):
                end = param_suffix(layer, direction)
                shapes[f"weight_ih{end}"] = (rows, width)
                shapes[f"weight_hh{end}"] = (rows, state)
                if self.bias:
                    shapes[f"bias_ih{end}"] = (rows,)
                    shapes[f"bias_hh{end}"] = (rows,)
                if self.proj_size:
                    shapes[f"weight_hr{end}"] = (self.proj_size, self.hidden_size)
                if cell.peepholes:
                    shapes[f"weight_ch{end}"] = (len(cell.peephole_kinds) * self.hidden_size,)
                if self.learned_h0:
                    shapes[f"h0{end}"] = (state,)
        return {self.prefix + k: v for k, v in shapes.items()}


# -- discovery from shapes alone -------------------------------------------------------------
def declared_cells(metadata: dict[str, Any]) -> dict[str, CellType]:
    """The cell types the metadata declares, by module name: ``cells`` entries, and the GRUs that the older
    ``reset_before`` lists (one-line GatescopeError on a malformed entry)."""
    declared: dict[str, CellType] = {}
    names = metadata.get(RESET_BEFORE_KEY, [])
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise GatescopeError(f"metadata '{RESET_BEFORE_KEY}' must list GRU module names, not {names!r}")
    declared.update(dict.fromkeys(names, GRU_RESET_BEFORE))
    cells = metadata.get(CELLS_KEY, {})
    if not isinstance(cells, dict):
        raise GatescopeError(f"metadata '{CELLS_KEY}' must map module names to cell descriptions, not {cells!r}")
    for name, info in cells.items():
        try:
            declared[name] = cell_type_of(info if isinstance(info, dict) else {})
        except (ValueError, TypeError) as exc:
            raise GatescopeError(f"metadata '{CELLS_KEY}' entry {name!r}: {exc}") from None
    return declared


def check_declared(specs: list[RecurrentSpec], declared: dict[str, CellType]) -> None:
    """Every declared module is a discovered one of the declared family (GatescopeError otherwise)."""
    found = {spec.name: spec for spec in specs}
    for name, cell in declared.items():
        spec = found.get(name)
        if spec is None or spec.cell_type != cell:
            have = ", ".join(f"{s.name} ({s.cell})" for s in specs) or "none"
            raise GatescopeError(f"the metadata declares {name!r} a {cell.describe()}, which is not a module "
                                 f"found here (modules: {have})")


def discover_recurrent(shapes: Shapes, declared: dict[str, CellType] | None = None) -> list[RecurrentSpec]:
    """Every recurrent module among the checkpoint's keys, validated against torch's shapes (and the cell
    types ``declared`` by module name, see `declared_cells`)."""
    declared = declared or {}
    layered: dict[str, set[str]] = {}
    cells: dict[str, set[str]] = {}
    for key in shapes:
        if match := _LAYER_KEY.match(key):
            layered.setdefault(match["prefix"] or "", set()).add(key)
        elif match := _CELL_KEY.match(key):
            cells.setdefault(match["prefix"] or "", set()).add(key)
    specs = [_layered_spec(prefix, keys, shapes, declared) for prefix, keys in layered.items()]
    specs += [_cell_spec(prefix, keys, shapes) for prefix, keys in cells.items()]
    return sorted(specs, key=lambda spec: spec.prefix)


def _shape(shapes: Shapes, key: str, dims: int) -> tuple[int, ...]:
    if key not in shapes:
        raise GatescopeError(f"inconsistent recurrent weights: {key} is missing")
    if len(shapes[key]) != dims or 0 in shapes[key]:
        raise GatescopeError(f"inconsistent shapes: {key} has shape {list(shapes[key])}; expected {dims} dimensions")
    return shapes[key]


def _gates(key: str, rows: int, hidden: int, allowed: tuple[int, ...] = (4, 3, 1)) -> int:
    if hidden == 0 or rows % hidden or rows // hidden not in allowed:
        raise GatescopeError(
            f"inconsistent shapes: {key} has {rows} rows for hidden size {hidden}; "
            f"expected {' or '.join(f'{g}x{hidden}' for g in allowed)}"
        )
    return rows // hidden


def _layered_spec(prefix: str, keys: set[str], shapes: Shapes, declared: dict[str, CellType]) -> RecurrentSpec:
    base = f"{prefix}." if prefix else ""
    reverse_only = all(k.endswith("_reverse") for k in keys)  # ONNX direction="reverse": the backward one alone
    l0 = "_l0_reverse" if reverse_only else "_l0"
    rows, state = _shape(shapes, f"{base}weight_hh{l0}", 2)
    own = declared.get(prefix) if prefix else next((declared[n.lower()] for n in CELL_TYPES if n.lower() in declared),
                                                   None)
    peepholes = f"{base}weight_ch{l0}" in keys
    if f"{base}weight_hr{l0}" in keys:
        proj, hidden = _shape(shapes, f"{base}weight_hr{l0}", 2)
        if proj >= hidden:  # torch's LSTM: proj_size < hidden_size
            raise GatescopeError(f"inconsistent shapes: {base}weight_hr{l0} has shape {[proj, hidden]}; a projection "
                                 f"[proj_size, {hidden}] must be narrower than the hidden size {hidden}")
    else:
        proj, hidden = 0, state
    if own is not None:
        try:
            _gates(f"{base}weight_hh{l0}", rows, hidden, allowed=(own.gates,))
        except GatescopeError as exc:
            raise GatescopeError(f"the metadata declares {prefix or own.name.lower()!r} a {own.describe()}, "
                                 f"but {exc}") from None
        variant, cell = own, own.name
    else:
        allowed = (4,) if proj or peepholes else tuple(_GATES)
        cell = _GATES[_gates(f"{base}weight_hh{l0}", rows, hidden, allowed)]
        variant = LSTM.variant(peepholes=True) if peepholes else None
    layers = 1 + max(int(_LAYER_KEY.match(k)["layer"]) for k in keys)
    spec = RecurrentSpec(
        name=prefix or cell.lower(),
        prefix=base,
        cell=cell,
        input_size=_shape(shapes, f"{base}weight_ih{l0}", 2)[1],
        hidden_size=hidden,
        num_layers=layers,
        bidirectional=not reverse_only and any(k.endswith("_reverse") for k in keys),
        proj_size=proj,
        bias=any("bias_" in k for k in keys),
        variant=None if variant is None or variant == CELL_TYPES[cell] else variant,
        learned_h0=f"{base}h0{l0}" in keys,
        reverse_only=reverse_only,
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


# -- roles: embedding, input projection, recurrent chain, decoder -----------------------------
@dataclass(frozen=True)
class Roles:
    """Which tensors the runnable model uses (embedding -> input projection -> recurrent chain ->
    decoder), which it does not, and why it cannot run, if it cannot."""

    embedding: str | None  # key of the embedding matrix [V, E], e.g. "encoder.weight"
    recurrent: list[RecurrentSpec]  # run in this order
    decoder: str | None  # module path of the output Linear, e.g. "decoder"
    decoder_bias: bool
    input_projection: str | None = None  # module path of a Linear applied before the first recurrent module
    input_projection_bias: bool = False
    guessed_projection: bool = False  # found from the shapes, not named by the metadata
    unused: tuple[str, ...] = ()  # tensors of the file the runnable model does not use, not declared outside it
    refusal: str | None = None  # why the model cannot run as one chain (None: it can)
    outside: tuple[str, ...] = ()  # tensors the metadata role "outside" declares outside the chain
    decoder_alike: tuple[str, ...] = ()  # other Linears the decoder guess could not tell from the one it took


def resolve_roles(shapes: Shapes, specs: list[RecurrentSpec], roles: dict[str, Any]) -> Roles:
    """The embedding, input projection, recurrent chain and decoder: explicit metadata roles first,
    else guesses; every other tensor is listed as unused. Guessed roles that leave a recurrent
    module out of the chain, or a second embedding unused, give a `refusal`: the loader cannot run
    that architecture (it is still described from its weights)."""
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

    decoder_alike: tuple[str, ...] = ()
    if "decoder" in roles:
        decoder = _role_key(shapes, roles["decoder"], "decoder")
        decoder = decoder.removesuffix(".weight") if decoder else None
    else:
        candidates = [k for k in free if k != embedding and shapes[k][1] == chain[-1].output_size]
        decoder, decoder_alike = _guess_decoder(shapes, candidates)

    free = [k for k in free if k not in (embedding, f"{decoder}.weight")]
    if "input" in roles:
        projection = _role_key(shapes, roles["input"], "input")
    else:
        projection = _guess_projection(shapes, free, embedding, chain[0].input_size)
    if projection is not None and embedding is None and "embedding" not in roles:
        embedding = _guess_embedding(shapes, [k for k in free if k != projection], {shapes[projection][1]})
    projection = projection.removesuffix(".weight") if projection else None
    _check_chain(chain, shapes, embedding, projection)
    decoder_bias = _check_linear(shapes, decoder, chain[-1].output_size, f"after {chain[-1].name}", "decoder")
    projection_bias = False
    if projection is not None:
        projection_bias = _check_linear(shapes, projection, None, "", "input projection")

    chain_keys = {key for spec in chain for key in spec.expected_shapes()}
    for path, bias in ((decoder, decoder_bias), (projection, projection_bias)):
        if path is not None:
            chain_keys |= {f"{path}.weight"} | ({f"{path}.bias"} if bias else set())
    chain_keys |= {embedding} if embedding else set()
    outside = _outside(shapes, roles.get("outside"), chain_keys)
    unused = tuple(k for k in shapes if k not in chain_keys and k not in outside)
    refusal = None if "recurrent" in roles else _refusal(shapes, specs, chain, unused, embedding)
    return Roles(embedding, chain, decoder, decoder_bias, projection, projection_bias,
                 projection is not None and "input" not in roles, unused, refusal, outside, decoder_alike)


def _outside(shapes: Shapes, value: Any, chain_keys: set[str]) -> tuple[str, ...]:
    """The tensors the metadata role ``outside`` names (tensors, or modules: every tensor under the name):
    tensors the model's outputs do not go through (an auxiliary head, a training-only tensor)."""
    if value is None:
        return ()
    names = [value] if isinstance(value, str) else value
    if not isinstance(names, list) or not all(isinstance(n, str) and n for n in names):
        raise GatescopeError(f"metadata role 'outside' must list tensor or module names, not {shown(value)}")
    outside: list[str] = []
    for name in names:
        keys = [k for k in shapes if k == name or k.startswith(f"{name}.")]
        if not keys:
            raise GatescopeError(f"metadata role 'outside' names {shown(name)}, which is not in the file")
        if used := [k for k in keys if k in chain_keys]:
            raise GatescopeError(f"metadata role 'outside' names {shown(name)}, but the chain uses {used[0]}")
        outside += [k for k in keys if k not in outside]
    return tuple(outside)


def _check_linear(shapes: Shapes, path: str | None, in_features: int | None, where: str, role: str) -> bool:
    """Whether the Linear at ``path`` has a bias; its shapes checked (in_features, when given)."""
    if path is None:
        return False
    weight = shapes[f"{path}.weight"]
    if len(weight) != 2 or (in_features is not None and weight[1] != in_features):
        raise GatescopeError(
            f"inconsistent shapes: {role} {path}.weight has shape {list(weight)}; expected "
            f"[{'vocabulary' if role == 'decoder' else 'outputs'}, {in_features}] {where}".rstrip()
        )
    bias = shapes.get(f"{path}.bias")
    if bias is not None and tuple(bias) != (weight[0],):
        raise GatescopeError(f"inconsistent shapes: {path}.bias has shape {list(bias)}; expected [{weight[0]}]")
    return bias is not None


def _refusal(shapes: Shapes, specs: list[RecurrentSpec], chain: list[RecurrentSpec], unused: tuple[str, ...],
             embedding: str | None) -> str | None:
    """Why guessed roles do not describe the whole model, or None when they do."""
    left_out = [spec for spec in specs if spec not in chain]
    if left_out:
        found = ", ".join(f"{s.name} ({s.cell} {s.input_size}->{s.output_size})" for s in specs)
        return (f"its {len(specs)} recurrent modules {found} are not one chain "
                f"(the loader would run only {' -> '.join(s.name for s in chain)})")
    widths = {spec.input_size for spec in specs} | ({shapes[embedding][1]} if embedding else set())
    embeddings = [k for k in unused if _looks_like_embedding(shapes, k, widths)]
    if embedding and embeddings:
        shown = ", ".join(f"{k} {list(shapes[k])}" for k in [embedding, *embeddings])
        return f"it has {1 + len(embeddings)} embeddings ({shown}); the loader runs one"
    return None


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


def named_like_embedding(key: str) -> bool:
    return "emb" in key.lower() or key.endswith("encoder.weight")


def _looks_like_embedding(shapes: Shapes, key: str, widths: set[int]) -> bool:
    """A 2-D weight as wide as some module's input that is named like an embedding, or at least has no
    bias and is not named like an output layer (those are Linears, not nn.Embedding)."""
    if not key.endswith(".weight") or len(shapes[key]) != 2 or shapes[key][1] not in widths:
        return False
    return named_like_embedding(key) or not (_has_bias(shapes, key) or any(h in key.lower() for h in _DECODER_HINTS))


def _guess_embedding(shapes: Shapes, free: list[str], widths: set[int]) -> str | None:
    """The weight that looks like an embedding, one named like one (emb, encoder.weight) first."""
    candidates = [k for k in free if _looks_like_embedding(shapes, k, widths)]
    return min(candidates, key=lambda k: not named_like_embedding(k), default=None)


def _guess_decoder(shapes: Shapes, candidates: list[str]) -> tuple[str | None, tuple[str, ...]]:
    """The output Linear: named like one (decoder, out, fc, ...) and with a bias if possible, the shortest
    name among those alike (``decoder`` before ``aux_decoder``); and the other candidates that rank as well
    (a second head), which the guess cannot tell from it."""
    def rank(k: str) -> tuple[bool, bool]:
        return (not any(h in k.lower() for h in _DECODER_HINTS), not _has_bias(shapes, k))

    best = min(candidates, key=lambda k: (rank(k), len(k)), default=None)
    if best is None:
        return None, ()
    alike = tuple(k.removesuffix(".weight") for k in candidates if k != best and rank(k) == rank(best))
    return best.removesuffix(".weight"), alike


def _guess_projection(shapes: Shapes, free: list[str], embedding: str | None, width: int) -> str | None:
    """An input Linear [width, in] before the first recurrent module (a time-series model's
    Linear(features -> input), or a Linear after an embedding of width ``in``), unless the embedding
    already feeds that module; named like one (in, proj, fc, ...) and with a bias if possible."""
    if embedding is not None and shapes[embedding][1] == width:
        return None

    def rank(k: str) -> tuple[bool, bool]:
        return (not any(h in k.lower() for h in _INPUT_HINTS), not _has_bias(shapes, k))

    fed = None if embedding is None else shapes[embedding][1]
    candidates = [k for k in free if shapes[k][0] == width and (fed is None or shapes[k][1] == fed)]
    return min(candidates, key=rank, default=None)


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


def _check_chain(chain: list[RecurrentSpec], shapes: Shapes, embedding: str | None, projection: str | None) -> None:
    width, source = None, ""
    if embedding is not None:
        width, source = shapes[embedding][1], f"embedding {embedding} {list(shapes[embedding])}"
    if projection is not None:
        weight = shapes[f"{projection}.weight"]
        if width is not None and weight[1] != width:
            raise GatescopeError(f"inconsistent shapes: input projection {projection}.weight has shape {list(weight)}; "
                                 f"{source} gives {width} values a step")
        width, source = weight[0], f"input projection {projection}.weight {list(weight)}"
    if width is not None and width != chain[0].input_size:
        raise GatescopeError(
            f"inconsistent shapes: {source} gives {width} values a step; "
            f"{chain[0].name} takes inputs of size {chain[0].input_size}"
        )
    for prev, spec in zip(chain, chain[1:]):
        if spec.input_size != prev.output_size:
            raise GatescopeError(
                f"inconsistent shapes: {spec.name} takes inputs of size {spec.input_size}, "
                f"but {prev.name} gives {prev.output_size}"
            )
