"""Hostile inputs through every reader gatescope has: only one-line GatescopeErrors (or click's usage errors)
come out, no case hangs, nothing known to be bad is accepted, and what is accepted can be used.

The corpus (tests/fuzz_corpus.py) is built here from valid files written by gatescope itself: recipes of
known-bad files of each kind (checkpoint, trace, stimuli, labels, special files such as FIFOs and
/dev/zero), then seeded random mutations of the valid files, read through the public entry points
(`gatescope.load`, `gatescope.load_trace`, `read_trace_file`, the stimuli and labels readers) in-process,
and a few dozen cases through the command line. The default run is a few thousand cases in ~10 s; the
longer campaign (`pytest -m slow tests/test_fuzz.py`) runs ten times the mutations and the command-line
cases in fresh processes.
"""
from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from tests.checkpoint_fixtures import WORDS, language_model, save, word_metadata
from tests.fuzz_corpus import (
    DEEP,
    HUGE,
    NAN,
    Tally,
    attempt,
    fifo,
    hostile_checkpoints,
    is_one_line,
    join,
    mutate,
    renamed,
    split,
    use_checkpoint,
    use_trace_file,
    hdf5_recipes,
    with_entry,
    with_meta,
    with_tensor_data,
    zip_recipes,
)
from torch import nn

import gatescope
from gatescope.inputs.stimuli.agreement import read_stimuli
from gatescope.analysis.labels import read_labels_file
from gatescope.cli import main
from gatescope.errors import GatescopeError
from gatescope.files import atomic_write, remove_stale_temporaries

MUTATIONS = 800  # random mutations per run: trace and checkpoint bases alike (the slow campaign: 20x)


# -- the valid files everything starts from ------------------------------------------------------------
@pytest.fixture(scope="module")
def bases(tmp_path_factory) -> dict[str, Path]:
    """Valid checkpoints and traces, written by gatescope's own writers."""
    folder = tmp_path_factory.mktemp("bases")
    out = {}
    _, out["lm"] = language_model(folder, word_metadata(), name="lm.safetensors")
    _, out["lm_proj_bi"] = language_model(folder, word_metadata(), name="lm2.safetensors", proj_size=3,
                                          num_layers=2, bidirectional=True)
    torch.manual_seed(1)
    out["bare_gru"] = save(folder / "gru.safetensors", {"": nn.GRU(3, 4, bidirectional=True)})
    out["cell"] = save(folder / "cell.safetensors", {"cell": nn.LSTMCell(3, 5)})
    out["lm_bf16"] = save(folder / "bf16.safetensors", {"": nn.LSTM(2, 3)}, dtype=torch.bfloat16)
    for name in ("lm", "lm_proj_bi"):
        model = gatescope.load(out[name])
        with torch.no_grad(), gatescope.record(model) as rec:
            model(torch.tensor([[2, 3, 5, 1], [2, 4, 6, 1]]), lengths=torch.tensor([4, 3]))
        trace = rec.trace
        trace.add_feature("number", [0, 0, 0, np.nan, 1, 1, 1])
        trace.save(folder / f"{name}.trace.safetensors")
        out[f"{name}_trace"] = folder / f"{name}.trace.safetensors"
    bf16 = folder / "bf16.trace.safetensors"
    model = gatescope.load(out["lm"])
    with torch.no_grad(), gatescope.record(model, dtype=torch.bfloat16) as rec:
        model(torch.tensor([[2, 3, 5]]))
    rec.trace.save(bf16)
    out["bf16_trace"] = bf16
    code = main_code(["trace", str(out["lm"]), "--text", "the boy greets", "--text", "the boys greet",
                      "-o", str(folder / "cli.trace.safetensors")])
    assert code == 0
    out["cli_trace"] = folder / "cli.trace.safetensors"
    return out


def main_code(argv: list[str]) -> int:
    try:
        main(argv)
    except SystemExit as exc:
        return exc.code or 0
    return 0


