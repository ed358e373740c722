"""Keras ``.keras`` archives, ``.weights.h5`` files and Keras 2 ``.h5`` models, read with h5py (no
TensorFlow, no Keras).

A ``.keras`` file is a zip of ``config.json`` (the layers and their settings) and
``model.weights.h5``, where layer NAME keeps its variables as ``layers/NAME/vars/0, 1, ...`` (a
recurrent layer under ``layers/NAME/cell/vars``, a Bidirectional one under ``forward_layer`` and
``backward_layer``). Converted to torch's layout (torch/nn/modules/rnn.py) following Keras'
keras/src/layers/rnn/lstm.py and gru.py:

- LSTM: kernel (I, 4H) and recurrent_kernel (H, 4H) in gate order i, f, c, o (torch's i, f, g, o),
  transposed; one bias (H4,) -> ``bias_ih``, with ``bias_hh`` zero.
- GRU: gate order z, r, h (torch's r, z, n: blocks swapped), transposed. ``reset_after=True`` keeps
  two biases, bias (2, 3H) = [input, recurrent], torch's formulation; ``reset_after=False`` is the
  original GRU of Cho et al. 2014 (gatescope.recorder.rnn), with one input bias.
- SimpleRNN: kernel (I, H), recurrent_kernel (H, H), bias (H,): torch's nn.RNN.
- Bidirectional (merge_mode "concat"): forward_layer -> ``_l0``, backward_layer -> ``_l0_reverse``.
- Activations (gatescope.kinds.CellType, in the metadata key ``cells``): ``recurrent_activation`` is the
  gates', ``activation`` the candidate's and (LSTM) the cell output's: sigmoid, tanh, relu, linear, softsign,
  softplus, elu, Keras 3's leaky_relu, and hard_sigmoid with the slope of the Keras that wrote the file
  (``keras_version``, in a .keras archive's metadata.json and a .h5 file's attributes): clip(0.2 x + 0.5, 0, 1)
  in Keras 1 and 2 and tf.keras (keras 2.2.4 backend/tensorflow_backend.py), clip(x / 6 + 0.5, 0, 1) in
  Keras 3 (keras/src/backend/*/nn.py). A missing ``recurrent_activation`` is Keras' default of that version:
  hard_sigmoid before Keras 2.3.0, sigmoid since.
- Embedding: embeddings (V, E) -> ``weight``; Dense (or TimeDistributed Dense): kernel (I, O) ->
  ``weight`` (O, I), ``bias``.

Each Keras layer becomes one torch module named like the layer in the config; its variables are
found under the name Keras' saving gives it (the class in snake case, numbered in layer order:
``gru``, ``gru_1``). The roles give the layer order of the config. A ``.weights.h5`` file has no
config: cells and variants are read from the shapes, Keras' default activations are assumed, and
the order is left to discovery. A Keras 2 (or tf.keras) ``model.save("model.h5")`` file keeps its
config in the ``model_config`` attribute and layer NAME's variables under ``model_weights/NAME``, in
the order its ``weight_names`` attribute lists; it is read like a ``.keras`` file, its hard_sigmoid with
the slope of the Keras version it names.

The door (`_open_h5`, `_member`): before a byte of data is read, every link and dataset of the HDF5 file is
inspected without following it (h5py's ``getlink=True``, a dataset's creation property list): an external
link, a dataset with external storage or a virtual dataset (bytes in another file) is refused, as is a dataset
that declares more bytes than the file stores (`MAX_INFLATION` times what it stores, compressed). A ``.keras``
archive's members are checked by their declared sizes (at most `MAX_ARCHIVE_MEMBER_BYTES`, `MAX_INFLATION`
times their compressed size; config.json at most `MAX_JSON_BYTES`) and read with a bounded read; the JSON
goes through gatescope.validation's one JSON reader (depth and size limits).
"""
from __future__ import annotations

import io
import math
import re
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from gatescope.checkpoints.formats.converted import Converted, from_numpy, need
from gatescope.errors import GatescopeError, shown
from gatescope.files import check_regular
from gatescope.validation.limits import MAX_ARCHIVE_MEMBER_BYTES, MAX_INFLATION, MAX_JSON_BYTES
from gatescope.validation.safetensors import parse_json
from gatescope.kinds import CELL_TYPES, HARD_SIGMOID, HARD_SIGMOID_KERAS2, Activation, CellType
from gatescope.recorder.variants import METADATA_KEY as CELLS

