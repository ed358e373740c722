"""Hostile inputs for the fuzz tests, built here: recipes of known-bad files and seeded mutations of valid ones.

A case is a file (or a special path: a FIFO, /dev/zero, a folder) and a reader entry point. `attempt` runs
one case under a deadline and says what happened: ``accepted`` (the reader returned, and what it returned
was then used without error), ``refused`` (a one-line GatescopeError), or a failure: ``traceback`` (any
other exception), ``hang`` (past the deadline), ``multiline`` (a message that is not one printable line),
``accepted-bad`` (a recipe that must be refused was not).

Mutations work at three levels of a safetensors file: bytes (flips, truncation, a forged header length),
header entries (a tensor's dtype, shape, offsets or name replaced by a hostile value) and the ``gatescope``
metadata document (any value in it replaced, deleted or retyped), each drawn from a `random.Random(seed)`.
"""
from __future__ import annotations

import json
import os
import random
import signal
import struct
import time
import traceback
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gatescope.errors import GatescopeError

DEADLINE_S = 5.0  # a case that runs longer is a hang
HUGE = "__HUGE_INT__"  # replaced by a 5,000-digit integer in the JSON text (json.dumps cannot write one)
DEEP = "__DEEP__"  # replaced by 100,000 nested lists
NAN = "__NAN__"  # replaced by NaN (JSON extension Python reads)

HOSTILE: list[Any] = [
    None, True, False, 0, -1, 1, 2, 3, 7, 1.5, -2.5, 1e308, 10**30, -(10**30), 2**63, HUGE, DEEP, NAN,
    "", "x", "F32", "I64", "F8_E4M3", "gatescope.trace", "gatescope.model", "LSTM", "GRUCell", "word", "char",
    "line\nbreak\x1b[31m", "x" * 5000, [], [1], [1, 2], [2, -2], [-1, -1], [1.5, 2.0], ["a", "b"], [None], [[]],
    [0, 10**6], [10**9], {}, {"a": 1}, {"name": 1},
]


@dataclass
class Tally:
    """Outcomes of a run of cases, with the failures kept for the report."""

    counts: Counter = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)
    slowest: float = 0.0

    def add(self, kind: str, case: str, outcome: str, detail: str, seconds: float) -> None:
        self.counts[(kind, outcome)] += 1
        self.slowest = max(self.slowest, seconds)
        if outcome not in ("accepted", "refused"):
            self.failures.append(f"{kind} {case}: {outcome}: {detail}")

    def summary(self) -> str:
        kinds = sorted({k for k, _ in self.counts})
        parts = [f"{k}: " + ", ".join(f"{o} {n}" for (kk, o), n in sorted(self.counts.items()) if kk == k)
                 for k in kinds]
        return "; ".join(parts) + f"; slowest case {self.slowest:.2f} s"


class Hang(BaseException):
    """Raised by the deadline's alarm (a BaseException, so no reader's except clause swallows it)."""


@contextmanager
def deadline(seconds: float = DEADLINE_S) -> Iterator[None]:
    def alarm(signum, frame):
        raise Hang()

    previous = signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def is_one_line(message: str) -> bool:
    return bool(message) and message.isprintable() and len(message) <= 2000


def attempt(run: Callable[[], Any], must_refuse: bool = False) -> tuple[str, str, float]:
    """Run one case -> (outcome, detail, seconds)."""
    start = time.perf_counter()
    try:
        with deadline():
            run()
    except GatescopeError as exc:
        outcome = "refused" if is_one_line(str(exc)) else "multiline"
        detail = str(exc)[:300]
    except Hang:
        outcome, detail = "hang", f"past {DEADLINE_S} s"
    except Exception as exc:  # the failure this test exists to find
        where = traceback.extract_tb(exc.__traceback__)[-1]
        outcome = "traceback"
        detail = f"{type(exc).__name__}: {str(exc)[:200]!r} at {Path(where.filename).name}:{where.lineno}"
    else:
        outcome, detail = ("accepted-bad", "a file that must be refused was accepted") if must_refuse else (
            "accepted", "")
    return outcome, detail, time.perf_counter() - start


# -- safetensors files as (header, data) -----------------------------------------------------------
def split(raw: bytes) -> tuple[dict, bytes]:
    (n,) = struct.unpack("<Q", raw[:8])
    return json.loads(raw[8 : 8 + n]), raw[8 + n :]


def join(header: Any, data: bytes) -> bytes:
    text = json.dumps(header, separators=(",", ":"))
    text = text.replace(f'"{HUGE}"', "1" * 5000).replace(f'"{DEEP}"', "[" * 100_000 + "]" * 100_000)
    text = text.replace(f'"{NAN}"', "NaN")
    raw = text.encode("utf-8", "surrogatepass")
    return struct.pack("<Q", len(raw)) + raw + data


