"""gatescope.numbers: the one reader of typed whole numbers."""
from __future__ import annotations

from gatescope.numbers import whole_number, whole_numbers


def test_whole_numbers_are_ascii_digits_with_an_optional_sign():
    assert [whole_number(t) for t in ("0", "37", "+3", "-1", "007")] == [0, 37, 3, -1, 7]
    for text in ("\u00b2", "\u0663", "1_000", " 1", "1.0", "", "-", "0x1f", "1" * 5000):  # int() takes some
        assert whole_number(text) is None, text
    assert whole_numbers("3,17 4") == [3, 17, 4] and whole_numbers("") == []
    assert whole_numbers("3 \u00b2") is None