RECURRENT = ("LSTM", "GRU", "SimpleRNN")
FAMILIES = {"LSTM": "LSTM", "GRU": "GRU", "SimpleRNN": "RNN"}  # Keras layer -> gatescope.kinds family
GATES = {"LSTM": 4, "GRU": 3, "SimpleRNN": 1}
NO_OPS = ("InputLayer", "Dropout", "SpatialDropout1D", "GaussianDropout", "GaussianNoise", "AlphaDropout")
READ = ("Embedding", "LSTM", "GRU", "SimpleRNN", "Bidirectional", "Dense", "TimeDistributed") + NO_OPS
ACTIVATIONS = {  # Keras' names -> the activation (hard_sigmoid: by version, see `_activation`)
    "sigmoid": Activation("sigmoid"), "tanh": Activation("tanh"), "relu": Activation("relu"),
    "linear": Activation("affine", 1.0, 0.0), "softsign": Activation("softsign"),
    "softplus": Activation("softplus"), "elu": Activation("elu", 1.0),
}
KERAS3_ACTIVATIONS = {"leaky_relu": Activation("leaky_relu", 0.2)}  # keras 3's negative_slope default


def read(path: Path) -> Converted:
    h5py = need("h5py", "Keras files")
    size = check_regular(path, "Keras file")
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
            if "config.json" not in names or "model.weights.h5" not in names:
                raise GatescopeError(f"{path} is a zip file but not a Keras 3 .keras archive (no config.json)")
            config = parse_json(_member(path, archive, "config.json", MAX_JSON_BYTES), f"{path}: config.json")
            raw = _member(path, archive, "model.weights.h5", MAX_ARCHIVE_MEMBER_BYTES)
            version = _version(_archive_metadata(path, archive, names).get("keras_version"))
        with _open_h5(h5py, io.BytesIO(raw), len(raw), f"{path}: model.weights.h5") as f:
            layers = _config_layers(path, config)
            weights = _Keras3Weights(path, _layers_group(path, f), layers)
            return _from_config(path, layers, weights, "Keras 3 (.keras)", version)
    with _open_h5(h5py, path, size, str(path)) as f:
        if "model_config" in f.attrs and "model_weights" in f:  # Keras 2 / tf.keras model.save("model.h5")
            layers = _config_layers(path, _legacy_config(path, f.attrs["model_config"]))
            version = _version(f.attrs.get("keras_version"))
            return _from_config(path, layers, _LegacyWeights(path, f["model_weights"]), "Keras 2 (.h5)", version)
        return _from_weights(path, _layers_group(path, f))


def _member(path: Path, archive: zipfile.ZipFile, name: str, limit: int) -> bytes:
    """The bytes of archive member ``name``, its declared sizes checked before it is inflated, read bounded."""
    info = archive.getinfo(name)
    if info.file_size > limit:
        raise GatescopeError(f"{path}: {name} declares {info.file_size} bytes; gatescope reads at most {limit}")
    if info.file_size > MAX_INFLATION * max(info.compress_size, 1):
        raise GatescopeError(f"{path}: {name} declares {info.file_size} bytes from {info.compress_size} compressed "
                             f"(over {MAX_INFLATION} times: a zip bomb?); gatescope does not inflate it")
    with archive.open(info) as f:
        raw = f.read(info.file_size + 1)
    if len(raw) != info.file_size:
        raise GatescopeError(f"{path}: {name} holds other than the {info.file_size} bytes it declares")
    return raw


def _archive_metadata(path: Path, archive: zipfile.ZipFile, names: list[str]) -> dict[str, Any]:
    if "metadata.json" not in names:
        return {}
    try:
        found = parse_json(_member(path, archive, "metadata.json", MAX_JSON_BYTES), f"{path}: metadata.json")
    except GatescopeError:
        return {}
    return found if isinstance(found, dict) else {}


def _version(raw: Any) -> tuple[int, ...] | None:
    """``"2.2.4"``, ``b"2.15.0-tf"`` -> (2, 2, 4), (2, 15, 0); None when absent or unreadable."""
    text = raw.decode(errors="replace") if isinstance(raw, bytes) else raw
    match = re.match(r"^(\d+)\.(\d+)(?:\.(\d+))?", text) if isinstance(text, str) else None
    return None if match is None else tuple(int(g) for g in match.groups() if g is not None)


