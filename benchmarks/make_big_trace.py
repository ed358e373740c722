"""Write a large synthetic trace file for the browser benchmark, without holding it in memory.

Default: 1,000,000 tokens x 2 layers x 650 units, the six LSTM kinds (i f g o c h), float16,
about 15.6 GB: the size of a Gulordava et al. 2018 / Lakretz et al. 2019 LM (2 x 650) run
over a million-token corpus. The file is a gatescope trace (docs/trace-format.md: a
safetensors file, quantities [N, H], ``offsets``, ``token_ids``, ``feature.*``, JSON metadata
under ``__metadata__["gatescope"]``); the header is written first and the data section is
streamed block by block from a small pool of smooth random blocks, so memory stays flat.

    python benchmarks/make_big_trace.py /tmp/big.trace.safetensors
    python benchmarks/make_big_trace.py /tmp/small.safetensors --tokens 100000
"""
from __future__ import annotations

import argparse
import json
import os
import struct
import sys
import time
from pathlib import Path

import numpy as np

KINDS = ("i", "f", "g", "o", "c", "h")
ROWS = 4096  # rows per streamed block
POOL = 8  # distinct blocks per kind, cycled


def vocabulary(size: int, rng: np.random.Generator) -> list[str]:
    """Pronounceable made-up words (plus <unk>, <eos>), all distinct."""
    onsets, vowels, codas = list("bcdfghklmnprstvwz"), list("aeiou"), ["", "n", "s", "r", "t"]
    words = {"<unk>", "<eos>"}
    out = ["<unk>", "<eos>"]
    while len(out) < size:
        syllables = rng.integers(1, 4)
        word = "".join(rng.choice(onsets) + rng.choice(vowels) + rng.choice(codas) for _ in range(syllables))
        if word not in words:
            words.add(word)
            out.append(word)
    return out


def pool(kind: str, hidden: int, rng: np.random.Generator) -> list[bytes]:
    """POOL blocks of ROWS x hidden float16 values that drift smoothly in time, in the kind's range."""
    blocks = []
    for _ in range(POOL):
        walk = np.cumsum(rng.normal(0.0, 0.35, (ROWS, hidden)), axis=0)  # (ROWS, H)
        walk -= np.linspace(0.0, 1.0, ROWS)[:, None] * walk[-1]  # ends where it started: no seam
        bias = rng.normal(0.0, 1.5, hidden)
        pre = (walk / np.sqrt(ROWS) * 6 + bias).astype(np.float32)
        if kind in "ifo":
            values = 1.0 / (1.0 + np.exp(-pre))
        elif kind == "c":
            values = pre * 1.5
        else:
            values = np.tanh(pre)
        blocks.append(values.astype("<f2").tobytes())
    return blocks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--tokens", type=int, default=1_000_000)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--hidden", type=int, default=650)
    parser.add_argument("--vocab", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    n, hidden = args.tokens, args.hidden
    rng = np.random.default_rng(args.seed)

    lengths = rng.integers(5, 41, n // 5 + 1)  # sentence-like sequences of 5..40 tokens
    ends = np.cumsum(lengths)
    ends = np.append(ends[ends < n], n)
    offsets = np.concatenate([[0], ends]).astype("<i8")  # (S+1,)
    vocab = vocabulary(args.vocab, rng)
    token_ids = 2 + (rng.zipf(1.3, n) - 1) % (len(vocab) - 2)  # (N,) Zipf-like word frequencies
    token_ids[ends - 1] = 1  # <eos> closes each sequence
    position = (np.arange(n) - np.repeat(offsets[:-1], np.diff(offsets))).astype("<f4")  # (N,)
    number = np.where(rng.random(n) < 0.5, rng.integers(0, 2, n), np.nan).astype("<f4")  # (N,)

    names = [f"rnn.l{layer}.fwd.{kind}" for layer in range(args.layers) for kind in KINDS]
    quantity_bytes = n * hidden * 2
    header: dict = {}
    cursor = 0
    for name in names:
        header[name] = {"dtype": "F16", "shape": [n, hidden], "data_offsets": [cursor, cursor + quantity_bytes]}
        cursor += quantity_bytes
    small = {
        "offsets": ("I64", offsets.tobytes()),
        "token_ids": ("I64", token_ids.astype("<i8").tobytes()),
        "feature.position": ("F32", position.tobytes()),
        "feature.number": ("F32", number.tobytes()),
    }
    for name, (dtype, data) in small.items():
        count = len(offsets) if name == "offsets" else n
        header[name] = {"dtype": dtype, "shape": [count], "data_offsets": [cursor, cursor + len(data)]}
        cursor += len(data)
    meta = {
        "format": "gatescope.trace", "format_version": 1, "tokenizer": "word", "vocab": vocab,
        "unk": "<unk>", "eos": "<eos>", "source": "benchmarks/make_big_trace.py (synthetic)",
        "modules": [{"name": "rnn", "cell": "LSTM", "input_size": hidden, "hidden_size": hidden,
                     "num_layers": args.layers, "bidirectional": False, "proj_size": 0, "bias": True}],
    }
    header["__metadata__"] = {"gatescope": json.dumps(meta)}
    header_bytes = json.dumps(header, separators=(",", ":")).encode()
    header_bytes += b" " * (-len(header_bytes) % 8)  # safetensors pads the header to 8 bytes

    print(f"writing {args.out}: {n} tokens, {len(offsets) - 1} sequences, {len(names)} quantities "
          f"[{n}, {hidden}] float16, {(8 + len(header_bytes) + cursor) / 1e9:.1f} GB", file=sys.stderr)
    pools = {kind: pool(kind, hidden, rng) for kind in KINDS}
    tmp = args.out.with_name(f".{args.out.name}.tmp")
    began = time.perf_counter()
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(header_bytes)))
        f.write(header_bytes)
        for q, name in enumerate(names):
            blocks = pools[name.rsplit(".", 1)[1]]
            for b, start in enumerate(range(0, n, ROWS)):
                rows = min(ROWS, n - start)
                f.write(blocks[(b * 5 + q) % POOL][: rows * hidden * 2])
            print(f"  {name} done ({time.perf_counter() - began:.0f} s)", file=sys.stderr)
        for _, data in small.values():
            f.write(data)
    os.replace(tmp, args.out)
    print(f"wrote {args.out} in {time.perf_counter() - began:.0f} s", file=sys.stderr)


if __name__ == "__main__":
    main()