def with_meta(raw: bytes, change: Callable[[dict], Any]) -> bytes:
    """The file with its gatescope metadata document replaced by ``change(document)`` (a value, JSON-dumped)."""
    header, data = split(raw)
    meta = json.loads(header["__metadata__"]["gatescope"])
    new = change(meta)
    text = json.dumps(new if new is not None else meta)
    text = text.replace(f'"{HUGE}"', "1" * 5000).replace(f'"{DEEP}"', "[" * 100_000 + "]" * 100_000)
    header["__metadata__"]["gatescope"] = text.replace(f'"{NAN}"', "NaN")
    return join(header, data)


def with_entry(raw: bytes, name: str, change: Callable[[dict], None]) -> bytes:
    header, data = split(raw)
    change(header[name])
    return join(header, data)


def renamed(raw: bytes, old: str, new: str) -> bytes:
    header, data = split(raw)
    header[new] = header.pop(old)
    return join(header, data)


def with_tensor_data(raw: bytes, name: str, values: np.ndarray, dtype: str) -> bytes:
    """The file with tensor ``name`` replaced by ``values`` (appended to the data section)."""
    header, data = split(raw)
    blob = np.ascontiguousarray(values).tobytes()
    header[name] = {"dtype": dtype, "shape": list(values.shape), "data_offsets": [len(data), len(data) + len(blob)]}
    return join(header, data + blob)


# -- random mutations --------------------------------------------------------------------------------
def _paths(value: Any, prefix: tuple = ()) -> list[tuple]:
    out = [prefix]
    if isinstance(value, dict):
        for k, v in value.items():
            out += _paths(v, prefix + (k,))
    elif isinstance(value, list):
        for i, v in enumerate(value[:6]):
            out += _paths(v, prefix + (i,))
    return out


def _replace(doc: Any, path: tuple, value: Any, delete: bool = False) -> Any:
    if not path:
        return value
    parent = doc
    for key in path[:-1]:
        parent = parent[key]
    if delete:
        del parent[path[-1]]
    else:
        parent[path[-1]] = value
    return doc


def hostile(rng: random.Random) -> Any:
    choice = rng.choice(HOSTILE)
    return json.loads(json.dumps(choice)) if choice not in (HUGE, DEEP, NAN) else choice


def mutate(raw: bytes, rng: random.Random, trace: bool) -> tuple[str, bytes, bool]:
    """One random mutation of a valid safetensors file -> (what was done, the bytes, must it be refused?).

    trace: the file is a trace (where a tensor renamed to a name of no quantity must be refused; in a
    checkpoint it is a tensor the loader does not use).
    """
    header, data = split(raw)
    names = [k for k in header if k != "__metadata__"]
    level = rng.random()
    if level < 0.25:  # bytes
        out = bytearray(raw)
        how = rng.randrange(5)
        if how == 0:
            for _ in range(rng.randint(1, 8)):
                out[rng.randrange(len(out))] ^= 1 << rng.randrange(8)
            return "flip bytes", bytes(out), False
        if how == 1:
            cut = rng.randrange(len(out))
            return f"truncate at {cut}", bytes(out[:cut]), cut < len(out)
        if how == 2:
            n = rng.choice([0, 1, 7, len(raw), 2**31, 2**63, 2**64 - 1, rng.randrange(2**64)])
            return f"header length {n}", struct.pack("<Q", n) + bytes(out[8:]), n != struct.unpack("<Q", raw[:8])[0]
        if how == 3:
            at = rng.randrange(8, len(out))
            return f"insert at {at}", bytes(out[:at]) + rng.randbytes(rng.randint(1, 16)) + bytes(out[at:]), False
        start = 8 + rng.randrange(struct.unpack("<Q", raw[:8])[0])
        out[start : start + 4] = rng.randbytes(4)
        return "overwrite header bytes", bytes(out), False
    if level < 0.6:  # a header entry
        name = rng.choice(names)
        entry = header[name]
        what = rng.choice(["dtype", "shape", "data_offsets", "shape item", "delete", "name", "extra", "whole"])
        value = hostile(rng)
        if what == "shape item" and entry["shape"]:
            i = rng.randrange(len(entry["shape"]))
            if value == entry["shape"][i]:
                return "no-op", raw, False
            entry["shape"][i] = value
        elif what == "delete":
            del entry[rng.choice(list(entry))]
        elif what == "name":
            bad = ["", "rnn.weight_ih_l" + "9" * 5000, "rnn.weight_hh_l1000000000"]  # refused in any file
            bad_in_trace = ["rnn.l0.fwd.q", "x\ny", "feature.", "weird", "offsets2", "token_ids.x", "rnn.l99.bwd.h"]
            new = rng.choice(bad + bad_in_trace + [name + "_reverse", "rnn.l0.fwd.m", "rnn.l1.fwd.h"])
            header[new] = header.pop(name)
            refuse = new != name and (new in bad or (trace and new in bad_in_trace))
            return f"rename {name} -> {new[:40]!r}", join(header, data), refuse
        elif what == "extra":
            entry[rng.choice(["extra", "dtype2"])] = value
            return f"extra key in {name}", join(header, data), False
        elif what == "whole":
            header[name] = value
        else:
            if value == entry.get(what):
                return "no-op", raw, False
            entry[what] = value
        return f"{name}.{what} = {str(value)[:40]!r}", join(header, data), True
    meta_raw = header.get("__metadata__", {}).get("gatescope")
    if meta_raw is None:
        return "no metadata", raw, False
    meta = json.loads(meta_raw)
    path = rng.choice(_paths(meta))
    delete = bool(path) and rng.random() < 0.25
    value = hostile(rng)
    meta = _replace(meta, path, value, delete)
    header["__metadata__"]["gatescope"] = (
        json.dumps(meta).replace(f'"{HUGE}"', "1" * 5000).replace(f'"{DEEP}"', "[" * 100_000 + "]" * 100_000)
        .replace(f'"{NAN}"', "NaN")
    )
    return f"meta {'/'.join(map(str, path))[:50]} {'deleted' if delete else '= ' + str(value)[:30]!r}", \
        join(header, data), False