def _open_h5(h5py, source, size: int, where: str):
    """The HDF5 file ``source`` (``size`` bytes) opened, once every link and dataset in it is checked."""
    try:
        f = h5py.File(source, "r")
    except OSError as exc:
        raise GatescopeError(f"{where} is not a readable HDF5 file ({str(exc).splitlines()[0]})") from None
    try:
        _check_h5(h5py, f, size, where, set())
    except BaseException:
        f.close()
        raise
    return f


def _check_h5(h5py, group, size: int, where: str, seen: set) -> None:
    """Refuse what would read bytes outside the file, or more than it holds, in ``group`` and below; nothing
    is followed out of the file (links are inspected with getlink=True, datasets by their property lists)."""
    for name in group:
        link = group.get(name, getlink=True)
        at = f"{group.name.rstrip('/')}/{name}"
        if isinstance(link, h5py.ExternalLink):
            raise GatescopeError(f"{where}: {at} is an external link to {shown(link.filename)}:{shown(link.path)}; "
                                 "gatescope reads only the file it is given")
        if not isinstance(link, h5py.HardLink):
            continue  # a soft link names a path in this file, checked where it lies
        obj = group.get(name)
        key = (obj.id.fileno, h5py.h5o.get_info(obj.id).addr)
        if key in seen:
            continue
        seen.add(key)
        if isinstance(obj, h5py.Group):
            _check_h5(h5py, obj, size, where, seen)
        elif isinstance(obj, h5py.Dataset):
            _check_dataset(obj, at, size, where)


def _check_dataset(dataset, at: str, size: int, where: str) -> None:
    if dataset.is_virtual:
        sources = ", ".join(sorted({f"{m.file_name}:{m.dset_name}" for m in dataset.virtual_sources()}))
        raise GatescopeError(f"{where}: dataset {at} is a virtual dataset mapping {shown(sources)}; "
                             "gatescope reads only datasets stored in the file")
    plist = dataset.id.get_create_plist()
    if plist.get_external_count():
        name, _, _ = plist.get_external(0)
        raise GatescopeError(f"{where}: dataset {at} is stored in the external file "
                             f"{shown(name.decode(errors='replace'))}; gatescope reads only datasets stored in the file")
    declared = math.prod(dataset.shape or ()) * dataset.dtype.itemsize
    stored = dataset.id.get_storage_size()
    if stored > size or declared > MAX_INFLATION * stored:
        raise GatescopeError(f"{where}: dataset {at} declares {declared} bytes {list(dataset.shape)} but the file "
                             f"stores {stored} of the {size} it has; gatescope does not read it")


def _layers_group(path: Path, f):
    if "layers" not in f:
        raise GatescopeError(
            f"{path} is not a Keras file gatescope reads (no 'layers' group, no model_config: a Keras 2 "
            "weights-only file; load the model in Keras and save it with model.save('model.keras'))"
        )
    return f["layers"]


def _vars(group) -> list[np.ndarray]:
    """A layer's variables in order (``vars/0``, ``vars/1``, ...)."""
    if "vars" not in group:
        return []
    return [np.asarray(group["vars"][k]) for k in sorted(group["vars"], key=int)]


def _legacy_config(path: Path, raw: Any) -> dict[str, Any]:
    if not isinstance(raw, (bytes, str)):
        raise GatescopeError(f"{path}: its model_config is not JSON text")
    config = parse_json(raw, f"{path}: its model_config")
    if isinstance(config, dict) and isinstance(config.get("config"), list):  # Keras 2.2's Sequential
        config = {**config, "config": {"layers": config["config"]}}
    return config


class _Keras3Weights:
    """Keras 3's layout: ``layers/STORED/vars/i``, a recurrent layer's under ``cell/``, a Bidirectional
    layer's under ``forward_layer/cell`` and ``backward_layer/cell`` (STORED: see `_stored_names`)."""

    def __init__(self, path: Path, layers_h5, layers: list[dict[str, Any]]) -> None:
        self.path, self.layers_h5, self.stored = path, layers_h5, _stored_names(layers)

    def variables(self, index: int, name: str, kind: str) -> list[np.ndarray]:
        """A layer's variables in Keras' ``layer.weights`` order (Bidirectional: forward's, then backward's)."""
        group = _layer_group(self.path, self.layers_h5, self.stored[index], name)
        if kind == "Bidirectional":
            return [v for side in ("forward_layer", "backward_layer") for v in self._side(group, side, name)]
        if kind == "TimeDistributed":
            return _vars(group["layer"]) if "layer" in group else []
        return _cell_vars(self.path, group, name) if kind in RECURRENT else _vars(group)

    def _side(self, group, side: str, name: str) -> list[np.ndarray]:
        if side not in group:
            raise GatescopeError(f"{self.path}: Bidirectional {name} has no {side} weights")
        return _cell_vars(self.path, group[side], name)


