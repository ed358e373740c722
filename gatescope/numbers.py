"""The one reader of the numbers a user types: token ids (``--ids``, ``--ids-file``), unit indices
(``rnn.l0.fwd.h:37``, ``--units``), sequence numbers (``--sequences``), the browser's prompts (go to unit, go
to sequence, compare, token search) and every number option of the command line (gatescope.cli.params).

A number here is ASCII digits with an optional sign. Python's ``int()`` takes more than that (other scripts'
digits such as ``"٣"``, underscores, surrounding spaces) and ``str.isdigit()`` takes what ``int()`` refuses
(superscripts such as ``"²"``), so checking with one and converting with the other let a typed ``²`` escape as a
traceback; every place that reads a typed number asks this module instead. A decimal number is the same
ASCII, with a fraction and an exponent, and finite: ``float()`` takes ``nan``, ``inf`` and other scripts' digits.
"""
from __future__ import annotations

import math
import re

_WHOLE = re.compile(r"[+-]?[0-9]+")
_DECIMAL = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")


def whole_number(text: str) -> int | None:
    """``text`` as an int when it is a whole number (ASCII digits, an optional sign), else None (so is a
    number of more digits than Python converts, about 4,300)."""
    if not _WHOLE.fullmatch(text):
        return None
    try:
        return int(text)
    except ValueError:  # past sys.get_int_max_str_digits()
        return None


def whole_numbers(text: str) -> list[int] | None:
    """Whole numbers separated by commas or spaces (``"3,17 4"``), or None when a piece is not one."""
    numbers = [whole_number(piece) for piece in text.replace(",", " ").split()]
    return None if None in numbers else numbers


def decimal_number(text: str) -> float | None:
    """``text`` as a float when it is a finite decimal number (ASCII digits, a sign, a fraction, an exponent:
    ``-0.5``, ``1e-4``), else None (``nan``, ``inf``, ``1e999``, ``٣``, ``1_0``)."""
    if not _DECIMAL.fullmatch(text):
        return None
    number = float(text)
    return number if math.isfinite(number) else None
