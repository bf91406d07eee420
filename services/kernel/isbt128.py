"""ISBT 128 Donation Identification Numbers: format, ISO/IEC 7064 MOD 37-2 check, Type-3 flag."""

from __future__ import annotations

import re
from dataclasses import dataclass

from shared.errors import InvalidArgument

ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ*"
FIN = re.compile(r"^[A-NP-Z1-9][A-NP-Z0-9]{2}[0-9]{2}$")
DIN = re.compile(r"^[A-NP-Z1-9][A-NP-Z0-9]{2}[0-9]{10}$")
TYPE3_FLAG_OFFSET = 60


def check_value(din: str) -> int:
    """ISO/IEC 7064 MOD 37-2 check value (0–36) of a 13-character DIN."""
    s = 0
    for char in din:
        s = ((s + ALPHABET.index(char)) * 2) % 37
    return (38 - s) % 37


def din_check_character(din: str) -> str:
    """The keyboard-entry check character printed beside the DIN."""
    return ALPHABET[check_value(din)]


def din_type3_flag(din: str) -> int:
    """The Type-3 flag digits of the DIN barcode: check value + 60."""
    return check_value(din) + TYPE3_FLAG_OFFSET


def validate_fin(fin: str) -> str:
    if not FIN.match(fin):
        raise InvalidArgument(
            "facility_id", f"{fin!r} is not an ISBT 128 FIN ([A-NP-Z1-9][A-NP-Z0-9]{{2}}[0-9]{{2}})"
        )
    return fin


def make_din(fin: str, year: int, sequence: int) -> str:
    """The DIN for a facility, a two-digit year and a sequence number (1–999999)."""
    validate_fin(fin)
    if not 1 <= sequence <= 999_999:
        raise InvalidArgument("sequence", "must be 1–999999 within a facility and year")
    return f"{fin}{year % 100:02d}{sequence:06d}"


@dataclass(frozen=True, slots=True)
class ScannedDin:
    din: str
    check_character: str
    flag: int


def parse_din(text: str) -> ScannedDin:
    """Validate a typed or scanned DIN; InvalidArgument names what is wrong.

    Accepted: keyboard entry `G123417654321A` (spaces allowed, e.g. `G1234 17 654321 A`) with its
    check character, or the barcode data `=G12341765432170` with the Type-3 flag digits.
    """
    compact = text.replace(" ", "").upper()
    if compact.startswith("="):
        din, flag_text = compact[1:14], compact[14:]
        if not DIN.match(din) or not re.fullmatch(r"[0-9]{2}", flag_text):
            raise InvalidArgument("din", "barcode must be '=' + 13-character DIN + 2 flag digits")
        if int(flag_text) != din_type3_flag(din):
            raise InvalidArgument("din", f"flag {flag_text} does not match the DIN (check failed)")
        return ScannedDin(din, din_check_character(din), int(flag_text))
    din, check = compact[:13], compact[13:]
    if not DIN.match(din):
        raise InvalidArgument(
            "din", f"{din!r} is not an ISBT 128 DIN (FIN, 2-digit year, 6-digit sequence)"
        )
    if len(check) != 1:
        raise InvalidArgument("din", "the check character must follow the 13-character DIN")
    if check != din_check_character(din):
        raise InvalidArgument(
            "din", f"check character {check!r} does not match the DIN (check failed)"
        )
    return ScannedDin(din, check, din_type3_flag(din))


def validate_din(din: str) -> str:
    """A bare 13-character DIN, as stored in events."""
    if not DIN.match(din):
        raise InvalidArgument("din", f"{din!r} is not an ISBT 128 DIN")
    return din