class _LegacyWeights:
    """Keras 2's (and tf.keras's) HDF5 layout: ``model_weights/NAME`` lists its datasets, in
    ``layer.weights`` order, in the attribute ``weight_names``."""

    def __init__(self, path: Path, model_weights) -> None:
        self.path, self.groups = path, model_weights

    def variables(self, index: int, name: str, kind: str) -> list[np.ndarray]:
        if name not in self.groups:
            raise GatescopeError(f"{self.path}: the weights hold no layer {name} (found: {', '.join(self.groups)})")
        group = self.groups[name]
        names = [n.decode() if isinstance(n, bytes) else str(n) for n in group.attrs.get("weight_names", [])]
        return [np.asarray(group[n]) for n in names]


# -- with the config: the model's layers in order ---------------------------------------------
def _from_config(path: Path, layers: list[dict[str, Any]], weights, source: str,
                 version: tuple[int, ...] | None) -> Converted:
    tensors: dict[str, np.ndarray] = {}
    roles: dict[str, Any] = {"recurrent": []}
    cells: dict[str, CellType] = {}
    notes: list[str] = []
    seen_dense = False
    for index, layer in enumerate(layers):
        kind, cfg = layer.get("class_name"), layer.get("config", {})
        name = cfg.get("name", f"layer{index}")
        if kind not in READ:
            raise GatescopeError(
                f"{path}: layer {name} is a Keras {kind}, which gatescope does not convert "
                f"(it reads {', '.join(READ[:5])}, and dropout layers); record the Keras model's own module instead"
            )
        if kind in NO_OPS:
            if kind != "InputLayer":
                notes.append(f"{name} ({kind}) does nothing at inference and is left out")
            continue
        if seen_dense:
            raise GatescopeError(f"{path}: layer {name} ({kind}) follows the Dense layer; gatescope runs "
                                 "embedding -> recurrent layers -> one Dense decoder")
        if kind == "TimeDistributed":  # a Dense applied at every step: what a Dense on a sequence does
            inner = cfg.get("layer", {})
            if inner.get("class_name") != "Dense":
                raise GatescopeError(f"{path}: TimeDistributed {name} wraps a {inner.get('class_name')}; "
                                     "gatescope reads a TimeDistributed Dense")
            kind, cfg = "Dense", {**inner.get("config", {}), "name": name}
            values = weights.variables(index, name, "TimeDistributed")
        else:
            values = weights.variables(index, name, kind)
        if kind == "Embedding":
            if cfg.get("mask_zero"):
                raise GatescopeError(f"{path}: Embedding {name} has mask_zero=True (Keras skips the steps of "
                                     "token 0, gatescope runs every step); save it with mask_zero=False")
            if roles["recurrent"] or "embedding" in roles:
                raise GatescopeError(f"{path}: Embedding {name} is not the first layer")
            (tensors[f"{name}.weight"],) = _expect(path, name, values, 1)
            roles["embedding"] = f"{name}.weight"
        elif kind == "Dense":
            tensors.update(_dense(path, name, cfg, values, notes))
            roles["decoder"] = name
            seen_dense = True
        else:
            if kind == "Bidirectional":
                tensors.update(_bidirectional(path, name, cfg, values, cells, version))
            else:
                tensors.update(_recurrent(path, name, kind, cfg, values, name, cells, version))
            sequences = (cfg.get("layer", {}).get("config", {}) if kind == "Bidirectional" else cfg)
            if not sequences.get("return_sequences", False):
                notes.append(f"{name} has return_sequences=False: Keras passes on its last step only, "
                             "gatescope runs the next layer on every step (the recorded steps are the same)")
            roles["recurrent"].append(name)
    if not roles["recurrent"]:
        raise GatescopeError(f"{path} has no LSTM, GRU or SimpleRNN layer")
    roles.setdefault("embedding", None)
    roles.setdefault("decoder", None)
    return Converted(from_numpy(tensors), {"roles": roles, **_cells_metadata(cells)}, source, notes)


