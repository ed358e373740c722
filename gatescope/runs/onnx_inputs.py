"""The command line's side of an ONNX run: ``--input`` values as the graph's inputs, and `inspect`'s report.

``--input NAME=FILE`` (``.npy``, never unpickled, or a ``.safetensors`` file of one tensor; or
``NAME=NUMBER`` for a scalar such as a sample rate) or a bare FILE for the first graph input not named
otherwise; each array is cast to the type the graph declares (gatescope.inputs.corpus reads the files).
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from gatescope.checkpoints.formats.onnx_graph import Graph
from gatescope.errors import GatescopeError
from gatescope.runs.onnx_record import GraphRecording


def parse_pair(value: str, option: str) -> tuple[str, str]:
    """``A=B`` -> (A, B); anything else is a one-line error naming ``option``."""
    left, sep, right = value.partition("=")
    if not sep or not left or not right:
        raise GatescopeError(f"{option} {value}: expected NAME=VALUE")
    return left, right


def input_types(graph: Graph) -> dict[str, tuple[np.dtype | None, list[int | str]]]:
    """Each graph input a run feeds -> (numpy dtype or None when unknown, its shape with named dimensions)."""
    from onnx import helper

    out = {}
    for name, value in graph.inputs.items():
        tensor = value.type.tensor_type
        try:
            dtype = np.dtype(helper.tensor_dtype_to_np_dtype(tensor.elem_type)) if tensor.elem_type else None
        except (KeyError, TypeError, ValueError):
            dtype = None
        shape = [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in tensor.shape.dim]
        out[name] = (dtype, shape)
    return out


def read_feeds(graph: Graph, given: Sequence[str], carried: Sequence[str] = ()) -> dict[str, np.ndarray]:
    """The graph's inputs from ``--input`` values: ``NAME=FILE`` (or ``NAME=NUMBER`` for a scalar), or a bare
    FILE for the first graph input no other value names. FILE is .npy (never unpickled) or .safetensors
    (one tensor); each array is cast to the type the graph declares. An input in ``carried`` (the
    state a chunked run carries) that is not given starts as zeros of its declared shape. The inputs
    come in the order given (so the first is the one ``--chunk`` cuts), then the zeros."""
    types = input_types(graph)
    assigned: list[tuple[str | None, str]] = []  # (graph input or None for a bare file, text), in the given order
    for value in given:
        name, sep, rest = value.partition("=")
        assigned.append((name, rest) if sep and name in types else (None, value))
    names = [n for n, _ in assigned if n is not None]
    twice = next((n for n in names if names.count(n) > 1), None)
    if twice is not None:
        raise GatescopeError(f"--input {twice} is given twice")
    free = iter([n for n in types if n not in names])
    feeds: dict[str, np.ndarray] = {}
    for name, text in assigned:
        name = name or next(free, None)
        if name is None:
            raise GatescopeError(f"--input {text}: the graph's inputs are {', '.join(types)}, all given; "
                                 "name each with NAME=FILE")
        feeds[name] = _read_value(name, text, types[name][0])
    for name in types:
        if name in feeds:
            continue
        dtype, shape = types[name]
        if name in carried and all(isinstance(d, int) for d in shape):
            feeds[name] = np.zeros(shape, dtype or np.float32)
            continue
        described = f"{dtype or 'a tensor'} {shape}"
        raise GatescopeError(f"the graph also takes {name} ({described}); give it with --input {name}=FILE")
    return feeds


def _read_value(name: str, text: str, dtype: np.dtype | None) -> np.ndarray:
    from gatescope.inputs.corpus import _read_npy, _read_safetensors

    path = Path(text)
    if not path.exists() and _number(text) is not None:
        array = np.asarray(_number(text))
    elif path.suffix.lower() == ".npy":
        array = _read_npy(path)[0]
    elif path.suffix.lower() == ".safetensors":
        array = _read_safetensors(path)[0]
    else:
        raise GatescopeError(f"--input {name}={text}: give a .npy or .safetensors file (or a number)")
    if array.dtype.kind not in "biuf":
        raise GatescopeError(f"--input {name}={text}: holds {array.dtype} values, not numbers")
    if dtype is None:
        return array
    if dtype.kind in "iub" and array.dtype.kind == "f" and not np.array_equal(array, np.round(array)):
        raise GatescopeError(f"--input {name}={text}: the graph takes {dtype} values, the file holds fractions")
    return array.astype(dtype)


def _number(text: str) -> int | float | bool | None:
    lowered = text.strip().lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return None


def graph_report(graph: Graph, recording: GraphRecording | None = None) -> dict[str, Any]:
    """What `inspect` says of an ONNX graph: its inputs and each recurrent node (`RecurrentNode.info`), and
    with a recording, each node's largest difference from onnxruntime and how many steps it ran."""
    types = input_types(graph)
    report: dict[str, Any] = {
        "inputs": {n: {"type": str(t) if t is not None else None, "shape": s} for n, (t, s) in types.items()},
        "outputs": [o.name for o in graph.model.graph.output],
        "nodes": [entry.info() for entry in graph.nodes],
    }
    if recording is not None:
        ran = {(n["node"], n["module"], n["layer"]): n for n in recording.trace.meta["onnx"]["nodes"]}
        for info in report["nodes"]:
            done = ran.get((info["node"], info["name"], info["layer"]))
            info["max_difference"] = None if done is None else done["max_difference"]
            info["calls"] = None if done is None else done["calls"]
    return report
