"""Custody parties: how a handoff names its receiver, and which person may accept it."""

from __future__ import annotations

from dataclasses import dataclass

from shared.errors import InvalidArgument

# A party is `<kind>:<id>`; each kind says which signed-in person stands for it.
COURIER = "courier"  # courier:<username> — that courier, in person
HOSPITAL = "hospital"  # hospital:<hospital id> — a clinician of that hospital
BANK = "bank"  # bank:<site id> — an operator of that bank site
PARTY_FORMS = "courier:<username>, hospital:<hospital id> or bank:<site id>"


@dataclass(frozen=True, slots=True)
class Person:
    """Who is accepting custody, as the identity provider vouched for them."""

    username: str
    roles: frozenset[str]
    hospital: str = ""
    site: str = ""

    def __str__(self) -> str:
        return self.username


def party(text: str, field: str = "to_party") -> str:
    """The party named canonically (`courier:carl`, `hospital:H1`, `bank:LON`); InvalidArgument
    when it names no kind of party a person can stand for."""
    kind, sep, ident = text.strip().partition(":")
    kind, ident = kind.strip().lower(), ident.strip()
    if not sep or kind not in (COURIER, HOSPITAL, BANK) or not ident or ":" in ident:
        raise InvalidArgument(field, f"name the receiver as {PARTY_FORMS}")
    return f"{kind}:{ident if kind == COURIER else ident.upper()}"


def stands_for(person: Person, to_party: str) -> bool:
    """Whether the person may accept what is handed to the party (a person of that party)."""
    try:
        kind, _, ident = party(to_party).partition(":")
    except InvalidArgument:
        return False  # an older, free-text party: no person can prove to be it
    if kind == COURIER:
        return COURIER in person.roles and person.username == ident
    if kind == HOSPITAL:
        return "clinician" in person.roles and person.hospital.upper() == ident
    return "operator" in person.roles and person.site.upper() == ident


def holds(person: Person, custodian: str) -> bool:
    """Whether the person may act as the shipment's present custodian (hand it on, record its
    delivery): the courier who holds it, a clinician of the hospital that holds it, or, while
    the bank still holds it, one of the bank's operators."""
    try:
        kind, _, _ = party(custodian, "custodian").partition(":")
    except InvalidArgument:
        return False
    if kind == BANK:
        return "operator" in person.roles
    return stands_for(person, custodian)