def _cells_metadata(cells: dict[str, CellType]) -> dict[str, Any]:
    """The metadata key ``cells`` for the modules whose cell is not their family's default."""
    found = {name: {"cell": cell.name, **cell.info()} for name, cell in sorted(cells.items())
             if cell != CELL_TYPES[cell.name]}
    return {CELLS: found} if found else {}


def _config_layers(path: Path, config: dict[str, Any]) -> list[dict[str, Any]]:
    if not isinstance(config, dict) or config.get("class_name") not in ("Sequential", "Functional", "Model"):
        kind = config.get("class_name") if isinstance(config, dict) else type(config).__name__
        raise GatescopeError(f"{path}: a Keras {kind} model; gatescope reads Sequential and Functional models")
    layers = config.get("config", {}).get("layers")
    if not isinstance(layers, list):
        raise GatescopeError(f"{path}: config.json lists no layers")
    for layer in layers:
        inbound = layer.get("inbound_nodes") or []
        if len(inbound) > 1 or any(len(_inbound_layers(node)) > 1 for node in inbound):
            raise GatescopeError(f"{path}: layer {layer.get('config', {}).get('name')} has several inputs; "
                                 "gatescope reads a single chain of layers")
    return layers


def _inbound_layers(node: Any) -> list[Any]:
    """The layers feeding one inbound node of a Functional model's layer (Keras 3: node['args'])."""
    if isinstance(node, dict):
        return [a for a in node.get("args", []) if isinstance(a, dict)]
    return list(node) if isinstance(node, list) else []


def _stored_names(layers: list[dict[str, Any]]) -> list[str | None]:
    """The group each layer's variables are saved under: Keras 3's saving_lib names them by class, in
    layer order (``lstm``, ``lstm_1``, ...), whatever the layers' own names (InputLayer: none)."""
    seen: dict[str, int] = {}
    names: list[str | None] = []
    for layer in layers:
        if layer.get("class_name") == "InputLayer":
            names.append(None)
            continue
        base = re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", "_", str(layer.get("class_name"))).lower()
        count = seen.get(base, 0)
        seen[base] = count + 1
        names.append(base if count == 0 else f"{base}_{count}")
    return names


def _layer_group(path: Path, layers_h5, stored: str | None, name: str):
    for candidate in (stored, name):
        if candidate is not None and candidate in layers_h5:
            return layers_h5[candidate]
    raise GatescopeError(f"{path}: the weights hold no layer {name} (looked for {stored}; "
                         f"found: {', '.join(layers_h5)})")


def _cell_vars(path: Path, group, name: str) -> list[np.ndarray]:
    if "cell" not in group:
        raise GatescopeError(f"{path}: layer {name} has no cell weights")
    return _vars(group["cell"])


def _expect(path: Path, name: str, values: list[np.ndarray], *counts: int) -> list[np.ndarray]:
    if len(values) not in counts:
        expected = " or ".join(map(str, counts))
        raise GatescopeError(f"{path}: layer {name} has {len(values)} weights; expected {expected}")
    return values


def _cell(path: Path, name: str, kind: str, cfg: dict[str, Any], version: tuple[int, ...] | None) -> CellType:
    """What a Keras LSTM / GRU / SimpleRNN layer computes, from its config and the Keras version."""
    if cfg.get("go_backwards"):
        raise GatescopeError(f"{path}: layer {name} has go_backwards=True outside a Bidirectional wrapper, "
                             "which torch's modules have no equivalent for")
    family = FAMILIES[kind]
    activation = _activation(path, name, "activation", cfg.get("activation", "tanh"), version)
    fields: dict[str, Any] = {"activation": activation}
    if family != "RNN":
        if "recurrent_activation" in cfg:
            gate = cfg["recurrent_activation"]
        elif version is None:
            raise GatescopeError(f"{path}: layer {name} names no recurrent_activation and the file no Keras "
                                 "version, so its default (hard_sigmoid before Keras 2.3, sigmoid since) is unknown")
        else:
            gate = "hard_sigmoid" if version < (2, 3) else "sigmoid"
        fields["gate_activation"] = _activation(path, name, "recurrent_activation", gate, version)
    if family == "LSTM":
        fields["output_activation"] = activation  # Keras: h = o * activation(c)
    if family == "GRU":
        fields["reset_after"] = bool(cfg.get("reset_after", True))
    return CELL_TYPES[family].variant(**fields)


