"""The click parameter types of the command line's number options, read by gatescope.numbers.

click's own INT and FLOAT convert with Python's ``int()`` and ``float()``, which take other scripts' digits
(``--at ٣`` explained step 3), underscores (``--batch-size 1_000``) and, for a float, ``nan`` and ``inf``;
the unit, id and sequence readers refuse all of these. These types read the same ASCII numbers those do and
keep click's ranges (``[x>=1]`` in the help, "0 is not in the range x>=1" as the usage error).
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from gatescope.numbers import decimal_number, whole_number


class _ReadAsGatescopeDoes:
    """A click number type whose text ``read`` (of gatescope.numbers) reads, or refuses as not ``wanted``."""

    read: Callable[[str], float | None]
    wanted: str

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, str):
            number = type(self).read(value)
            if number is None:
                self.fail(f"{value!r} is not {self.wanted}", param, ctx)
            value = number
        return super().convert(value, param, ctx)


class WholeNumber(_ReadAsGatescopeDoes, click.IntRange):
    """An integer option: ASCII digits and an optional sign, within ``min`` and ``max`` when given."""

    read = staticmethod(whole_number)
    wanted = "a whole number (ASCII digits 0-9 and a sign)"


class DecimalNumber(_ReadAsGatescopeDoes, click.FloatRange):
    """A number option: a finite decimal in ASCII (``0.3``, ``-1e-4``), within ``min`` and ``max`` when given."""

    read = staticmethod(decimal_number)
    wanted = "a finite decimal number (ASCII, such as 0.3 or 1e-4)"
