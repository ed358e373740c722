"""A model's vocabulary: turning text into token ids and ids back into token strings.

Follows the convention of PyTorch's word_language_model example (``data.py``): a
word tokenizer splits on whitespace, a char tokenizer takes every character, and an
``<eos>`` token may close each sequence. The word tokenizer lower-cases its input
when every vocabulary entry is lower-case (as the sample models are). Tokens outside
the vocabulary map to the unknown token when there is one, and are said (a GatescopeWarning
naming how many and the first few); with ``strict``, or without an unknown token, they are
an error.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from gatescope.errors import GatescopeError, warn

TOKENIZERS = ("word", "char")
SHOWN = 5  # unknown tokens named in a message
# what an error says when text meets a model without a vocabulary, and how to give it one
NO_VOCABULARY = ("this model has no vocabulary in its metadata; add one with "
                 "`gatescope convert MODEL --vocab FILE -o OUT.safetensors` (FILE: one token a line, or JSON)")


class Vocabulary:
    """An ordered list of token strings (id = position) and the rule that splits text into them."""

    def __init__(
        self,
        tokens: Iterable[str],
        tokenizer: str = "word",
        unk: str | None = None,
        eos: str | None = None,
    ) -> None:
        self.tokens = list(tokens)
        if not self.tokens:
            raise GatescopeError("the vocabulary is empty")
        if not all(isinstance(token, str) for token in self.tokens):
            raise GatescopeError("the vocabulary must be a list of strings")
        if tokenizer not in TOKENIZERS:
            raise GatescopeError(f"unknown tokenizer {tokenizer!r} (expected one of: {', '.join(TOKENIZERS)})")
        self.index = {token: i for i, token in enumerate(self.tokens)}
        if len(self.index) != len(self.tokens):
            dup = next(token for i, token in enumerate(self.tokens) if self.index[token] != i)
            raise GatescopeError(f"the vocabulary lists {dup!r} twice")
        for role, token in (("unk", unk), ("eos", eos)):
            if token is not None and token not in self.index:
                raise GatescopeError(f"the {role} token {token!r} is not in the vocabulary")
        self.tokenizer = tokenizer
        self.unk = unk
        self.eos = eos
        self.lowercase = tokenizer == "word" and all(token == token.lower() for token in self.tokens)

    @classmethod
    def from_metadata(cls, meta: Mapping[str, Any]) -> Vocabulary | None:
        """The vocabulary described by checkpoint metadata (keys vocab, tokenizer, unk, eos), or None."""
        if meta.get("vocab") is None:
            return None
        if not isinstance(meta["vocab"], list):
            raise GatescopeError("metadata 'vocab' must be a list of token strings")
        return cls(meta["vocab"], meta.get("tokenizer", "word"), meta.get("unk"), meta.get("eos"))

    def to_metadata(self) -> dict[str, Any]:
        """The inverse of `from_metadata`."""
        return {"vocab": list(self.tokens), "tokenizer": self.tokenizer, "unk": self.unk, "eos": self.eos}

    def __len__(self) -> int:
        return len(self.tokens)

    def split(self, text: str) -> list[str]:
        """Split text into token strings (no vocabulary lookup)."""
        if self.tokenizer == "char":
            return list(text)
        return (text.lower() if self.lowercase else text).split()

    def encode(
        self, text: str, add_eos: bool = False, strict: bool = False, unknown: list[str] | None = None
    ) -> list[int]:
        """Token ids of `text`; an `<eos>` id is appended when `add_eos` and the vocabulary has one.

        Tokens outside the vocabulary become the unknown token: appended to `unknown` when given (the
        caller says so once for a whole corpus), else said in a GatescopeWarning. With `strict`, or
        without an unknown token, they raise GatescopeError.
        """
        pieces = self.split(text)
        if not pieces:
            raise GatescopeError(f"no tokens in the input text {text!r}")
        missing = [piece for piece in pieces if piece not in self.index]
        if missing:
            if self.unk is None:
                raise GatescopeError(f"tokens not in the vocabulary (which has no unknown token): {shown(missing)}")
            if strict:
                raise GatescopeError(f"tokens not in the vocabulary (strict: not mapped to {self.unk!r}): "
                                     f"{shown(missing)}")
            if unknown is None:
                warn(self.unknown_message(missing))
            else:
                unknown.extend(missing)
        unk_id = self.index.get(self.unk) if self.unk is not None else None
        ids = [self.index.get(piece, unk_id) for piece in pieces]
        if add_eos and self.eos is not None:
            ids.append(self.index[self.eos])
        return ids

    def unknown_message(self, missing: list[str]) -> str:
        """``"3 tokens not in the vocabulary were mapped to '<unk>': 'barks', 'x' (--strict refuses them)"``."""
        count = f"{len(missing)} token{'s' if len(missing) != 1 else ''}"
        return (f"{count} not in the vocabulary {'were' if len(missing) != 1 else 'was'} mapped to {self.unk!r}: "
                f"{shown(missing)} (--strict refuses them)")

    def decode(self, ids: Iterable[int]) -> list[str]:
        """Token strings of `ids`; an id outside the vocabulary raises GatescopeError."""
        out = []
        for i in ids:
            i = int(i)
            if not 0 <= i < len(self.tokens):
                raise GatescopeError(f"token id {i} is outside the vocabulary (size {len(self.tokens)})")
            out.append(self.tokens[i])
        return out


def shown(pieces: list[str]) -> str:
    """The first few distinct pieces, quoted: ``'barks', 'dog' and 3 more``."""
    distinct = list(dict.fromkeys(pieces))
    more = f" and {len(distinct) - SHOWN} more" if len(distinct) > SHOWN else ""
    return ", ".join(repr(piece) for piece in distinct[:SHOWN]) + more