def _activation(path: Path, name: str, key: str, value: Any, version: tuple[int, ...] | None) -> Activation:
    """A Keras activation (a name, or Keras 3's serialized function) as a gatescope.kinds.Activation."""
    if isinstance(value, dict):  # {"module": "keras.activations", "class_name": "function", "config": "tanh"}
        value = value.get("config") if isinstance(value.get("config"), str) else value.get("class_name")
    if value == "hard_sigmoid":
        if version is None:
            raise GatescopeError(f"{path}: layer {name} has {key}='hard_sigmoid' and the file says no Keras "
                                 "version, whose slope (0.2 before Keras 3, 1/6 since) decides it")
        return HARD_SIGMOID_KERAS2 if version < (3,) else HARD_SIGMOID
    known = ACTIVATIONS | (KERAS3_ACTIVATIONS if version is None or version >= (3,) else {})
    if value not in known:
        raise GatescopeError(f"{path}: layer {name} has {key}={value!r}; gatescope computes "
                             f"{', '.join([*known, 'hard_sigmoid'])}")
    return known[value]


def _recurrent(path: Path, name: str, kind: str, cfg: dict[str, Any], values, module: str,
               cells: dict[str, CellType], version: tuple[int, ...] | None, suffix: str = "_l0"):
    """One Keras LSTM / GRU / SimpleRNN cell's variables as torch's parameters of ``module`` (layer 0, ``suffix``);
    its cell type goes into ``cells`` (both sides of a Bidirectional layer must agree)."""
    cell = _cell(path, name, kind, cfg, version)
    if cells.setdefault(module, cell) != cell:
        raise GatescopeError(f"{path}: the two sides of {module} compute different cells "
                             f"({cells[module].describe()}, {cell.describe()}); a torch module has one cell for both")
    values = _expect(path, name, values, 2, 3)
    kernel, recurrent = values[0], values[1]  # (I, G*H), (H, G*H)
    bias = values[2] if len(values) == 3 else None
    hidden = recurrent.shape[0]
    gates = GATES[kind]
    if kernel.ndim != 2 or recurrent.shape != (hidden, gates * hidden) or kernel.shape[1] != gates * hidden:
        raise GatescopeError(f"{path}: layer {name} has kernels {list(kernel.shape)} and {list(recurrent.shape)}; "
                             f"expected [input, {gates}*units] and [units, {gates}*units] for a {kind}")
    order = _gru_order(hidden) if kind == "GRU" else slice(None)
    out = {f"weight_ih{suffix}": kernel.T[order], f"weight_hh{suffix}": recurrent.T[order]}  # (G*H, I), (G*H, H)
    if bias is not None:
        if kind != "GRU" or bias.ndim == 1:
            out[f"bias_ih{suffix}"] = bias.reshape(-1)[order]
            out[f"bias_hh{suffix}"] = np.zeros_like(out[f"bias_ih{suffix}"])
        else:  # GRU reset_after=True: (2, 3H) = [input bias, recurrent bias]
            out[f"bias_ih{suffix}"], out[f"bias_hh{suffix}"] = bias[0][order], bias[1][order]
    return {f"{module}.{k}": v for k, v in out.items()}


def _gru_order(hidden: int) -> np.ndarray:
    """Rows in Keras' z, r, h order -> torch's r, z, n."""
    blocks = np.arange(3 * hidden).reshape(3, hidden)
    return np.concatenate([blocks[1], blocks[0], blocks[2]])