# -- recipes ---------------------------------------------------------------------------------------------
def trace_recipes(raw: bytes) -> dict[str, bytes]:
    """Known-bad trace files, made from the valid trace ``raw`` (rnn, an LSTM, with token ids and a feature)."""
    header, data = split(raw)
    n = header["offsets"]["shape"][0]
    tokens = header["token_ids"]["shape"][0]
    h = "rnn.l0.fwd.h"
    q = next(k for k in header if k.startswith("rnn.l0.fwd.") and k != h)

    def meta(key, value):
        return with_meta(raw, lambda m: m.__setitem__(key, value))

    def module(key, value):
        return with_meta(raw, lambda m: m["modules"][0].__setitem__(key, value))

    def entry(name, key, value):
        return with_entry(raw, name, lambda e: e.__setitem__(key, value))

    cases = {
        "format_version as a string": meta("format_version", "1"),
        "format_version as true": meta("format_version", True),
        "format_version newer": meta("format_version", 2),
        "format_version of 5,000 digits": meta("format_version", HUGE),
        "format_version missing": with_meta(raw, lambda m: m.pop("format_version")),
        "format of a model": meta("format", "gatescope.model"),
        "modules an int": meta("modules", 5),
        "modules a string": meta("modules", "rnn"),
        "modules a list of ints": meta("modules", [1, 2]),
        "module name an int": module("name", 1),
        "module hidden_size a string": module("hidden_size", "4"),
        "module hidden_size negative": module("hidden_size", -1),
        "module hidden_size a float": module("hidden_size", 8.0),
        "module num_layers 10**9": module("num_layers", 10**9),
        "module cell unknown": module("cell", "Transformer"),
        "module bidirectional a string": module("bidirectional", "yes"),
        "module listed twice": with_meta(raw, lambda m: m["modules"].append(dict(m["modules"][0]))),
        "module renamed: names without tensors": module("name", "other"),
        "module narrower than its tensors": module("hidden_size", 3),
        "vocab an int": meta("vocab", 7),
        "vocab of ints": meta("vocab", [1, 2, 3]),
        "tokenizer unknown": meta("tokenizer", "bpe"),
        "lexicon of ints": meta("lexicon", {"noun": 5}),
        "metadata not JSON": join({**header, "__metadata__": {"gatescope": "{not json"}}, data),
        "metadata a list": meta_doc(raw, [1, 2]),
        "metadata nested 100,000 deep": meta("vocab", DEEP),
        "metadata with NaN": meta("format_version", NAN),
        "metadata a number": join({**header, "__metadata__": {"gatescope": 5}}, data),
        "no gatescope metadata": join({k: v for k, v in header.items() if k != "__metadata__"}, data),
        "metadata with a duplicate key": join(
            {**header, "__metadata__": {"gatescope": header["__metadata__"]["gatescope"][:-1] + ', "format": 1}'}},
            data),
        "shape of floats": entry(q, "shape", [float(x) for x in header[q]["shape"]]),
        "shape of strings": entry(q, "shape", [str(x) for x in header[q]["shape"]]),
        "shape null": entry(q, "shape", None),
        "shape with two negative dims": entry(q, "shape", [-x for x in header[q]["shape"]]),
        "shape of 3 dims": entry(q, "shape", [*header[q]["shape"], 1]),
        "shape empty": entry(q, "shape", []),
        "shape 2**70": entry(q, "shape", [2**70, 1]),
        "a quantity of 0 units": with_entry(raw, q, lambda e: e.update(shape=[n - 1, 0],
                                                                        data_offsets=[0, 0])),
        "1,000,000 units for the tokens": entry(h, "shape", [tokens, 10**6]),
        "1,000,000 units and offsets claiming their bytes": with_entry(
            raw, h, lambda e: e.update(shape=[tokens, 10**6], data_offsets=[0, 4 * tokens * 10**6])),
        "offsets as F32 with NaN": with_tensor_data(raw, "offsets", np.array([0, np.nan, 7], np.float32), "F32"),
        "offsets decreasing": with_tensor_data(raw, "offsets", np.array([0, 5, 3, 7], np.int64), "I64"),
        "offsets not from 0": with_tensor_data(raw, "offsets", np.array([1, 7], np.int64), "I64"),
        "offsets of no sequence": with_tensor_data(raw, "offsets", np.array([0], np.int64), "I64"),
        "offsets past the rows": with_tensor_data(raw, "offsets", np.array([0, 99], np.int64), "I64"),
        "offsets of no tokens": with_tensor_data(raw, "offsets", np.array([0, 0], np.int64), "I64"),
        "offsets 2-D": with_tensor_data(raw, "offsets", np.array([[0, 7]], np.int64), "I64"),
        "offsets missing": join({k: v for k, v in header.items() if k != "offsets"}, data),
        "token_ids as F32": with_tensor_data(raw, "token_ids", np.zeros(tokens, np.float32), "F32"),
        "token_ids too short": with_tensor_data(raw, "token_ids", np.zeros(tokens - 1, np.int64), "I64"),
        "token_ids 2-D": with_tensor_data(raw, "token_ids", np.zeros((tokens, 1), np.int64), "I64"),
        "feature as BF16": with_tensor_data(raw, "feature.x", np.zeros(tokens, np.uint16), "BF16"),
        "feature as I64": with_tensor_data(raw, "feature.x", np.zeros(tokens, np.int64), "I64"),
        "feature 2-D": with_tensor_data(raw, "feature.x", np.zeros((tokens, 1), np.float32), "F32"),
        "feature too short": with_tensor_data(raw, "feature.x", np.zeros(tokens - 1, np.float32), "F32"),
        "feature without a name": with_tensor_data(raw, "feature.", np.zeros(tokens, np.float32), "F32"),
        "quantity as I32": with_tensor_data(raw, h, np.zeros(header[h]["shape"], np.int32), "I32"),
        "quantity as F8_E4M3": with_tensor_data(raw, h, np.zeros(header[h]["shape"], np.uint8), "F8_E4M3"),
        "quantity of unknown dtype": entry(h, "dtype", "Q9"),
        "quantity named oddly": renamed(raw, h, "weird"),
        "quantity named with a newline": renamed(raw, h, "rnn.l0.fwd.h\nboom"),
        "quantity of a GRU kind in an LSTM": renamed(raw, h, "rnn.l0.fwd.r"),
        "quantity of a layer the module lacks": renamed(raw, h, "rnn.l7.fwd.h"),
        "quantity backward in a forward module": renamed(raw, h, "rnn.l0.bwd.h"),
        "quantity m without a projection": renamed(raw, h, "rnn.l0.fwd.m"),
        "quantity of a 5,000-digit layer": renamed(raw, h, "rnn.l" + "9" * 5000 + ".fwd.h"),
        "data_offsets past the end": entry(h, "data_offsets", [0, len(data) + 8]),
        "data_offsets reversed": entry(h, "data_offsets", header[h]["data_offsets"][::-1]),
        "data_offsets negative": entry(h, "data_offsets", [-8, header[h]["data_offsets"][1]]),
        "data_offsets of floats": entry(h, "data_offsets", [float(x) for x in header[h]["data_offsets"]]),
        "data_offsets overlapping": entry(h, "data_offsets", header[q]["data_offsets"]),
        "entry a list": join({**header, h: [1]}, data),
        "header length past the file": (len(raw) * 2).to_bytes(8, "little") + raw[8:],
        "header length 2**63": (2**63).to_bytes(8, "little") + raw[8:],
        "header not JSON": raw[:8] + b"x" * (len(raw) - 8),
        "header a JSON list": join([1, 2], data),
        "header deeply nested": join({"a": DEEP}, data),
        "header of 3,000,000 empty objects": raw_header(b'{"a":[' + b"{}," * 3_000_000 + b"{}]}", data),
        "header of 10,000,000 zeros": raw_header(b'{"a":[' + b"0," * 10_000_000 + b"0]}", data),
        "header with a duplicate tensor": raw[:8] + raw[8:].replace(b'{"', b'{"offsets":{"dtype":"I64","shape":[0],'
                                                                        b'"data_offsets":[0,0]},"', 1),
        "truncated by one byte": raw[:-1],
        "truncated to the header": raw[: 8 + int.from_bytes(raw[:8], "little")],
        "empty": b"",
        "seven bytes": b"\x00" * 7,
        "eight zero bytes": b"\x00" * 8,
        "a bare {} header": join({}, b""),
    }
    return cases


