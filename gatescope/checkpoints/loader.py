"""Loading a safetensors checkpoint as a runnable model: embedding -> input projection ->
recurrent modules -> decoder.

The checkpoint is read with safetensors' own API, never unpickled. What it holds is found from
the shapes by gatescope.checkpoints.discovery (recurrent modules by torch.nn's parameter names, the embedding
and decoder as in PyTorch's word_language_model example, a Linear before the first recurrent
module as its input projection), and the optional metadata JSON (``__metadata__['gatescope']``,
see docs/architecture.md) overrides the guesses and carries the vocabulary. A model with a
vocabulary but no embedding, whose input is as wide as the vocabulary, takes one-hot token ids
(the char-rnn of Karpathy et al. 2015).

Every tensor of the file is accounted for: the model uses it, or it is listed in
``model.unused`` and said in a GatescopeWarning. An architecture that is not one such chain
(several recurrent modules side by side, as in a seq2seq model; two embeddings) is still loaded
with all its recurrent modules, so it can be described from its weights, but running it raises
GatescopeError saying what was found and how to run it (record() on the user's own module, or
metadata roles that name the chain).

Files in the other formats gatescope reads (gatescope.checkpoints.formats.FORMATS) are converted to the same
torch names and metadata by gatescope.checkpoints.formats, at one dispatch point (`_open`).
"""
from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from torch import nn
from torch.overrides import TorchFunctionMode

from gatescope.checkpoints import initial_state
from gatescope.checkpoints.chain import ChainState, run_layered, step_cell
from gatescope.checkpoints.discovery import (
    RecurrentSpec,
    Roles,
    Shapes,
    check_declared,
    declared_cells,
    discover_recurrent,
    named_like_embedding,
    resolve_roles,
)
from gatescope.errors import GatescopeError, warn
from gatescope.kinds import CELL_TYPES, GRU_RESET_BEFORE, RNN_RELU
from gatescope.recorder.rnn import GRU, LSTM, RNN, ResetBeforeGRU
from gatescope.recorder.variants import variant_module
from gatescope.validation.checkpoint import (  # noqa: F401  (the format's names, kept public here)
    META_KEY,
    MODEL_FORMAT,
    MODEL_FORMAT_VERSION,
    check_contents,
    validate_checkpoint,
)
from gatescope.vocab import NO_VOCABULARY, Vocabulary


# -- the runnable model ----------------------------------------------------------------------
def _build_recurrent(spec: RecurrentSpec) -> nn.Module:
    """A fresh module with the spec's sizes and the checkpoint's parameter names: gatescope's
    drop-in LSTM / GRU / RNN for layered modules (batch-first), torch's cells for LSTMCell / GRUCell /
    RNNCell, and for another cell type (a peephole LSTM, or what the metadata ``cells`` declares), a learned
    initial state or the backward direction alone the module of gatescope.recorder.variants that computes it."""
    if spec.cell == "LSTMCell":
        return nn.LSTMCell(spec.input_size, spec.hidden_size, bias=spec.bias)
    if spec.cell == "GRUCell":
        return nn.GRUCell(spec.input_size, spec.hidden_size, bias=spec.bias)
    if spec.cell == "RNNCell":
        return nn.RNNCell(spec.input_size, spec.hidden_size, bias=spec.bias)
    kwargs = dict(num_layers=spec.num_layers, bias=spec.bias, batch_first=True, bidirectional=spec.bidirectional)
    if spec.proj_size:
        kwargs["proj_size"] = spec.proj_size
    cell = spec.cell_type
    if spec.learned_h0 or spec.reverse_only:
        return variant_module(cell, spec.input_size, spec.hidden_size, learned_h0=spec.learned_h0,
                              reverse_only=spec.reverse_only, **kwargs)
    if cell == GRU_RESET_BEFORE:
        return ResetBeforeGRU(spec.input_size, spec.hidden_size, **kwargs)
    if cell == RNN_RELU:
        return RNN(spec.input_size, spec.hidden_size, nonlinearity="relu", **kwargs)
    if cell == CELL_TYPES[spec.cell]:
        return {"LSTM": LSTM, "GRU": GRU, "RNN": RNN}[spec.cell](spec.input_size, spec.hidden_size, **kwargs)
    return variant_module(cell, spec.input_size, spec.hidden_size, **kwargs)