def _bidirectional(path: Path, name: str, cfg: dict[str, Any], values: list[np.ndarray], cells: dict[str, CellType],
                   version: tuple[int, ...] | None):
    """A Bidirectional layer's variables (forward's, then backward's) as one bidirectional module."""
    if cfg.get("merge_mode", "concat") != "concat":
        raise GatescopeError(f"{path}: Bidirectional {name} has merge_mode={cfg.get('merge_mode')!r}; "
                             "torch's bidirectional modules concatenate (merge_mode='concat')")
    inner = cfg.get("layer", {})
    kind, inner_cfg = inner.get("class_name"), dict(inner.get("config", {}))
    if kind not in RECURRENT:
        raise GatescopeError(f"{path}: Bidirectional {name} wraps a {kind}; gatescope reads LSTM, GRU and SimpleRNN")
    backward_cfg = dict((cfg.get("backward_layer") or {}).get("config", inner_cfg))
    for side in (inner_cfg, backward_cfg):
        side.pop("go_backwards", None)
    if not values or len(values) % 2:
        raise GatescopeError(f"{path}: Bidirectional {name} has {len(values)} weights; expected one set per side")
    half = len(values) // 2
    tensors = {}
    sides = (("forward_layer", "_l0", inner_cfg, values[:half]),
             ("backward_layer", "_l0_reverse", backward_cfg, values[half:]))
    for side, suffix, side_cfg, side_values in sides:
        tensors.update(_recurrent(path, f"{name}/{side}", kind, side_cfg, side_values, name, cells, version, suffix))
    return tensors


def _dense(path: Path, name: str, cfg: dict[str, Any], values, notes: list[str]):
    activation = cfg.get("activation", "linear")
    if activation not in ("linear", None, "softmax", "log_softmax"):
        raise GatescopeError(f"{path}: Dense {name} has activation={activation!r}; gatescope's decoder is linear")
    if activation not in ("linear", None):
        notes.append(f"Dense {name}'s {activation} is not applied: gatescope's decoder gives the logits")
    values = _expect(path, name, values, 1, 2)
    if values[0].ndim != 2:
        raise GatescopeError(f"{path}: Dense {name} has a kernel of shape {list(values[0].shape)}; expected 2-D")
    out = {f"{name}.weight": values[0].T}  # (O, I)
    if len(values) == 2:
        out[f"{name}.bias"] = values[1]
    return out


# -- weights only: the layers read from the shapes -----------------------------------------------
def _from_weights(path: Path, layers_h5) -> Converted:
    tensors: dict[str, np.ndarray] = {}
    cells: dict[str, CellType] = {}
    notes = ["a .weights.h5 file has no config: Keras' default activations (tanh, sigmoid) are assumed, "
             "and the layer order is guessed from the shapes"]
    defaults = {"activation": "tanh", "recurrent_activation": "sigmoid"}  # the assumption the note says
    for name in layers_h5:
        group = layers_h5[name]
        if "forward_layer" in group:
            forward = _cell_vars(path, group["forward_layer"], name)
            kind = _kind_from_shapes(path, name, forward)
            cfg = {**defaults, "reset_after": _reset_after(forward)}
            layer = {"layer": {"class_name": kind, "config": cfg}, "backward_layer": {"config": cfg}}
            backward = _cell_vars(path, group["backward_layer"], name) if "backward_layer" in group else []
            tensors.update(_bidirectional(path, name, layer, forward + backward, cells, None))
        elif "cell" in group:
            values = _cell_vars(path, group, name)
            kind = _kind_from_shapes(path, name, values)
            cfg = {**defaults, "reset_after": _reset_after(values)}
            tensors.update(_recurrent(path, name, kind, cfg, values, name, cells, None))
        else:
            values = _vars(group["layer"] if "layer" in group else group)  # a TimeDistributed Dense: its inner layer
            if len(values) == 1 and "embed" in name.lower():
                tensors[f"{name}.weight"] = values[0]
            elif values:
                tensors.update(_dense(path, name, {}, values, notes))
    return Converted(from_numpy(tensors), _cells_metadata(cells), "Keras 3 (.weights.h5)", notes)


def _kind_from_shapes(path: Path, name: str, values: list[np.ndarray]) -> str:
    """LSTM, GRU or SimpleRNN from the recurrent kernel (H, G*H)."""
    by_gates = {gates: kind for kind, gates in GATES.items()}
    if len(values) < 2 or values[1].ndim != 2 or values[1].shape[0] == 0 or \
            values[1].shape[1] % values[1].shape[0] or values[1].shape[1] // values[1].shape[0] not in by_gates:
        raise GatescopeError(f"{path}: layer {name}'s cell weights are neither an LSTM's, a GRU's nor a SimpleRNN's")
    return by_gates[values[1].shape[1] // values[1].shape[0]]


def _reset_after(values: list[np.ndarray]) -> bool:
    """A GRU's variant from its bias: (2, 3H) with reset_after=True, (3H,) with reset_after=False."""
    return len(values) < 3 or values[2].ndim == 2
