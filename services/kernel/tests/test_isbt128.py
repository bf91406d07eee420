"""ISBT 128 DINs: format, MOD 37-2 check character, Type-3 flag, typed and scanned entry."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.kernel.isbt128 import (
    ALPHABET,
    DIN,
    FIN,
    ScannedDin,
    check_value,
    din_check_character,
    din_type3_flag,
    make_din,
    parse_din,
    validate_din,
    validate_fin,
)
from shared.errors import InvalidArgument

dins = st.from_regex(DIN, fullmatch=True)


def test_worked_example_has_check_character_a_and_flag_70():
    assert din_check_character("G123417654321") == "A"
    assert din_type3_flag("G123417654321") == 70


def test_check_value_is_within_the_37_character_alphabet():
    assert len(ALPHABET) == 37
    assert 0 <= check_value("G123417654321") <= 36


def test_make_din_joins_facility_two_digit_year_and_six_digit_sequence():
    assert make_din("G1234", 2017, 654321) == "G123417654321"
    assert make_din("W0001", 2026, 7) == "W000126000007"


@pytest.mark.parametrize("sequence", [0, 1_000_000, -1])
def test_make_din_refuses_sequence_outside_1_to_999999(sequence):
    with pytest.raises(InvalidArgument) as refused:
        make_din("G1234", 2026, sequence)
    assert refused.value.field == "sequence"


def test_make_din_refuses_malformed_facility():
    with pytest.raises(InvalidArgument) as refused:
        make_din("O1234", 2026, 1)
    assert refused.value.field == "facility_id"


@pytest.mark.parametrize("fin", ["G1234", "W0000", "1AB99", "ZZZ00", "A9N12"])
def test_fin_pattern_accepts_iccbba_facility_ids(fin):
    assert FIN.match(fin)
    assert validate_fin(fin) == fin


@pytest.mark.parametrize(
    "fin",
    [
        "O1234",  # letter O is never used (confusable with zero)
        "GO234",  # …in any letter position
        "G1O34",
        "01234",  # the first character is never zero
        "G12A4",  # the last two are digits
        "g1234",  # upper case only
        "G123",  # 5 characters exactly
        "G12345",
        "G1*34",
    ],
)
def test_fin_pattern_rejects_malformed_facility_ids(fin):
    assert not FIN.match(fin)
    with pytest.raises(InvalidArgument):
        validate_fin(fin)


def test_parse_din_accepts_keyboard_entry_with_check_character():
    assert parse_din("G123417654321A") == ScannedDin("G123417654321", "A", 70)


def test_parse_din_accepts_keyboard_entry_with_spaces():
    assert parse_din("G1234 17 654321 A") == ScannedDin("G123417654321", "A", 70)


def test_parse_din_accepts_scanned_barcode_with_type3_flag():
    assert parse_din("=G12341765432170") == ScannedDin("G123417654321", "A", 70)


def test_parse_din_refuses_wrong_check_character():
    with pytest.raises(InvalidArgument, match="check failed") as refused:
        parse_din("G123417654321B")
    assert refused.value.field == "din"


def test_parse_din_refuses_wrong_type3_flag():
    with pytest.raises(InvalidArgument, match="check failed") as refused:
        parse_din("=G12341765432171")
    assert refused.value.field == "din"


@pytest.mark.parametrize(
    "text",
    [
        "",
        "G123417654321",  # check character missing
        "G123417654321AB",  # more than one check character
        "G12341765432A",  # 12-character DIN
        "O123417654321A",  # letter O
        "G1234ABCDEF12A",  # letters in year/sequence
        "=G1234176543217",  # one flag digit
        "=G123417654321AB",  # flag must be digits
        "=G123417654321",  # no flag
    ],
)
def test_parse_din_refuses_malformed_input(text):
    with pytest.raises(InvalidArgument) as refused:
        parse_din(text)
    assert refused.value.field == "din"


def test_validate_din_accepts_bare_din_and_refuses_din_with_check_character():
    assert validate_din("G123417654321") == "G123417654321"
    with pytest.raises(InvalidArgument):
        validate_din("G123417654321A")


@settings(deadline=None, max_examples=200)
@given(dins)
def test_any_valid_din_round_trips_through_typed_and_scanned_entry(din):
    check, flag = din_check_character(din), din_type3_flag(din)
    assert ALPHABET.index(check) + 60 == flag
    assert parse_din(din + check) == ScannedDin(din, check, flag)
    assert parse_din(f"={din}{flag:02d}") == ScannedDin(din, check, flag)


@settings(deadline=None, max_examples=200)
@given(dins, st.integers(0, 12), st.sampled_from(ALPHABET))
def test_every_single_character_substitution_is_detected(din, position, replacement):
    if din[position] == replacement:
        replacement = ALPHABET[(ALPHABET.index(replacement) + 1) % len(ALPHABET)]
    typo = din[:position] + replacement + din[position + 1 :]
    assert check_value(typo) != check_value(din)
    with pytest.raises(InvalidArgument):
        parse_din(typo + din_check_character(din))
    with pytest.raises(InvalidArgument):
        parse_din(f"={typo}{din_type3_flag(din):02d}")


@settings(deadline=None, max_examples=200)
@given(dins, st.integers(0, 11))
def test_every_adjacent_transposition_is_detected(din, position):
    a, b = din[position], din[position + 1]
    swapped = din[:position] + b + a + din[position + 2 :]
    assert (check_value(swapped) == check_value(din)) == (a == b)
