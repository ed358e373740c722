"""TorchScript archives (``torch.jit.save``), weights only: a restricted reader of the archive.

A TorchScript archive is a zip (torch/csrc/jit/serialization/export_module.cpp): ``<name>/data.pkl``
pickles the module tree, ``<name>/data/<key>`` holds each tensor's storage, ``<name>/code/`` the
TorchScript source of every module. torch's own reader (``torch.jit.load``) compiles and can run that
code, and ``torch.load(weights_only=True)`` refuses the archive. This reader runs nothing: ``data.pkl``
is unpickled by an unpickler that admits a listed few globals (the tensor rebuild of torch's
weights_only loader, its storage types, OrderedDict, TorchScript's list builders and type tags), every
module object becomes a plain record (`ScriptRecord`: its class name and its attributes), and the
code is never read. The tensors the records hold directly, under their attribute paths
(``rnn.weight_ih_l0``), are the archive's state dict, read as torch state dicts are
(gatescope.checkpoints.formats.torch_state): the recurrent modules are found by their parameter names.
"""
from __future__ import annotations

import pickle
import zipfile
from pathlib import Path
from typing import Any

from gatescope.errors import GatescopeError

STORAGE_DTYPES = {  # torch's legacy storage classes, as pickles name them -> dtype name
    "FloatStorage": "float32", "DoubleStorage": "float64", "HalfStorage": "float16", "BFloat16Storage": "bfloat16",
    "LongStorage": "int64", "IntStorage": "int32", "ShortStorage": "int16", "CharStorage": "int8",
    "ByteStorage": "uint8", "BoolStorage": "bool",
}
MODULE_PREFIX = "__torch__"  # TorchScript's namespace for the classes of scripted modules


class ScriptRecord:
    """A scripted module or object of the archive as plain data: its class name and its attributes."""

    qualified_name = ""
    attributes: dict[str, Any]

    def __new__(cls, *args: Any) -> ScriptRecord:
        record = super().__new__(cls)
        record.attributes = {}
        return record

    def __setstate__(self, state: Any) -> None:
        self.attributes = dict(state) if isinstance(state, dict) else {"state": state}

    @property
    def class_name(self) -> str:
        """``LSTM`` for ``__torch__.torch.nn.modules.rnn.LSTM``."""
        return self.qualified_name.rsplit(".", 1)[-1]


def is_archive(path: Path) -> bool:
    """Whether ``path`` is a TorchScript archive (a zip with ``*/data.pkl`` and ``*/code/``)."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError):
        return False
    return any(n.endswith("/data.pkl") for n in names) and any("/code/" in n for n in names)


def read_records(path: Path) -> ScriptRecord:
    """The module tree of the archive at ``path``, unpickled by the restricted reader."""
    with zipfile.ZipFile(path) as archive:
        pickles = [n for n in archive.namelist() if n.endswith("/data.pkl") and n.count("/") == 1]
        if len(pickles) != 1:
            raise GatescopeError(f"{path} is not a TorchScript archive gatescope can read (no single data.pkl)")
        prefix = pickles[0].removesuffix("data.pkl")
        with archive.open(pickles[0]) as f:
            root = _Unpickler(f, archive, prefix, path).load()
    if not isinstance(root, ScriptRecord):
        raise GatescopeError(f"{path}: the archive's data.pkl holds a {type(root).__name__}, not a scripted module")
    return root


def state_dict(root: ScriptRecord) -> tuple[dict[str, Any], dict[str, str]]:
    """The tensors the records hold directly, by attribute path, and each module path's class name."""
    import torch

    tensors: dict[str, Any] = {}
    classes: dict[str, str] = {}

    def walk(record: ScriptRecord, prefix: str) -> None:
        classes[prefix.removesuffix(".")] = record.class_name
        for name, value in record.attributes.items():
            if isinstance(value, torch.Tensor):
                tensors[prefix + name] = value
            elif isinstance(value, ScriptRecord):
                walk(value, f"{prefix}{name}.")

    walk(root, "")
    return tensors, classes


class _Unpickler(pickle.Unpickler):
    """Admits the listed globals only; tensors' storages are read from the archive's ``data/`` records."""

    def __init__(self, file, archive: zipfile.ZipFile, prefix: str, path: Path) -> None:
        super().__init__(file)
        self.archive, self.prefix, self.path = archive, prefix, path
        self.classes: dict[str, type] = {}

    def find_class(self, module: str, name: str) -> Any:
        import torch

        if module == "torch._utils" and name == "_rebuild_tensor_v2":
            return torch._utils._rebuild_tensor_v2
        if module == "collections" and name == "OrderedDict":
            import collections

            return collections.OrderedDict
        if module == "torch" and name in STORAGE_DTYPES:
            return getattr(torch, STORAGE_DTYPES[name])  # the dtype stands for the storage type
        if module == "torch.jit._pickle":
            if name == "restore_type_tag":
                return _restore_type_tag
            if name.startswith("build_") and name.endswith("list"):
                return list
        if module == MODULE_PREFIX or module.startswith(MODULE_PREFIX + "."):
            qualified = f"{module}.{name}"
            if qualified not in self.classes:
                self.classes[qualified] = type(name, (ScriptRecord,), {"qualified_name": qualified})
            return self.classes[qualified]
        raise GatescopeError(f"{self.path}: the TorchScript archive needs {module}.{name}, which gatescope's "
                             "weights-only reader does not admit (it reads tensors and module records only)")

    def persistent_load(self, pid: Any) -> Any:
        import torch

        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage" and isinstance(pid[1], torch.dtype)):
            raise GatescopeError(f"{self.path}: the archive refers to {str(pid)[:80]}, not to a tensor storage")
        _, dtype, key, _, numel = pid
        name = f"{self.prefix}data/{key}"
        try:
            data = self.archive.read(name)
        except KeyError:
            raise GatescopeError(f"{self.path}: the archive has no record {name}") from None
        itemsize = torch.empty(0, dtype=dtype).element_size()
        if not isinstance(numel, int) or numel < 0 or numel * itemsize > len(data):
            raise GatescopeError(f"{self.path}: record {name} holds {len(data)} bytes, fewer than its "
                                 f"{numel} {dtype} values need")
        untyped = torch.UntypedStorage.from_buffer(data[: numel * itemsize], dtype=torch.uint8) if numel else (
            torch.UntypedStorage(0))
        return torch.storage.TypedStorage(wrap_storage=untyped, dtype=dtype, _internal=True)


def _restore_type_tag(value: Any, type_str: str) -> Any:
    """TorchScript tags a container with its static type when unpickled; the value is kept as it is."""
    return value
