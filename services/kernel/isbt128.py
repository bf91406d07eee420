"""ISBT 128 identifiers: DINs (MOD 37-2 check, flags), product codes, expiry dates."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date

from shared.errors import InvalidArgument

ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ*"
FIN = re.compile(r"^[A-NP-Z1-9][A-NP-Z0-9]{2}[0-9]{2}$")
DIN = re.compile(r"^[A-NP-Z1-9][A-NP-Z0-9]{2}[0-9]{10}$")
TYPE3_FLAG_OFFSET = 60
# Flag digits of a scanned DIN: Type 1 (00–19) and Type 2 (20–59) carry other information (00:
# unused) and are not check values; Type 3 (60–96) is the MOD 37-2 check value + 60.
TYPE2_FLAGS = range(20, 60)
TYPE3_FLAGS = range(TYPE3_FLAG_OFFSET, TYPE3_FLAG_OFFSET + 37)


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
    flag: int  # the DIN's Type-3 flag (check value + 60), whichever flag was scanned
    scanned_flag: int | None = None  # the barcode's flag digits as read; None for typed entry


def din_flag_type(flag: int) -> int:
    """The type (1, 2 or 3) of a DIN barcode's two flag digits; InvalidArgument past 96."""
    if 0 <= flag < TYPE2_FLAGS.start:
        return 1
    if flag in TYPE2_FLAGS:
        return 2
    if flag in TYPE3_FLAGS:
        return 3
    raise InvalidArgument("din", f"flag {flag:02d} is not an ISBT 128 DIN flag (00–96)")


def parse_din(text: str) -> ScannedDin:
    """Validate a typed or scanned DIN; InvalidArgument names what is wrong.

    Accepted: keyboard entry `G123417654321A` (spaces allowed, e.g. `G1234 17 654321 A`) with its
    check character, or the barcode data `=G12341765432170` with two flag digits. Type 1 and 2
    flags (`00`–`59`, `00` when unused) are accepted as they are; a Type 3 flag (`60`–`96`) must
    be the DIN's check value + 60.
    """
    compact = text.replace(" ", "").upper()
    if compact.startswith("="):
        din, flag_text = compact[1:14], compact[14:]
        if not DIN.match(din) or not re.fullmatch(r"[0-9]{2}", flag_text):
            raise InvalidArgument("din", "barcode must be '=' + 13-character DIN + 2 flag digits")
        flag = int(flag_text)
        if din_flag_type(flag) == 3 and flag != din_type3_flag(din):
            raise InvalidArgument("din", f"flag {flag_text} does not match the DIN (check failed)")
        return ScannedDin(din, din_check_character(din), din_type3_flag(din), flag)
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


# ---- product codes (Data Structure 003: αooootds) ------------------------------------------

# ICCBBA assigns E (blood components), F and S (cellular therapy) codes; ISBT 128 leaves A–D for
# a facility's own codes where ICCBBA has none (a bank configures them per product type).
ICCBBA_DESCRIPTION_CODE = re.compile(r"^[EFS][0-9]{4}$")
LOCAL_DESCRIPTION_CODE = re.compile(r"^[A-D][0-9]{4}$")
# t: one character of ISBT 128's Type of Donation table (e.g. V volunteer allogeneic, 1 autologous)
COLLECTION_TYPE = re.compile(r"^[0-9A-Za-z]$")
# ds: 00 undivided; A0, B0, … Z0 divisions; a lower-case second letter for sub-divisions (Aa…)
DIVISION = re.compile(r"^(00|[A-Z][0a-z])$")
UNDIVIDED = "00"
MAX_DIVISIONS = 26  # A0…Z0


@dataclass(frozen=True, slots=True)
class ProductCode:
    description_code: str  # αoooo
    collection_type: str  # t
    division: str  # ds

    def __str__(self) -> str:
        return f"{self.description_code}{self.collection_type}{self.division}"

    @property
    def local(self) -> bool:
        """A facility-defined description code (A–D), not one assigned by ICCBBA."""
        return bool(LOCAL_DESCRIPTION_CODE.match(self.description_code))


def parse_product_code(text: str) -> ProductCode:
    """An 8-character ISBT 128 product code, e.g. `S1001VA0`; InvalidArgument("product_code")
    for anything else (hyphens, numeric divisions such as `S1001-01`, lower-case codes)."""
    if len(text) != 8:
        raise InvalidArgument(
            "product_code", f"{text!r} is not an 8-character ISBT 128 product code (αoooo t ds)"
        )
    code = ProductCode(text[:5], text[5], text[6:])
    if not (ICCBBA_DESCRIPTION_CODE.match(code.description_code) or code.local):
        raise InvalidArgument(
            "product_code",
            f"{code.description_code!r} is not a product description code"
            " (E/F/S + 4 digits from ICCBBA, or a local A–D + 4 digits)",
        )
    if not COLLECTION_TYPE.match(code.collection_type):
        raise InvalidArgument(
            "product_code", f"{code.collection_type!r} is not a collection type character"
        )
    if not DIVISION.match(code.division):
        raise InvalidArgument(
            "product_code",
            f"{code.division!r} is not a division (00 undivided, A0…Z0, sub-divisions Aa…)",
        )
    return code


def division_code(ordinal: int, of: int) -> str:
    """The division of unit `ordinal` (1-based) of a product made into `of` units: `00` when the
    product is not divided (one unit), otherwise A0, B0, … Z0."""
    if not 1 <= ordinal <= of <= MAX_DIVISIONS:
        raise InvalidArgument("units", f"a product is divided into 1–{MAX_DIVISIONS} units")
    return UNDIVIDED if of == 1 else f"{chr(ord('A') + ordinal - 1)}0"


def product_code(description_code: str, collection_type: str, division: str) -> str:
    """The validated product code of one unit, e.g. ("S1001", "V", "A0") -> "S1001VA0"."""
    return str(parse_product_code(f"{description_code}{collection_type}{division}"))


# ---- expiry (Data Structures 004/005) --------------------------------------------------------


def expired(expires_on: date, today: date) -> bool:
    """An expiration date without a time means the end of that day: a unit expiring today is
    usable until the day ends, and expired from the next day on."""
    return today > expires_on