class _AnyNames(nn.Module):
    """A module whose submodules may carry any name of the checkpoint, even one of nn.Module's own attributes
    (``forward.training.weight_ih_l0`` makes a submodule named ``training``). torch refuses to assign a plain value
    to an attribute that names a submodule, and ``eval()`` assigns ``training`` on every module; here a plain
    value stays a plain attribute, and submodules are reached through ``_modules`` (`get_submodule`)."""

    def __setattr__(self, name: str, value: Any) -> None:
        if name in self.__dict__.get("_modules", {}) and not isinstance(value, nn.Module):
            object.__setattr__(self, name, value)
        else:
            super().__setattr__(name, value)


class LoadedModel(_AnyNames):
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
        initial_states: list[initial_state.InitialState] = (),
    ) -> None:
        super().__init__()
        # the checkpoint's module names may be anything, even "vocab" or "training" (see _AnyNames)
        self.metadata = metadata
        self.vocab = vocab
        self.modules_info: list[dict[str, Any]] = []  # filled once the modules are built
        self.recurrent_names = [spec.name for spec in roles.recurrent]
        self.recurrent_output_size = roles.recurrent[-1].output_size  # what the decoder reads, per step
        self._is_cell = {spec.name: spec.is_cell for spec in specs}
        self.embedding_name = roles.embedding.removesuffix(".weight") if roles.embedding else None
        self.decoder_name = roles.decoder
        self.input_projection_name = roles.input_projection
        self.unused = list(roles.unused)  # tensors of the file the model does not use (and not declared outside it)
        self.outside = list(roles.outside)  # tensors the metadata roles declare outside the chain
        self.refusal = roles.refusal  # why the model cannot run (None: it can)
        self.load_warnings: list[str] = []  # what load() did not use or had to assume
        if roles.embedding:
            self._place(self.embedding_name, nn.Embedding(*shapes[roles.embedding]))
        if roles.input_projection:
            out_features, in_features = shapes[f"{roles.input_projection}.weight"]
            self._place(roles.input_projection, nn.Linear(in_features, out_features, bias=roles.input_projection_bias))
        for spec in specs:
            self._place(spec.name, _build_recurrent(spec))
        self.initial_states: dict[str, dict[str, str]] = {}  # module -> h / c -> key of its learned initial state
        for state in initial_states:
            self._place_buffer(state.key, torch.empty(shapes[state.key]))
            self.initial_states.setdefault(state.module, {})[state.kind] = state.key
        self.modules_info.extend(spec.info() | ({"initial_state": self.initial_states[spec.name]}
                                                if spec.name in self.initial_states else {}) for spec in specs)
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
                child = parent._modules[part] = _AnyNames()
            elif type(child) is not _AnyNames:
                raise GatescopeError(f"cannot build the model: {path} lies inside the {type(child).__name__} {part}")
            parent = child
        if leaf in parent._modules:
            raise GatescopeError(f"cannot build the model: two modules are named {path}")
        parent._modules[leaf] = module  # not add_module: names like "embedding" are also attributes here

    def _place_buffer(self, key: str, value: torch.Tensor) -> None:
        """Register a buffer under the checkpoint's own key (``rnn.h0``), creating empty parents on the way."""
        *parents, leaf = key.split(".")
        parent = self
        for part in parents:
            if parent._modules.get(part) is None:
                parent._modules[part] = _AnyNames()
            parent = parent._modules[part]
        parent._buffers[leaf] = value

    def initial_hx(self, name: str, batch: int):
        """The learned initial state of recurrent module ``name`` as its hx for ``batch`` sequences, or None."""
        keys = self.initial_states.get(name)
        if not keys:
            return None
        buffers = dict(self.named_buffers())
        h = initial_state.expanded(buffers[keys["h"]], batch) if "h" in keys else None
        if not isinstance(self.get_submodule(name), nn.LSTM):
            return h
        c = initial_state.expanded(buffers[keys["c"]], batch) if "c" in keys else None
        module = self.get_submodule(name)
        rows = module.num_layers * (2 if module.bidirectional else 1)
        like = h if h is not None else c
        h = like.new_zeros(rows, batch, module.proj_size or module.hidden_size) if h is None else h
        c = like.new_zeros(rows, batch, module.hidden_size) if c is None else c
        return h, c

    def get_submodule(self, target: str) -> nn.Module:
        """torch's get_submodule, walking registered modules only (names may shadow attributes)."""
        module: nn.Module = self
        for part in target.split(".") if target else []:
            if part not in module._modules:
                raise AttributeError(f"{type(module).__name__} has no submodule {part!r} (in {target!r})")
            module = module._modules[part]
        return module

    def check_outputs(self) -> None:
        """Raise GatescopeError unless the model's outputs (its logits) are the file's: a tensor the chain
        does not use may be a layer between the recurrent stack and the decoder (a LayerNorm, a Linear +
        ReLU head) that the loader cannot place, so the logits it would give are not the model's. The
        recurrent stack still runs (``decode=False``: trace, explain). The metadata role ``outside``
        (`gatescope convert --roles outside=NAME`) declares tensors the outputs do not go through."""
        self.check_runnable()
        if self.unused:
            names = ",".join(self.unused[:6]) + (f" and {len(self.unused) - 6} more" if len(self.unused) > 6 else "")
            raise GatescopeError(
                f"cannot compute this model's outputs: the chain does not use {names}, which may lie between "
                f"{self.recurrent_names[-1]} and the decoder (tracing the recurrent stack still works); if they are "
                f"outside the chain, declare them: gatescope convert MODEL -o OUT.safetensors --roles outside={names}"
            )

    def check_language_model(self) -> None:
        """Raise GatescopeError unless the model runs and scores the next token: a vocabulary, and
        a decoder from the last recurrent output to one logit per vocabulary entry, whose logits are the
        file's (`check_outputs`). The message ends with what the loader did not use (`load_warnings`), so
        that it says all in one line."""
        self.check_runnable()
        last, width = self.recurrent_names[-1], self.recurrent_output_size
        unused = "".join(f"; {message}" for message in self.load_warnings)  # a decoder that did not fit, say
        if self.vocab is None:
            raise GatescopeError(f"words cannot be scored: {NO_VOCABULARY}{unused}")
        decoder = self.decoder
        if decoder is None:
            raise GatescopeError(f"this model has no decoder (an output Linear [{len(self.vocab)}, {width}] after "
                                 f"{last}), so it does not score the next word{unused}")
        if decoder.out_features != len(self.vocab):  # (its in_features were checked against `width` by load)
            raise GatescopeError(
                f"decoder {self.decoder_name} has weight [{decoder.out_features}, {decoder.in_features}]; scoring the "
                f"next word needs [{len(self.vocab)}, {width}] (the vocabulary, by {last}'s output){unused}"
            )
        self.check_outputs()

    @property
    def embedding(self) -> nn.Embedding | None:
        return self.get_submodule(self.embedding_name) if self.embedding_name else None

    @property
    def decoder(self) -> nn.Linear | None:
        return self.get_submodule(self.decoder_name) if self.decoder_name else None

    @property
    def input_projection(self) -> nn.Linear | None:
        return self.get_submodule(self.input_projection_name) if self.input_projection_name else None

    @property
    def runnable(self) -> bool:
        """Whether the model runs as one chain (else `refusal` says why not)."""
        return self.refusal is None

    @property
    def input_size(self) -> int:
        """Width of the inputs the model takes at each step (after the embedding, if any): the input
        projection's in_features, else the first recurrent module's input_size."""
        projection = self.input_projection
        if projection is not None:
            return projection.in_features
        return self.get_submodule(self.recurrent_names[0]).input_size

    @property
    def num_ids(self) -> int | None:
        """How many token ids the model takes (0..num_ids-1), or None for float inputs."""
        if self.embedding is not None:
            return self.embedding.num_embeddings
        return len(self.vocab) if self.takes_ids else None

    def input_description(self) -> str:
        """What feeds the first recurrent module, with its shapes, for messages."""
        first = self.recurrent_names[0]
        parts = []
        if self.embedding is not None:
            e = self.embedding
            parts.append(f"embedding {self.embedding_name} [{e.num_embeddings}, {e.embedding_dim}]")
        if self.input_projection is not None:
            p = self.input_projection
            parts.append(f"input projection {self.input_projection_name} ({p.in_features} -> {p.out_features})")
        parts.append(f"{first} with input size {self.get_submodule(first).input_size}")
        return " -> ".join(parts)

    def check_runnable(self) -> None:
        """Raise GatescopeError (what was found, how to run it) unless the model runs as one chain."""
        if self.refusal is not None:
            raise GatescopeError(
                f"cannot run this model: {self.refusal}. It is described from its weights (gatescope inspect); "
                "to trace it, run your own module under gatescope.record() from Python, or name the chain in "
                'the metadata roles, e.g. {"embedding": ..., "recurrent": [...], "decoder": ...}'
            )

    def encode(self, text: str, add_eos: bool = False) -> list[int]:
        """Token ids of `text` in the checkpoint's vocabulary."""
        if self.vocab is None:
            raise GatescopeError(f"{NO_VOCABULARY}, or give token ids instead of text")
        return self.vocab.encode(text, add_eos=add_eos)

    @property
    def takes_ids(self) -> bool:
        """True when `forward` takes token ids: through the embedding, or one-hot when there is none
        and the vocabulary is as large as the input (a char-rnn as in Karpathy et al. 2015)."""
        return self.embedding is not None or (self.vocab is not None and len(self.vocab) == self.input_size)

    def check_input(self, ids: torch.Tensor) -> None:
        """Raise GatescopeError unless `ids` is what `forward` takes: ids [B, T] or floats [B, T, input]."""
        self.check_runnable()
        if self.takes_ids:
            size = self.embedding.num_embeddings if self.embedding is not None else len(self.vocab)
            if ids.dim() != 2 or ids.dtype.is_floating_point or ids.dtype == torch.bool:
                raise GatescopeError(f"this model takes token ids [batch, time]; got {ids.dtype} {list(ids.shape)}")
            if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= size):
                raise GatescopeError(f"token ids must lie in 0..{size - 1}; got {int(ids.min())}..{int(ids.max())}")
        elif ids.dim() != 3 or ids.shape[-1] != self.input_size:
            raise GatescopeError(
                f"this model has no embedding and takes float inputs [batch, time, {self.input_size}]; "
                f"got {list(ids.shape)} ({self.input_description()})"
            )
        if ids.shape[1] == 0:
            raise GatescopeError("empty input: sequences need at least one step")

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor | None = None, decode: bool = True,
                state: ChainState | None = None) -> torch.Tensor:
        """ids [B, T] (or floats [B, T, input_size] without an embedding), lengths [B] -> logits [B, T, V]
        (or the last recurrent output [B, T, D*H] without a decoder, or with ``decode=False``: a trace
        never reads the logits, and a word LM's decoder can cost as much as its recurrence). Padded
        positions are not run.

        state: a `ChainState` to start from and to leave the final state in (each sequence's, after its
        last step), so that a long sequence can be run in chunks of steps with the recurrent state carried
        exactly from one chunk to the next; None starts every module from zeros and keeps nothing.
        Decoding refuses a model with unused tensors (`check_outputs`)."""
        if decode:
            self.check_outputs()
        else:
            self.check_runnable()
        embedding = self.embedding
        if embedding is not None:
            x = embedding(ids)  # (B, T, E)
        elif self.takes_ids:
            x = nn.functional.one_hot(ids, self.input_size).to(self._dtype())  # (B, T, V)
        else:
            x = ids.to(self._dtype())  # (B, T, I)
        projection = self.input_projection
        if projection is not None:
            x = projection(x)  # (B, T, input_size of the first recurrent module)
        for name in self.recurrent_names:
            module = self.get_submodule(name)
            hx = None if state is None else state.hidden.get(name)
            if hx is None and not self._is_cell[name]:
                hx = self.initial_hx(name, x.shape[0])  # a learned initial state, or None (zeros)
            run = step_cell if self._is_cell[name] else run_layered
            x, hidden = run(module, x, lengths, hx)
            if state is not None:
                state.hidden[name] = hidden
        decoder = self.decoder
        return decoder(x) if decoder is not None and decode else x  # (B, T, V) or (B, T, D*H)

    def _dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype


# -- reading the file ------------------------------------------------------------------------
def load(
    path: str | os.PathLike,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
) -> LoadedModel:
    """Load a checkpoint as a runnable `LoadedModel` (in eval mode).

    Args:
        path: a safetensors file, or a file in another format gatescope reads (torch, fastai,
            TorchScript, Keras, ONNX, madmom: converted as it is read).
        device: where to put the parameters (default: the CPU).
        dtype: the parameters' dtype; by default float32 for half-precision weights on the CPU
            (which computes half precision slowly or not at all), else the stored dtype.

    Returns:
        The model: embedding -> input projection -> recurrent modules -> decoder, as the file's
        metadata or its tensors' names and shapes say. A file that is not one such chain loads for
        inspection, and refuses to run, saying why (``model.refusal``).

    Raises:
        GatescopeError: a file that is missing, corrupt, of an unknown format, or holds no recurrent module.
    """
    path = Path(path)
    device = _device(device)
    shapes, metadata = read_header(path)
    try:
        declared = declared_cells(metadata)
        specs = discover_recurrent(shapes, declared)
        check_declared(specs, declared)
    except GatescopeError as exc:
        raise GatescopeError(f"{path}: {exc}") from None
    if not specs:
        shown = ", ".join(f"{k} {list(v)}" for k, v in list(shapes.items())[:8])
        more = f" and {len(shapes) - 8} more" if len(shapes) > 8 else ""
        raise GatescopeError(f"no recurrent weights in {path} (found: {shown or 'no tensors'}{more})")
    try:
        roles = resolve_roles(shapes, specs, metadata.get("roles") or {})
        states = initial_state.find(shapes, roles.recurrent, roles.unused, metadata.get("roles") or {})
        vocab = Vocabulary.from_metadata(metadata)
    except GatescopeError as exc:
        raise GatescopeError(f"{path}: {exc}") from None
    if states:
        taken = {state.key for state in states}
        roles = dataclasses.replace(roles, unused=tuple(k for k in roles.unused if k not in taken))
    with torch.device("meta"), _SkipInit():  # no memory, no initialisation: every parameter comes from the file
        model = LoadedModel(specs, roles, shapes, metadata, vocab, states)
    _check_vocabulary(path, model, shapes)
    state = _read_tensors(path, model, specs)
    stored = _common_dtype(state.values())
    if dtype is None:
        half = stored in (torch.float16, torch.bfloat16)
        dtype = torch.float32 if half and device.type == "cpu" else stored
    model.load_state_dict({k: v.to(dtype) for k, v in state.items()}, strict=True, assign=True)
    model.load_warnings = _load_warnings(roles, shapes) + [
        f"{s.key} {list(shapes[s.key])} is taken as {s.module}'s initial {s.kind} (by its name); if it is not, name "
        'the states in the metadata roles, e.g. {"initial_state": {"rnn": {"h": "h0"}}}' for s in states if s.guessed]
    for message in model.load_warnings:
        warn(f"{path}: {message}")
    return model.to(device=device, dtype=dtype).eval()


