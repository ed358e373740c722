"""gatescope.numbers: the one reader of typed numbers, and the command line's number options that read through it."""
from __future__ import annotations

from gatescope.numbers import decimal_number, whole_number, whole_numbers


def test_whole_numbers_are_ascii_digits_with_an_optional_sign():
    assert [whole_number(t) for t in ("0", "37", "+3", "-1", "007")] == [0, 37, 3, -1, 7]
    for text in ("\u00b2", "\u0663", "1_000", " 1", "1.0", "", "-", "0x1f", "1" * 5000):  # int() takes some
        assert whole_number(text) is None, text
    assert whole_numbers("3,17 4") == [3, 17, 4] and whole_numbers("") == []
    assert whole_numbers("3 \u00b2") is None


def test_decimal_numbers_are_finite_ascii_decimals():
    texts = ("0", "0.3", "-1e-4", "+2.", ".5", "1E3")
    assert [decimal_number(t) for t in texts] == [0.0, 0.3, -1e-4, 2.0, 0.5, 1000.0]
    for text in ("nan", "inf", "-Infinity", "1e999", "\u0663", "1_0", "\uff15", " 1", "", ".", "1e", "0x1p3"):
        assert decimal_number(text) is None, text  # float() takes all but the last five


def test_number_options_read_ascii_numbers_and_keep_their_ranges(capsys):
    """click's INT and FLOAT took other scripts' digits, underscores, nan and inf (`--at ٣` explained step 3)."""
    import pytest

    from gatescope.cli import main

    model = "sample_models/agreement_lstm.safetensors"
    cases = [
        (["explain", model, "--text", "the boys near the car", "--unit", "rnn.l0.fwd.c:1", "--at", "\u0663"],
         "Invalid value for '--at': '\u0663' is not a whole number"),
        (["trace", model, "--text", "the boys", "--batch-size", "1_000", "-o", "x.safetensors"],
         "'1_000' is not a whole number"),
        (["trace", model, "--text", "the boys", "--batch-size", "0", "-o", "x.safetensors"],
         "0 is not in the range x>=1"),
        (["analyze", "saturation", model, "--low", "nan"], "'nan' is not a finite decimal number"),
    ]
    for argv, message in cases:
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        err = capsys.readouterr().err
        assert exit_info.value.code == 2 and err.count("\n") == 1 and message in err, err
    for value in ("nan", "inf", "\u0663", "1_0"):
        with pytest.raises(SystemExit) as exit_info:
            main(["analyze", "ablate", model, "--units", "3", "--value", value])
        err = capsys.readouterr().err
        assert exit_info.value.code == 1 and "--value must be zero, mean or a finite number" in err, err


def test_a_unit_index_too_large_for_any_model_is_out_of_range_not_malformed():
    import pytest

    from gatescope.errors import GatescopeError
    from gatescope.names import parse_unit

    assert parse_unit("rnn.l0.fwd.h:37") == ("rnn.l0.fwd.h", 37)
    with pytest.raises(GatescopeError, match=r"the index is out of range \(no layer has 1,000,000,000 units\)"):
        parse_unit("rnn.l0.fwd.h:99999999999999999999999")
    for malformed in ("rnn.l0.fwd.h:x", "rnn.l0.fwd.h:\u00b2", "rnn.l0.fwd.h:-1", "rnn.l0.fwd.h:" + "9" * 5000):
        with pytest.raises(GatescopeError, match="not a unit name"):
            parse_unit(malformed)
