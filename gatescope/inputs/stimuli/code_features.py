"""Per-character features of Python source, from the standard library's `tokenize`.

The features Karpathy, Johnson & Fei-Fei 2015 ("Visualizing and understanding recurrent
networks") found single LSTM cells tracking in code, one value per character of the source, so
they line up with a char-tokenized trace (token i = character i):

- ``in_string``: 1.0 on every character of a string literal, prefix and quotes included
  (an f-string is one literal, its replacement fields included), else 0.0;
- ``in_comment``: 1.0 on the characters of a comment (from ``#`` to the end of the line);
- ``bracket_depth``: how many ``( [ {`` enclose the character, counting a bracket as inside
  its own pair (``f(a)`` -> 0 1 1 1); brackets in strings and comments do not count;
- ``indent_level``: the number of indented blocks the character's line lies in, as tokenize's
  INDENT/DEDENT tokens say (continuation lines keep their statement's level; a blank or
  comment line keeps the level of the line before it).
"""
from __future__ import annotations

import io
import tokenize

import numpy as np

from gatescope.errors import GatescopeError

FEATURES = ("in_string", "in_comment", "bracket_depth", "indent_level")
OPENING, CLOSING = "([{", ")]}"
# Python >= 3.12 splits f-strings into FSTRING_START ... FSTRING_END; older ones emit one STRING.
FSTRING_START = getattr(tokenize, "FSTRING_START", None)
FSTRING_END = getattr(tokenize, "FSTRING_END", None)


def _line_starts(source: str) -> list[int]:
    """Offset of the first character of each line (1-based rows, as tokenize counts them)."""
    starts = [0, 0]
    for line in source.split("\n")[:-1]:
        starts.append(starts[-1] + len(line) + 1)
    return starts


def _tokens(source: str, name: str) -> list[tokenize.TokenInfo]:
    try:
        return list(tokenize.generate_tokens(io.StringIO(source, newline="\n").readline))
    except tokenize.TokenError as exc:
        message, (row, _) = exc.args
        raise GatescopeError(f"{name}:{row}: cannot tokenize the source: {message}") from None
    except SyntaxError as exc:  # IndentationError, and 3.12's tokenizer errors
        raise GatescopeError(f"{name}:{exc.lineno}: cannot tokenize the source: {exc.msg}") from None


def code_features(source: str, name: str = "<source>") -> dict[str, np.ndarray]:
    """The features of `source`, each a float32 array with one value per character.

    Source that does not tokenize (an unterminated string, inconsistent dedent) raises
    GatescopeError naming `name` and the line."""
    starts = _line_starts(source)
    size = len(source)
    in_string = np.zeros(size, np.float32)
    in_comment = np.zeros(size, np.float32)
    depth_change = np.zeros(size + 1, np.float32)  # +1 at an opening bracket, -1 after a closing one
    line_level: dict[int, int] = {}
    level, fstring_start, fstrings = 0, 0, 0
    for token in _tokens(source, name):
        start = starts[token.start[0]] + token.start[1] if token.start[0] < len(starts) else size
        end = starts[token.end[0]] + token.end[1] if token.end[0] < len(starts) else size
        if token.type == tokenize.INDENT:
            level += 1
            line_level[token.start[0]] = level
        elif token.type == tokenize.DEDENT:
            level -= 1
            line_level[token.start[0]] = level
        elif token.type == FSTRING_START:
            fstring_start = start if fstrings == 0 else fstring_start
            fstrings += 1
        elif token.type == FSTRING_END:
            fstrings -= 1
            if fstrings == 0:
                in_string[fstring_start:end] = 1.0
        elif fstrings:
            continue  # inside an f-string's replacement fields: part of the literal
        elif token.type == tokenize.ERRORTOKEN and token.string[:1] in ("'", '"'):
            # Python < 3.12 emits a lone quote for a string left open on its line; 3.12 raises
            raise GatescopeError(f"{name}:{token.start[0]}: cannot tokenize the source: unterminated string literal")
        elif token.type == tokenize.STRING:
            in_string[start:end] = 1.0
        elif token.type == tokenize.COMMENT:
            in_comment[start:end] = 1.0
        elif token.type == tokenize.OP and token.string in OPENING:
            depth_change[start] += 1
        elif token.type == tokenize.OP and token.string in CLOSING:
            depth_change[end] -= 1
    bracket_depth = np.cumsum(depth_change[:size], dtype=np.float32)
    indent_level = np.zeros(size, np.float32)
    current = 0
    for row in range(1, len(starts)):
        current = line_level.get(row, current)
        stop = starts[row + 1] if row + 1 < len(starts) else size
        indent_level[starts[row]:stop] = current
    return {"in_string": in_string, "in_comment": in_comment,
            "bracket_depth": bracket_depth, "indent_level": indent_level}