def raw_header(text: bytes, data: bytes) -> bytes:
    return len(text).to_bytes(8, "little") + text + data


def meta_doc(raw: bytes, doc) -> bytes:
    header, data = split(raw)
    header["__metadata__"]["gatescope"] = json.dumps(doc)
    return join(header, data)


def checkpoint_recipes(raw: bytes) -> dict[str, bytes]:
    """Known-bad checkpoints, made from the valid word language model ``raw`` (encoder, rnn, decoder)."""
    header, data = split(raw)
    w = "rnn.weight_ih_l0"

    def meta(key, value):
        return with_meta(raw, lambda m: m.__setitem__(key, value))

    def retyped(dtype: str, convert) -> bytes:
        """Every tensor stored as ``dtype``."""
        out = raw
        for name in [k for k in header if k != "__metadata__"]:
            shape = header[name]["shape"]
            out = with_tensor_data(out, name, convert(np.zeros(shape, np.float32)), dtype)
        return out

    weight = np.zeros(header[w]["shape"], np.float32)
    f8 = lambda a: torch.from_numpy(a).to(torch.float8_e4m3fn).view(torch.uint8).numpy()  # noqa: E731
    cases = {
        "version as a string": meta("version", "1"),
        "version newer": meta("version", 2),
        "version a float": meta("version", 1.0),
        "version of 5,000 digits": meta("version", HUGE),
        "format of a trace": meta("format", "gatescope.trace"),
        "format an int": meta("format", 3),
        "vocab an int": meta("vocab", 5),
        "vocab a dict": meta("vocab", {"a": 1}),
        "vocab of ints": meta("vocab", list(range(10))),
        "vocab of the wrong length": meta("vocab", WORDS[:4]),
        "vocab with a duplicate": meta("vocab", WORDS[:-1] + ["the"]),
        "tokenizer unknown": meta("tokenizer", "bpe"),
        "tokenizer an int": meta("tokenizer", 1),
        "unk an int": meta("unk", 0),
        "eos not in the vocabulary": meta("eos", "</s>"),
        "roles an int": meta("roles", 5),
        "roles.embedding an int": meta("roles", {"embedding": 5}),
        "roles.recurrent of ints": meta("roles", {"recurrent": [1]}),
        "roles naming a missing tensor": meta("roles", {"embedding": "nothing.weight"}),
        "roles naming a missing decoder": meta("roles", {"decoder": "nowhere"}),
        "roles naming a missing module": meta("roles", {"recurrent": ["lstm9"]}),
        "lexicon a list": meta("lexicon", [1]),
        "metadata nested 100,000 deep": meta("vocab", DEEP),
        "metadata not JSON": join({**header, "__metadata__": {"gatescope": "{nope"}}, data),
        "metadata a list": meta_doc(raw, []),
        "a layer of 5,000 digits": with_tensor_data(raw, "rnn.weight_ih_l" + "9" * 5000, weight, "F32"),
        "a layer of 900 digits": with_tensor_data(raw, "rnn.weight_ih_l" + "9" * 900, weight, "F32"),
        "layer 10**9": with_tensor_data(raw, "rnn.weight_ih_l1000000000", weight, "F32"),
        "layer 999 of 1": with_tensor_data(raw, "rnn.weight_ih_l999", weight, "F32"),
        "float8 E4M3 weights": retyped("F8_E4M3", f8),
        "float8 E5M2 weights": with_tensor_data(raw, w, np.zeros(header[w]["shape"], np.uint8), "F8_E5M2"),
        "integer weights": with_tensor_data(raw, w, np.zeros(header[w]["shape"], np.int64), "I64"),
        "bool weights": with_tensor_data(raw, w, np.zeros(header[w]["shape"], np.bool_), "BOOL"),
        "complex weights": with_tensor_data(raw, w, np.zeros(header[w]["shape"], np.complex64), "C64"),
        "shape of floats": with_entry(raw, w, lambda e: e.__setitem__("shape", [float(x) for x in e["shape"]])),
        "shape with negative dims": with_entry(raw, w, lambda e: e.__setitem__("shape", [-x for x in e["shape"]])),
        "shape transposed": with_entry(raw, w, lambda e: e.__setitem__("shape", e["shape"][::-1])),
        "embedding of 0 x 2**40": join({**header, "encoder.weight": {"dtype": "F32", "shape": [0, 2**40],
                                                                     "data_offsets": [0, 0]}}, data),
        "decoder of 0 rows": join({**header, "decoder.weight": {"dtype": "F32", "shape": [0, 8],
                                                                "data_offsets": [0, 0]}}, data),
        "recurrent weight of 0 rows": join({**header, w: {"dtype": "F32", "shape": [0, 6],
                                                          "data_offsets": [0, 0]}}, data),
        "header length past the file": (len(raw) + 1).to_bytes(8, "little") + raw[8:],
        "truncated": raw[: len(raw) // 2],
        "no tensors": join({"__metadata__": header["__metadata__"]}, b""),
        "only a decoder": join({"__metadata__": header["__metadata__"], "decoder.weight": header["decoder.weight"]},
                               data),
    }
    return cases


def accepted_checkpoints(bases) -> dict[str, bytes]:
    """Checkpoints that must load and run: the bases (half and bfloat16 among them), and extras that are allowed."""
    raw = bases["lm"].read_bytes()
    header, data = split(raw)
    half = {k: v for k, v in header.items()}
    cases = {name: bases[name].read_bytes() for name in ("lm", "lm_proj_bi", "bare_gru", "cell", "lm_bf16")}
    out = raw
    for name in [k for k in half if k != "__metadata__"]:
        out = with_tensor_data(out, name, np.zeros(header[name]["shape"], np.float16), "F16")
    cases["half weights"] = out
    cases["unknown metadata keys"] = with_meta(raw, lambda m: m.__setitem__("future", {"x": [1]}))
    return cases


# -- running cases ----------------------------------------------------------------------------------------
def run_files(tally: Tally, kind: str, folder: Path, cases: dict[str, bytes], use: Callable[[Path], None],
              must_refuse: bool) -> None:
    for i, (name, content) in enumerate(cases.items()):
        path = folder / f"{kind}-{i}.safetensors"
        path.write_bytes(content)
        outcome, detail, seconds = attempt(lambda: use(path), must_refuse=must_refuse)
        tally.add(kind, name, outcome, detail, seconds)
        path.unlink()


def run_mutations(tally: Tally, kind: str, folder: Path, base: Path, count: int, seed: int,
                  use: Callable[[Path], None]) -> None:
    rng = random.Random(seed)
    raw = base.read_bytes()
    path = folder / f"{kind}.safetensors"
    for _ in range(count):
        what, content, must_refuse = mutate(raw, rng, trace=kind.startswith("trace"))
        path.write_bytes(content)
        outcome, detail, seconds = attempt(lambda: use(path), must_refuse=must_refuse and content != raw)
        tally.add(kind, what, outcome, detail, seconds)


def special_files(folder: Path, valid: Path) -> dict[str, Path]:
    """Paths that are not regular files, or whose names are hostile."""
    link = folder / "link-to-zero"
    if not link.exists():
        link.symlink_to("/dev/zero")
    odd = {}
    for name in ("new\nline.safetensors", "esc\x1b[31mred.safetensors", "bad-\udcff-utf8.safetensors"):
        path = folder / name
        path.write_bytes(b"\x00" * 16)
        odd[f"a file named {name!r}"] = path
    return {
        "a FIFO with no writer": fifo(folder),
        "/dev/zero": Path("/dev/zero"),
        "/dev/null": Path("/dev/null"),
        "a link to /dev/zero": link,
        "a folder": folder,
        "a missing file": folder / "missing.safetensors",
        **odd,
    }


def text_recipes(folder: Path) -> dict[str, tuple[Path, bool]]:
    """Stimuli and label files -> (path, must it be refused?)."""
    files: dict[str, tuple[bytes, bool]] = {
        "stimuli.tsv": (b"the boy\tgreets\tgreet\tsimple_S\n\nthe boys\tgreet\tgreets\tsimple_P\r\n", False),
        "long-line.tsv": (b"x" * (11 * 2**20), True),
        "binary.tsv": (b"\xff\xfe\x00\x01" * 100, True),
        "three-fields.tsv": (b"the boy\tgreets\tgreet\n", True),
        "same-verbs.tsv": (b"the boy\tgreets\tgreets\tsimple_S\n", True),
        "two-word-verb.tsv": (b"the boy\tdoes greet\tgreet\tsimple_S\n", True),
        "empty.tsv": (b"", True),
        "blank.tsv": (b"\n \n\t\n", True),
        "nul.tsv": (b"the\x00boy\tgreets\tgreet\t\x00\n", True),
        "labels.txt": (b"1\n0\n\nnan\n", False),
        "words.txt": (b"sg\npl\nsg\n", False),
        "complex.txt": (b"1+2j\n3-1j\n", True),
        "infinite.txt": (b"1\ninf\n", True),
        "long-labels.txt": (b"1" * (11 * 2**20), True),
        "latin1.txt": (b"\xe9t\xe9\n", True),
    }
    arrays = {
        "labels.npy": (np.array([0.0, 1.0, np.nan]), False),
        "bool.npy": (np.array([True, False]), False),
        "big-endian.npy": (np.array([1, 2], dtype=">i4"), False),
        "complex.npy": (np.array([1 + 2j, 3j]), True),
        "2d.npy": (np.zeros((2, 2)), True),
        "strings.npy": (np.array(["a", "b"]), True),
        "inf.npy": (np.array([1.0, np.inf]), True),
        "datetime.npy": (np.array(["2020-01-01"], dtype="datetime64[D]"), True),
    }
    out = {}
    for name, (content, bad) in files.items():
        (folder / name).write_bytes(content)
        out[name] = (folder / name, bad)
    for name, (array, bad) in arrays.items():
        np.save(folder / name, array)
        out[name] = (folder / name, bad)
    claim = folder / "claims-10e12.npy"
    np.save(claim, np.zeros(3))
    claim.write_bytes(claim.read_bytes().replace(b"(3,)", b"(10**12,)".replace(b"10**12", b"1000000000000")))
    out["claims-10e12.npy"] = (claim, True)
    pickled = folder / "pickled.npy"
    np.save(pickled, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    out["pickled.npy"] = (pickled, True)
    (folder / "garbage.npy").write_bytes(b"\x93NUMPY\x01\x00\xff\xff" + b"{" * 70000)
    out["garbage.npy"] = (folder / "garbage.npy", True)
    return out


def read_text_file(path: Path) -> None:
    (read_stimuli if path.suffix == ".tsv" else read_labels_file)(path)


# -- the tests ----------------------------------------------------------------------------------------------
def test_recipes_are_refused_and_valid_files_accepted(bases, tmp_path):
    tally = Tally()
    for base in ("lm_trace", "cli_trace"):
        run_files(tally, "trace", tmp_path, trace_recipes(bases[base].read_bytes()), use_trace_file, True)
    run_files(tally, "trace", tmp_path, {n: bases[n].read_bytes() for n in
                                         ("lm_trace", "lm_proj_bi_trace", "bf16_trace", "cli_trace")},
              use_trace_file, False)
    run_files(tally, "checkpoint", tmp_path, checkpoint_recipes(bases["lm"].read_bytes()), use_checkpoint, True)
    run_files(tally, "checkpoint", tmp_path, accepted_checkpoints(bases), use_checkpoint, False)
    for name, (path, refusal) in hostile_checkpoints(tmp_path).items():
        outcome, detail, seconds = attempt(lambda: use_checkpoint(path), must_refuse=refusal is not None)
        tally.add("hostile checkpoint", name, outcome, detail, seconds)
    for name, path in special_files(tmp_path, bases["lm"]).items():
        for kind, use in (("trace", use_trace_file), ("checkpoint", use_checkpoint), ("text", read_text_file)):
            outcome, detail, seconds = attempt(lambda: use(path), must_refuse=True)
            tally.add(f"special {kind}", name, outcome, detail, seconds)
    for name, (path, bad) in text_recipes(tmp_path).items():
        outcome, detail, seconds = attempt(lambda: read_text_file(path), must_refuse=bad)
        tally.add("text", name, outcome, detail, seconds)
    print(tally.summary())
    assert not tally.failures, "\n".join(tally.failures)
    assert tally.slowest < 3.0


def test_refusals_name_what_was_wrong(bases, tmp_path):
    """A few recipes, with the words the message must use: the file, the field, what was expected."""
    raw = bases["lm_trace"].read_bytes()
    recipes = trace_recipes(raw)
    expected = {
        "format_version as a string": "metadata 'format_version' must be an integer from 1 to 1; got '1'",
        "a quantity of 0 units": "expected [",
        "offsets as F32 with NaN": "has dtype F32; expected I64",
        "module renamed: names without tensors": "belongs to no module",
        "quantity named with a newline": "rnn.l0.fwd.h\\nboom",
        "1,000,000 units for the tokens": "needs 28000000 bytes, but its data_offsets give 224",
        "1,000,000 units and offsets claiming their bytes": "lies outside the file",
        "header length 2**63": "the limit is 100000000",
        "quantity of a GRU kind in an LSTM": "kinds of both an LSTM and a GRU",
    }
    path = tmp_path / "t.safetensors"
    for name, words in expected.items():
        path.write_bytes(recipes[name])
        with pytest.raises(GatescopeError) as info:
            gatescope.load_trace(path)
        assert str(path) in str(info.value) and words in str(info.value), (name, str(info.value))
    ckpt = checkpoint_recipes(bases["lm"].read_bytes())
    for name, words in {
        "float8 E4M3 weights": "F8_E4M3 (float8)",
        "integer weights": "holds torch.int64 values",
        "a layer of 5,000 digits": "a tensor name must have 1 to 1000 characters",
        "a layer of 900 digits": "gatescope loads up to 1000 layers",
        "layer 10**9": "names layer '1000000000'",
        "vocab an int": "metadata 'vocab' must be a list of strings or null; got 5",
        "version as a string": "metadata 'version' must be an integer from 1 to 1; got '1'",
    }.items():
        path.write_bytes(ckpt[name])
        with pytest.raises(GatescopeError) as info:
            gatescope.load(path)
        assert words in str(info.value), (name, str(info.value))


def campaign(bases, folder: Path, count: int, seed: int) -> Tally:
    tally = Tally()
    traces = ("lm_trace", "lm_proj_bi_trace", "bf16_trace", "cli_trace")
    checkpoints = ("lm", "lm_proj_bi", "bare_gru", "cell", "lm_bf16")
    for k, name in enumerate(traces):
        run_mutations(tally, "trace mutation", folder, bases[name], count // 2 // len(traces), seed + k,
                      use_trace_file)
    for k, name in enumerate(checkpoints):
        run_mutations(tally, "checkpoint mutation", folder, bases[name], count // 2 // len(checkpoints),
                      seed + 100 + k, use_checkpoint)
    return tally


def test_random_mutations_of_valid_files(bases, tmp_path):
    tally = campaign(bases, tmp_path, MUTATIONS, seed=0)
    print(tally.summary())
    assert not tally.failures, "\n".join(tally.failures[:40])
    assert tally.slowest < 3.0


@pytest.mark.slow
def test_random_mutations_long_campaign(bases, tmp_path):
    tally = campaign(bases, tmp_path, 20 * MUTATIONS, seed=1000)
    print(tally.summary())
    assert not tally.failures, "\n".join(tally.failures[:40])


# -- through the command line ----------------------------------------------------------------------------
def keras_cli_cases(folder: Path) -> list[tuple[str, list[str]]]:
    """(what, argv) converting and inspecting the hostile Keras files (HDF5 links, bombs); built with h5py."""
    out = str(folder / "out.safetensors")
    cases = []
    for what, path in {**hdf5_recipes(folder), **zip_recipes(folder)}.items():
        cases.append((f"convert {what}", ["convert", str(path), "-o", out]))
        cases.append((f"inspect {what}", ["inspect", str(path)]))
    return cases


def cli_cases(bases, folder: Path) -> list[tuple[str, list[str]]]:
    """(what, argv) for the command line but the Keras files; every one of them must be refused in one line."""
    special = special_files(folder, bases["lm"])
    texts = {name: path for name, (path, bad) in text_recipes(folder).items() if bad}
    lm, trace = str(bases["lm"]), str(bases["lm_trace"])
    out = str(folder / "out.safetensors")
    agreement = str(Path(__file__).parent.parent / "sample_models" / "agreement_lstm.safetensors")
    cases = []
    for what, path in special.items():
        cases.append((f"inspect {what}", ["inspect", str(path)]))
        cases.append((f"browse {what}", ["browse", str(path)]))
    for what in ("a FIFO with no writer", "/dev/zero", "a link to /dev/zero", "a file named 'new\\nline.safetensors'"):
        cases.append((f"trace --file {what}", ["trace", lm, "--file", str(special[what]), "-o", out]))
        cases.append((f"trace --input {what}", ["trace", str(bases["bare_gru"]), "--input", str(special[what]),
                                                "-o", out]))
        cases.append((f"analyze units --labels {what}", ["analyze", "units", trace, "--labels", str(special[what])]))
        cases.append((f"agreement --stimuli {what}", ["agreement", agreement, "--stimuli", str(special[what])]))
    for unit in ("rnn.l0.fwd.h:\u00b2", "rnn.l0.fwd.h:" + "9" * 5000, "rnn.l" + "9" * 5000 + ".fwd.h:1", "x\ny:1"):
        cases.append((f"agreement --ablate {unit[:30]!r}", ["agreement", agreement, "--ablate", unit]))
    rankings = {
        "deep.json": b"[" * 100_000 + b"]" * 100_000,
        "bigint.json": b'[{"unit": "rnn.l0.fwd.h:1", "score": 1' + b"1" * 5000 + b"}]",
        "unit-superscript.json": '[{"unit": "rnn.l0.fwd.h:\u00b2", "score": 1}]'.encode(),
        "not-json.json": b"\xff\xfe{",
    }
    for name, content in rankings.items():
        (folder / name).write_bytes(content)
        cases.append((f"browse --ranking {name}", ["browse", trace, "--ranking", str(folder / name)]))
    for what in ("a FIFO with no writer", "/dev/zero"):
        cases.append((f"browse --ranking {what}", ["browse", trace, "--ranking", str(special[what])]))
        cases.append((f"findings --from-json {what}", ["findings", "--from-json", str(special[what])]))
    cases.append(("findings --from-json deep.json", ["findings", "--from-json", str(folder / "deep.json")]))
    for what in ("a FIFO with no writer", "/dev/zero", "a link to /dev/zero", "a folder"):
        cases.append((f"convert --vocab {what}", ["convert", lm, "-o", out, "--vocab", str(special[what])]))
    cases.append(("convert --vocab deep.json", ["convert", lm, "-o", out, "--vocab", str(folder / "deep.json")]))
    for what, path in hostile_metadata(folder, bases).items():
        cases.append((f"convert {what}", ["convert", str(path), "-o", out]))
        cases.append((f"inspect {what}", ["inspect", str(path)]))
    cases.append(("trace -o /dev/null", ["trace", lm, "--text", "the boy", "-o", "/dev/null"]))
    cases.append(("trace -o a FIFO", ["trace", lm, "--text", "the boy", "-o", str(special["a FIFO with no writer"])]))
    for name in ("long-line.tsv", "binary.tsv", "three-fields.tsv", "empty.tsv"):
        cases.append((f"agreement --stimuli {name}", ["agreement", agreement, "--stimuli", str(texts[name])]))
    for name in ("complex.txt", "infinite.txt", "complex.npy", "claims-10e12.npy", "pickled.npy", "long-labels.txt"):
        cases.append((f"analyze units --labels {name}", ["analyze", "units", trace, "--labels", str(texts[name])]))
    bad_traces = trace_recipes(bases["lm_trace"].read_bytes())
    for i, name in enumerate(("a quantity of 0 units", "module renamed: names without tensors", "shape of floats",
                              "offsets as F32 with NaN", "quantity named with a newline",
                              "format_version as a string")):
        path = folder / f"bad-trace-{i}.safetensors"
        path.write_bytes(bad_traces[name])
        cases.append((f"browse {name}", ["browse", str(path)]))
        cases.append((f"analyze units {name}", ["analyze", "units", str(path), "--feature", "number"]))
    hostile = hostile_checkpoints(folder)
    for what, (path, refusal) in hostile.items():
        if refusal is not None:
            cases.append((f"inspect {what}", ["inspect", str(path)]))
            cases.append((f"trace {what}", ["trace", str(path), "--text", "the boy", "-o", out]))
            cases.append((f"agreement {what}", ["agreement", str(path)]))
    narrow = str(hostile["decoder narrower than the hidden state"][0])
    cases.append(("agreement decoder narrower than the hidden state", ["agreement", narrow]))
    cases.append(("analyze ablate decoder narrower than the hidden state",
                  ["analyze", "ablate", narrow, "--units", "rnn.l0.fwd.h:1"]))
    for command in (["inspect", lm], ["trace", lm, "-o", out]):
        cases.append((f"{command[0]} --ids with a superscript digit", [*command, "--ids", "1 \u00b2"]))
        cases.append((f"{command[0]} --device meta", [*command, "--text", "the boy", "--device", "meta"]))
    for units in ("-1", "\u00b2", "99"):
        cases.append((f"analyze match --units {units}", ["analyze", "match", trace, "--name", "rnn.l0.fwd.h", "--start",
                                                        "0", "--stop", "2", "--units", units]))
    cases.append(("analyze saturation --kinds c", ["analyze", "saturation", trace, "--kinds", "c"]))
    bad_ckpts = checkpoint_recipes(bases["lm"].read_bytes())
    for i, name in enumerate(("float8 E4M3 weights", "layer 10**9", "a layer of 5,000 digits", "vocab an int",
                              "version as a string")):
        path = folder / f"bad-ckpt-{i}.safetensors"
        path.write_bytes(bad_ckpts[name])
        cases.append((f"inspect {name}", ["inspect", str(path)]))
        cases.append((f"trace {name}", ["trace", str(path), "--text", "the boy", "-o", out]))
    return cases


def hostile_metadata(folder: Path, bases) -> dict[str, Path]:
    """Checkpoints whose gatescope metadata is not a JSON object, or not one gatescope can parse."""
    raw = bases["lm"].read_bytes()
    header, data = split(raw)
    out = {}
    for i, text in enumerate(["[]", "null", '"hello"', "1e400", "[" * 100_000 + "]" * 100_000, "1" * 5000]):
        path = folder / f"meta-{i}.safetensors"
        path.write_bytes(join({**header, "__metadata__": {"gatescope": text}}, data))
        out[f"metadata {text[:12]}"] = path
    return out


def symlinked_shards(folder: Path, trace: Path) -> dict[str, Path]:
    """Sharded trace folders whose shard or index is a link to a file outside the folder."""
    from gatescope.traces.file import shard_name, write_index

    cases = {}
    for what in ("shard", "index"):
        elsewhere, here = folder / f"elsewhere-{what}", folder / f"linked-{what}"
        for d in (elsewhere, here):
            d.mkdir()
            (d / shard_name(0, 1)).write_bytes(trace.read_bytes())
            n = gatescope.load_trace(trace).num_tokens
            write_index(d, [{"file": shard_name(0, 1), "sequences": 2, "tokens": n}], {})
        link = here / (shard_name(0, 1) if what == "shard" else "index.json")
        link.unlink()
        link.symlink_to(elsewhere / link.name)
        cases[f"a {what} linked out of the folder"] = here
    return cases


def test_keras_files_pointing_elsewhere_and_bombs_are_refused(tmp_path):
    """HDF5 links, external storage and virtual datasets, HDF5 and zip bombs, deep JSON in a .keras archive."""
    pytest.importorskip("h5py", reason="the hostile Keras files are written with h5py (the formats extra)")
    tally = Tally()
    for name, path in {**hdf5_recipes(tmp_path), **zip_recipes(tmp_path)}.items():
        outcome, detail, seconds = attempt(lambda: use_checkpoint(path), must_refuse=True)
        tally.add("keras", name, outcome, detail, seconds)
    print(tally.summary())
    assert not tally.failures, "\n".join(tally.failures)
    assert tally.slowest < 3.0  # as the other recipes: a bomb is refused before it is inflated


def test_linked_shards_and_sparse_graphs_are_refused(bases, tmp_path):
    """Shards of a trace folder that link elsewhere, and a 2 GB ONNX file of no blocks."""
    tally = Tally()
    for name, path in symlinked_shards(tmp_path, bases["lm_trace"]).items():
        outcome, detail, seconds = attempt(lambda: use_trace_file(path), must_refuse=True)
        tally.add("shards", name, outcome, detail, seconds)
    sparse = tmp_path / "sparse.onnx"
    with open(sparse, "wb") as f:
        f.truncate(2**31)  # a 2 GB file of no blocks
    outcome, detail, seconds = attempt(lambda: use_checkpoint(sparse), must_refuse=True)
    tally.add("onnx", "a sparse 2 GB file", outcome, detail, seconds)
    print(tally.summary())
    assert not tally.failures, "\n".join(tally.failures)
    assert tally.slowest < 3.0  # as the other recipes: a bomb is refused before it is inflated


def check_cli(tally: Tally, what: str, code: int, err: str, seconds: float, escaped: str | None) -> None:
    lines = err.splitlines()
    if escaped is not None:
        tally.add("cli", what, "traceback", escaped, seconds)
    elif code == 2 and len(lines) == 1 and lines[0].startswith("gatescope: error: ") and "--help)" in lines[0]:
        tally.add("cli", what, "refused", "", seconds)  # a usage error (a bad argument): one line, status 2
    elif code != 1 or len(lines) != 1 or not lines[0].startswith("gatescope: error: ") or \
            not is_one_line(lines[0].removeprefix("gatescope: error: ")):
        tally.add("cli", what, "multiline" if code == 1 else "accepted-bad", f"exit {code}: {err[:300]!r}", seconds)
    else:
        tally.add("cli", what, "refused", "", seconds)


def refused_in_one_line(cases: list[tuple[str, list[str]]], capsys) -> Tally:
    """Run each (what, argv) in this process; tally how the command line ended."""
    tally = Tally()
    for what, argv in cases:
        escaped, code = None, 0

        def run():
            nonlocal code
            code = main_code(argv)

        outcome, detail, seconds = attempt(run)
        if outcome not in ("accepted", "refused"):
            escaped = detail
        check_cli(tally, what, code, capsys.readouterr().err, seconds, escaped)
    print(tally.summary())
    return tally


def test_command_line_refuses_in_one_line(bases, tmp_path, capsys):
    tally = refused_in_one_line(cli_cases(bases, tmp_path), capsys)
    assert not (tmp_path / "out.safetensors").exists()
    assert not tally.failures, "\n".join(tally.failures)
    assert sum(tally.counts.values()) >= 40


def test_command_line_refuses_hostile_keras_files_in_one_line(tmp_path, capsys):
    pytest.importorskip("h5py", reason="the hostile Keras files are written with h5py (the formats extra)")
    tally = refused_in_one_line(keras_cli_cases(tmp_path), capsys)
    assert not (tmp_path / "out.safetensors").exists()
    assert not tally.failures, "\n".join(tally.failures)
    assert sum(tally.counts.values()) == 2 * len({**hdf5_recipes(tmp_path), **zip_recipes(tmp_path)})


@pytest.mark.slow
def test_command_line_in_fresh_processes(bases, tmp_path):
    """The same cases as real processes: what a user sees on stderr, with the real exit status."""
    pytest.importorskip("h5py", reason="the hostile Keras files are written with h5py (the formats extra)")
    tally = Tally()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for what, argv in cli_cases(bases, tmp_path) + keras_cli_cases(tmp_path):
        try:
            done = subprocess.run([sys.executable, "-c", "from gatescope.cli import main; main()", *argv],
                                  capture_output=True, timeout=60, env=env, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            tally.add("cli process", what, "hang", "past 60 s", 60)
            continue
        err = done.stderr.decode("utf-8", "replace")
        check_cli(tally, what, done.returncode, err, 0, "Traceback in stderr" if "Traceback" in err else None)
    print(tally.summary())
    assert not tally.failures, "\n".join(tally.failures)


# -- writes ---------------------------------------------------------------------------------------------
def test_stale_temporary_files_are_removed_on_the_next_write(tmp_path):
    target = tmp_path / "run.safetensors"
    stale = tmp_path / ".run.safetensors.abc123.tmp"
    stale.write_bytes(b"left by a killed writer")
    other = tmp_path / ".other.safetensors.abc123.tmp"
    other.write_bytes(b"another file's")
    atomic_write(target, lambda tmp: Path(tmp).write_bytes(b"done"))
    assert target.read_bytes() == b"done" and not stale.exists() and other.exists()


def test_a_live_writers_temporary_file_is_kept(tmp_path):
    target = tmp_path / "run.safetensors"
    seen = []

    def write(tmp: str) -> None:
        seen.append(remove_stale_temporaries(target))  # a second writer cleaning while this one writes
        assert Path(tmp).exists()
        Path(tmp).write_bytes(b"done")

    atomic_write(target, write)
    assert seen == [[]] and target.read_bytes() == b"done"


def test_a_writer_killed_mid_write_leaves_nothing_at_the_path_and_its_leftover_is_cleaned(tmp_path):
    target = tmp_path / "run.safetensors"
    child = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from pathlib import Path; from gatescope.files import atomic_write; "
        "atomic_write(sys.argv[1], lambda tmp: (Path(tmp).write_bytes(b'half'), print('writing', flush=True), "
        "time.sleep(60)))"), str(target)], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "writing"
        (leftover,) = tmp_path.glob(".run.safetensors.*.tmp")
        assert remove_stale_temporaries(target) == [] and leftover.exists()  # a live writer's file is kept
    finally:
        child.kill()
        child.wait()
    assert not target.exists() and leftover.exists()
    atomic_write(target, lambda tmp: Path(tmp).write_bytes(b"whole"))
    assert target.read_bytes() == b"whole" and not leftover.exists()
    assert not list(tmp_path.glob(".run.safetensors.*"))


def test_messages_are_one_line_when_built_and_when_printed(tmp_path, capsys):
    error = GatescopeError("bad\nname\x1b[2J\u2028and \udcff" + "x" * 5000)
    assert is_one_line(str(error)) and "bad\\nname\\x1b[2J\\u2028and \\udcff" in str(error)
    path = tmp_path / "two\nlines.safetensors"
    path.write_bytes(b"junk")
    assert main_code(["inspect", str(path)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "two\\nlines.safetensors" in err