# -- using what was accepted --------------------------------------------------------------------------
def use_trace_file(path: Path) -> None:
    """Read a trace and then touch all of it, as the browser and the analyses would."""
    from gatescope.traces.file import read_trace_file
    from gatescope.traces.trace import load_trace

    data = read_trace_file(path)
    n = int(data.offsets[-1])
    for name in data.names:
        rows = data.rows(name, 0, n)
        assert rows.shape == (n, data.arrays[name].shape[1])
    trace = load_trace(path)
    trace.tokens(0, trace.num_tokens)
    for s in range(trace.num_sequences):
        trace.sequence(s)
    for name in trace:
        trace[name][:].float().sum()
    for values in trace.features.values():
        assert values.numel() == n


def use_checkpoint(path: Path) -> None:
    """Load a checkpoint and run it on a short input."""
    from gatescope.checkpoints.loader import load

    model = load(path)
    if model.takes_ids:
        size = model.embedding.num_embeddings if model.embedding is not None else len(model.vocab)
        x = torch.tensor([[0, size - 1, 0]])
    else:
        x = torch.zeros(1, 3, model.input_size)
    with torch.no_grad():
        out = model(x)
    assert out.shape[:2] == (1, 3)


def fifo(folder: Path, name: str = "fifo") -> Path:
    path = folder / name
    if not path.exists():
        os.mkfifo(path)
    return path


# -- files that point elsewhere or declare more than they hold (HDF5, zip) --------------------------------
SECRET = np.arange(36, dtype=np.float32).reshape(3, 12)  # the bytes of a file the user did not name


def keras_weights(path: Path, change: Callable[[Any, Any], None] | None = None) -> Path:
    """A small valid Keras 3 .weights.h5 (one LSTM of 2 inputs and 3 units), ``change(h5py, vars group)``
    applied to its recurrent kernel's group before it is closed."""
    import h5py

    with h5py.File(path, "w") as f:
        group = f.create_group("layers/lstm/cell/vars")
        group["0"], group["1"], group["2"] = np.ones((2, 12), np.float32), np.ones((3, 12), np.float32), np.ones(12, np.float32)
        if change is not None:
            del group["1"]
            change(h5py, group)
    return path


def hdf5_recipes(folder: Path) -> dict[str, Path]:
    """.weights.h5 files whose recurrent kernel lies in another file, or declares more than the file holds."""
    import h5py

    secret = folder / "secret.h5"
    with h5py.File(secret, "w") as f:
        f["x"] = SECRET
    (folder / "secret.bin").write_bytes(SECRET.tobytes())

    def virtual(h5, group):
        layout = h5.VirtualLayout(shape=(3, 12), dtype="f4")
        layout[:] = h5.VirtualSource(str(secret), "x", shape=(3, 12))
        group.create_virtual_dataset("1", layout)

    changes = {
        "an external link (absolute)": lambda h5, g: g.__setitem__("1", h5.ExternalLink(str(secret), "/x")),
        "an external link (relative)": lambda h5, g: g.__setitem__("1", h5.ExternalLink("secret.h5", "/x")),
        "external storage": lambda h5, g: g.create_dataset("1", shape=(3, 12), dtype="f4",
                                                           external=[(str(folder / "secret.bin"), 0, 144)]),
        "a virtual dataset": virtual,
        "an 8 TB dataset": lambda h5, g: g.create_dataset("1", shape=(2**40,), dtype="f8", chunks=(2**16,)),
        "a 2 GB dataset": lambda h5, g: g.create_dataset("1", shape=(3, 2**27), dtype="f4", chunks=(1, 2**16)),
    }
    return {what: keras_weights(folder / f"hostile-{i}.weights.h5", change)
            for i, (what, change) in enumerate(changes.items())}


