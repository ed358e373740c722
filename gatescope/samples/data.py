"""Training data of the sample models: the agreement grammar (word level) and the Python
standard library's source (character level), both in a fixed, seeded order.

The character corpus follows Karpathy, Johnson & Fei-Fei 2015 (char LSTMs on source code):
the stdlib's top-level modules, in sorted order, minus `HELDOUT_FILES`, which are never trained
on and serve for held-out loss and for the code-feature analyses.
"""
from __future__ import annotations

import random
import sysconfig
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import torch

from gatescope.inputs.stimuli.agreement import LEXICON, training_sentence
from gatescope.vocab import Vocabulary

UNK, EOS = "<unk>", "<eos>"
HELDOUT_FILES = ("textwrap.py", "shlex.py", "pprint.py", "calendar.py", "gettext.py", "netrc.py")
MIN_CHAR_COUNT = 20  # rarer characters map to <unk>


def word_vocabulary(lexicon: dict[str, tuple[str, ...]] = LEXICON) -> Vocabulary:
    """<unk>, <eos>, then every word of `lexicon` (default the small one) in lexicon order."""
    words = [w for category in lexicon.values() for w in category]
    return Vocabulary([UNK, EOS] + list(dict.fromkeys(words)), "word", UNK, EOS)


def word_batches(vocab: Vocabulary, batch_size: int, seed: int, lexicon: dict[str, tuple[str, ...]] = LEXICON,
                 ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Endless batches of grammar sentences over `lexicon`, each closed by <eos>, as (inputs, targets)
    (B, T): inputs padded with <eos>, targets padded with -100 (ignored by the loss)."""
    rng = random.Random(seed)
    while True:
        yield pad_sentences(vocab, [training_sentence(rng, lexicon) for _ in range(batch_size)])


def pad_sentences(vocab: Vocabulary, sentences: list[list[str]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Sentences -> (inputs, targets), both (B, T_max); targets are inputs shifted by one."""
    seqs = [vocab.encode(" ".join(s), add_eos=True) for s in sentences]
    width = max(len(s) for s in seqs) - 1
    inputs = torch.full((len(seqs), width), vocab.index[EOS], dtype=torch.long)
    targets = torch.full((len(seqs), width), -100, dtype=torch.long)
    for row, seq in enumerate(seqs):
        inputs[row, :len(seq) - 1] = torch.tensor(seq[:-1])
        targets[row, :len(seq) - 1] = torch.tensor(seq[1:])
    return inputs, targets


def stdlib_dir() -> Path:
    """The standard library shipped with this interpreter."""
    return Path(sysconfig.get_paths()["stdlib"])


def stdlib_files(heldout: bool = False) -> list[Path]:
    """The top-level stdlib modules used for training (or, with `heldout`, the held-out ones), sorted."""
    if heldout:
        return [stdlib_dir() / name for name in HELDOUT_FILES]
    return sorted(p for p in stdlib_dir().glob("*.py") if p.name not in HELDOUT_FILES)


def read_source(path: Path) -> str:
    """A source file's text (stdlib files are UTF-8)."""
    return path.read_text(encoding="utf-8")


def char_vocabulary(text: str) -> Vocabulary:
    """<unk> then every character seen at least MIN_CHAR_COUNT times, in code point order."""
    counts = Counter(text)
    chars = sorted(c for c, n in counts.items() if n >= MIN_CHAR_COUNT)
    return Vocabulary([UNK] + chars, "char", UNK, None)


def encode_chars(vocab: Vocabulary, text: str) -> torch.Tensor:
    """`text` as ids (N,) in a `char_vocabulary`: characters rarer than MIN_CHAR_COUNT are <unk> by its
    definition, not a surprise to warn about."""
    return torch.tensor(vocab.encode(text, unknown=[]))  # (N,)


def char_streams(ids: torch.Tensor, batch_size: int) -> torch.Tensor:
    """Cut a long id sequence into `batch_size` contiguous streams (B, L), for truncated BPTT."""
    length = ids.numel() // batch_size
    return ids[: length * batch_size].view(batch_size, length)  # (B, L)
