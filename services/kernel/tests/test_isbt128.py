"""ISBT 128: DIN format, MOD 37-2 check, flags, typed and scanned entry; product codes; expiry."""

from __future__ import annotations

from datetime import date, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.kernel.isbt128 import (
    ALPHABET,
    DIN,
    FIN,
    ProductCode,
    ScannedDin,
    check_value,
    din_check_character,
    din_flag_type,
    din_type3_flag,
    division_code,
    expired,
    make_din,
    parse_din,
    parse_product_code,
    product_code,
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
    assert parse_din("=G12341765432170") == ScannedDin("G123417654321", "A", 70, 70)


@pytest.mark.parametrize(("flag", "kind"), [("00", 1), ("01", 1), ("19", 1)])
def test_parse_din_accepts_type1_flags_which_are_not_check_values(flag, kind):
    """`00` is the flag of a DIN barcode that uses none: the issue's `=G12341765432100`."""
    scanned = parse_din(f"=G123417654321{flag}")
    assert scanned == ScannedDin("G123417654321", "A", 70, int(flag))
    assert din_flag_type(int(flag)) == kind


@pytest.mark.parametrize("flag", ["20", "42", "59"])
def test_parse_din_accepts_type2_flags_which_are_not_check_values(flag):
    assert parse_din(f"=G123417654321{flag}") == ScannedDin("G123417654321", "A", 70, int(flag))
    assert din_flag_type(int(flag)) == 2


@pytest.mark.parametrize("flag", ["60", "69", "71", "96"])
def test_parse_din_refuses_a_type3_flag_other_than_the_check_value_plus_60(flag):
    assert din_flag_type(int(flag)) == 3
    with pytest.raises(InvalidArgument, match="check failed") as refused:
        parse_din(f"=G123417654321{flag}")
    assert refused.value.field == "din"


@pytest.mark.parametrize("flag", ["97", "98", "99"])
def test_parse_din_refuses_flags_beyond_type3(flag):
    with pytest.raises(InvalidArgument, match="not an ISBT 128 DIN flag") as refused:
        parse_din(f"=G123417654321{flag}")
    assert refused.value.field == "din"


@settings(deadline=None, max_examples=200)
@given(dins, st.integers(0, 59))
def test_any_type1_or_type2_flag_is_accepted_for_any_din(din, flag):
    scanned = parse_din(f"={din}{flag:02d}")
    assert (scanned.din, scanned.scanned_flag, scanned.flag) == (din, flag, din_type3_flag(din))


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
    assert parse_din(f"={din}{flag:02d}") == ScannedDin(din, check, flag, flag)


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


# ---- product codes --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "parsed"),
    [
        ("S1001V00", ProductCode("S1001", "V", "00")),
        ("S1001VA0", ProductCode("S1001", "V", "A0")),
        ("S1001VB0", ProductCode("S1001", "V", "B0")),
        ("S1001VAa", ProductCode("S1001", "V", "Aa")),
        ("E7654V00", ProductCode("E7654", "V", "00")),
        ("F0001100", ProductCode("F0001", "1", "00")),  # autologous collection
        ("A0001VZ0", ProductCode("A0001", "V", "Z0")),  # a local code
    ],
)
def test_parse_product_code_splits_description_collection_type_and_division(text, parsed):
    assert parse_product_code(text) == parsed
    assert str(parsed) == text


def test_local_description_codes_are_a_to_d_and_iccbba_codes_are_not_local():
    assert parse_product_code("D9999V00").local
    assert not parse_product_code("S1001V00").local


@pytest.mark.parametrize(
    "text",
    [
        "S1001-01",  # the pre-ISBT form: hyphen and numeric division
        "S1001V01",  # numeric division
        "S1001V0A",
        "S1001VAA",  # a sub-division is lower case
        "S1001V-A",
        "s1001V00",  # lower-case description code
        "X1001V00",  # neither ICCBBA (E/F/S) nor local (A–D)
        "S10A1V00",
        "S1001-00",  # collection type must be a letter or digit
        "S1001VA",  # 7 characters
        "S1001VA00",
        "",
    ],
)
def test_parse_product_code_refuses_malformed_codes_naming_product_code(text):
    with pytest.raises(InvalidArgument) as refused:
        parse_product_code(text)
    assert refused.value.field == "product_code"


def test_an_undivided_product_is_division_00():
    assert division_code(1, of=1) == "00"


def test_divisions_of_a_product_are_a0_b0_c0():
    assert [division_code(n, of=3) for n in (1, 2, 3)] == ["A0", "B0", "C0"]
    assert division_code(26, of=26) == "Z0"


@pytest.mark.parametrize(("ordinal", "of"), [(0, 1), (2, 1), (27, 27), (1, 27)])
def test_division_code_refuses_more_than_26_units_or_an_ordinal_outside_them(ordinal, of):
    with pytest.raises(InvalidArgument) as refused:
        division_code(ordinal, of)
    assert refused.value.field == "units"


def test_product_code_joins_and_validates_its_parts():
    assert product_code("S1001", "V", "B0") == "S1001VB0"
    with pytest.raises(InvalidArgument) as refused:
        product_code("S1001", "-", "01")
    assert refused.value.field == "product_code"


@settings(deadline=None, max_examples=100)
@given(st.integers(1, 26).flatmap(lambda n: st.tuples(st.integers(1, n), st.just(n))))
def test_every_division_of_a_batch_is_a_valid_and_distinct_product_code(ordinal_of):
    ordinal, of = ordinal_of
    codes = {product_code("S1001", "V", division_code(k, of)) for k in range(1, of + 1)}
    assert len(codes) == of
    assert parse_product_code(product_code("S1001", "V", division_code(ordinal, of)))


# ---- expiry ---------------------------------------------------------------------------------


def test_a_unit_expiring_today_is_usable_until_the_day_ends():
    expires_on = date(2031, 3, 1)
    assert not expired(expires_on, today=expires_on - timedelta(days=1))
    assert not expired(expires_on, today=expires_on)
    assert expired(expires_on, today=expires_on + timedelta(days=1))