def keras_archive(path: Path, config: bytes, weights: bytes, stored: bool = False) -> Path:
    """A .keras zip of ``config`` (config.json) and ``weights`` (model.weights.h5)."""
    import zipfile

    method = zipfile.ZIP_STORED if stored else zipfile.ZIP_DEFLATED
    with zipfile.ZipFile(path, "w", method) as archive:
        archive.writestr("config.json", config)
        archive.writestr("model.weights.h5", weights)
    return path


def zip_recipes(folder: Path) -> dict[str, Path]:
    """.keras archives that inflate far beyond their size or nest their config 100,000 deep."""
    weights = keras_weights(folder / "plain.weights.h5").read_bytes()
    config = json.dumps({"class_name": "Sequential", "config": {"layers": []}}).encode()
    return {
        "a weights bomb": keras_archive(folder / "bomb.keras", config, weights + b"\0" * (20 << 20)),
        "a config.json bomb": keras_archive(folder / "config-bomb.keras", config + b" " * (20 << 20), weights),
        "a config.json nested 100,000 deep": keras_archive(folder / "deep.keras", b"[" * 100_000 + b"]" * 100_000,
                                                           weights, stored=True),
    }


# -- checkpoints that once crashed the command line -------------------------------------------------------
MATH_WORDS = ["<unk>", "<eos>", "$x^$", "a\x07b", "$\\frac{$", "the", "x\ny", "$$", "\\", "boy"]  # mathtext, controls


def hostile_checkpoints(folder: Path) -> dict[str, tuple[Path, str | None]]:
    """Checkpoints built to break the command line -> (path, None if it must load, else words of its refusal).

    Names of nn.Module's own attributes as module prefixes, an embedding or a vocabulary that cannot feed the
    recurrent module, a projection as wide as the hidden state, a vocabulary of mathtext and control characters,
    a decoder that reads the wrong width, and a checkpoint path that is a symlink loop."""
    from safetensors.torch import save_file
    from torch import nn

    from tests.checkpoint_fixtures import WORDS, LanguageModel, save, word_metadata

    torch.manual_seed(0)
    lm = LanguageModel()
    out: dict[str, tuple[Path, str | None]] = {}

    def add(name: str, modules: dict, refusal: str | None, metadata: dict | None = None) -> None:
        path = folder / f"hostile-{len(out)}.safetensors"
        out[name] = (save(path, modules, word_metadata() if metadata is None else metadata), refusal)

    add("module named forward.training", {"encoder": lm.encoder, "forward.training": lm.rnn, "decoder": lm.decoder},
        None)
    add("module named training", {"encoder": lm.encoder, "training": lm.rnn, "decoder": lm.decoder}, None)
    add("module named initial_states", {"encoder": lm.encoder, "initial_states": lm.rnn, "decoder": lm.decoder}, None)
    add("embedding narrower than the input", {"encoder": nn.Embedding(len(WORDS), 5), "rnn": lm.rnn,
                                              "decoder": lm.decoder}, "encoder.weight [10, 5] gives 5 values a step")
    add("vocabulary wider than the input, no embedding", {"rnn": lm.rnn, "decoder": lm.decoder},
        "the vocabulary has 10 tokens")
    add("decoder narrower than the hidden state", {"encoder": lm.encoder, "rnn": lm.rnn, "decoder": nn.Linear(5, 10)},
        None)
    add("vocabulary of mathtext and control characters", {"encoder": lm.encoder, "rnn": lm.rnn, "decoder": lm.decoder},
        None, word_metadata(vocab=MATH_WORDS, unk="<unk>", eos="<eos>"))
    projected = {f"rnn.{k}": v.detach().clone() for k, v in nn.LSTM(6, 8, batch_first=True).state_dict().items()}
    projected["rnn.weight_hr_l0"] = torch.zeros(8, 8)  # proj_size == hidden_size: torch's LSTM refuses it
    save_file(projected, str(folder / "hostile-projection.safetensors"))
    out["projection as wide as the hidden state"] = (folder / "hostile-projection.safetensors",
                                                     "a projection [proj_size, 8] must be narrower")
    loop = folder / "hostile-loop.safetensors"
    if not loop.is_symlink():
        (folder / "hostile-loop-b.safetensors").symlink_to(loop)
        loop.symlink_to(folder / "hostile-loop-b.safetensors")
    out["a symlink loop"] = (loop, "symbolic links")
    return out