def _check_vocabulary(path: Path, model: LoadedModel, shapes: Shapes) -> None:
    """Raise GatescopeError unless the vocabulary can be fed to a runnable model: through the embedding, one row
    a token, or one-hot where there is no embedding and the input is as wide as the vocabulary (a char-rnn)."""
    vocab, embedding = model.vocab, model.embedding
    if vocab is None or not model.runnable:
        return
    if embedding is not None:
        if len(vocab) != embedding.num_embeddings:
            raise GatescopeError(f"{path}: the vocabulary has {len(vocab)} tokens "
                                 f"but the embedding has {embedding.num_embeddings} rows")
        return
    if len(vocab) == model.input_size:
        return
    named = [k for k in model.unused if named_like_embedding(k) and len(shapes[k]) == 2]
    why = (f"{named[0]} {list(shapes[named[0]])} gives {shapes[named[0]][1]} values a step" if named else
           "its tokens go in one-hot only to an input as wide as the vocabulary")
    raise GatescopeError(f"{path}: the vocabulary has {len(vocab)} tokens, but no embedding feeds "
                         f"{model.input_description()}: {why}")


class _SkipInit(TorchFunctionMode):
    """Leaves torch.nn.init's initialisers undone (they return their tensor as it is). On the meta
    device they would still run torch's reference implementations, whose first use imports
    torch._dynamo: 1.7 s of every command's start."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if getattr(func, "__module__", None) == "torch.nn.init":
            return args[0] if args else kwargs["tensor"]
        return func(*args, **(kwargs or {}))


def _load_warnings(roles: Roles, shapes: Shapes) -> list[str]:
    """What the loader did not use or had to assume, one line each (also in `inspect`'s warnings).
    Nothing for a model that cannot run: running it says why, in one line."""
    messages = []
    if roles.refusal is not None:
        return messages
    if roles.unused:
        shown = ", ".join(f"{k} {list(shapes[k])}" for k in roles.unused[:6])
        more = f" and {len(roles.unused) - 6} more" if len(roles.unused) > 6 else ""
        noun = "tensor is" if len(roles.unused) == 1 else "tensors are"
        messages.append(f"{len(roles.unused)} {noun} not used by the runnable model: {shown}{more}; its recurrent "
                        "stack runs, its outputs (logits) are refused until the unused tensors are declared "
                        "outside the chain (gatescope convert --roles outside=NAME)")
    if roles.decoder_alike:
        messages.append(f"{roles.decoder} is taken as the decoder; {', '.join(roles.decoder_alike)} "
                        f"{'fits' if len(roles.decoder_alike) == 1 else 'fit'} as well: name the one the model "
                        "uses (gatescope convert --roles decoder=NAME)")
    if roles.guessed_projection:
        messages.append(
            f"{roles.input_projection} is taken as a Linear applied straight before {roles.recurrent[0].name} "
            "(nothing between them); if your model has an activation there, name the roles in the metadata"
        )
    return messages


def read_header(path: Path) -> tuple[Shapes, dict[str, Any]]:
    """Tensor shapes and the parsed gatescope metadata of a safetensors file, without reading data."""
    converted = _converted(path)
    if converted is None:
        from gatescope.checkpoints.formats import not_a_checkpoint

        if (error := not_a_checkpoint(path)) is not None:
            raise error
        return validate_checkpoint(path)  # the door: gatescope.validation.checkpoint checks it all
    return check_contents(path, converted.header(), json.dumps(converted.metadata))  # the same checks


def _converted(path: Path):
    """A file in another format converted to torch names by gatescope.checkpoints.formats, or None for safetensors."""
    from gatescope.checkpoints import formats

    return formats.read(path)


def _open(path: Path):
    """The one dispatch point by file type: a safetensors file read lazily with ``safe_open``, any other
    format (by suffix or magic bytes) converted to torch names by gatescope.checkpoints.formats, behind the same API."""
    from gatescope.checkpoints.formats import open_checkpoint

    return open_checkpoint(path)


def _read_tensors(path: Path, model: LoadedModel, specs: list[RecurrentSpec]) -> dict[str, torch.Tensor]:
    """The model's state dict read from the file (keys renamed where a bare state dict got a name)."""
    rename = {spec.prefix: f"{spec.name}." for spec in specs}
    state = {}
    try:
        with _open(path) as f:
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
    """The device a user named (every ``--device`` comes here), checked: one torch knows, that holds data
    (``meta`` keeps shapes only), and that this machine and this build of torch have."""
    try:
        device = torch.device(device or "cpu")
    except (RuntimeError, TypeError):
        raise GatescopeError(f"unknown device {device!r} (expected e.g. cpu, cuda, cuda:1)") from None
    if device.type == "meta":
        raise GatescopeError(f"device {device} holds no data, only shapes: run on a device that computes "
                             "(cpu, cuda, cuda:1)")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise GatescopeError(f"device {device} asked for, but CUDA is not available here")
    try:
        torch.empty(0, device=device)
    except (RuntimeError, AssertionError, ImportError):  # a backend this build lacks, a GPU the machine lacks
        raise GatescopeError(f"device {device} is not available here (not in this build of torch, or not on "
                             "this machine)") from None
    return device


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
