"""Custody parties: how a receiver is named, and who may accept for it."""

from __future__ import annotations

import pytest

from services.delivery.domain.custody import Person, holds, party, stands_for
from shared.errors import InvalidArgument

CARL = Person("carl", frozenset({"courier"}))
CLARA = Person("h1-clara", frozenset({"clinician"}), hospital="H1")
ALICE = Person("alice", frozenset({"operator", "qa"}), site="LON")
QUINN = Person("quinn", frozenset({"qa"}), site="LON")
H1_SYSTEM = Person("service-account-hospital-h1", frozenset({"hospital"}), hospital="H1")


@pytest.mark.parametrize(
    ("given", "canonical"),
    [
        ("courier:carl", "courier:carl"),
        ("  Courier : carl ", "courier:carl"),
        ("hospital:h1", "hospital:H1"),
        ("bank:lon", "bank:LON"),
    ],
)
def test_a_party_is_named_canonically(given, canonical):
    assert party(given) == canonical


@pytest.mark.parametrize("given", ["", "carl", "courier:", ":carl", "team:x", "bank:LON:dock"])
def test_a_party_no_person_can_stand_for_is_refused(given):
    with pytest.raises(InvalidArgument) as refused:
        party(given)
    assert refused.value.field == "to_party"


@pytest.mark.parametrize(
    ("person", "to_party", "may"),
    [
        (CARL, "courier:carl", True),
        (CARL, "courier:cora", False),
        (ALICE, "courier:alice", False),  # not a courier
        (CLARA, "hospital:H1", True),
        (CLARA, "hospital:H2", False),
        (H1_SYSTEM, "hospital:H1", False),  # the hospital's system is no person of it
        (ALICE, "bank:LON", True),
        (ALICE, "bank:MAN", False),
        (QUINN, "bank:LON", False),  # QA, not an operator
        (CARL, "courier:SpeedyBio", False),
        (CARL, "SpeedyBio", False),  # an older free-text party: nobody can prove to be it
    ],
)
def test_only_a_person_of_the_named_party_stands_for_it(person, to_party, may):
    assert stands_for(person, to_party) is may


@pytest.mark.parametrize(
    ("person", "custodian", "may"),
    [
        (ALICE, "bank:LON", True),  # the bank holds it: its operators hand it on
        (QUINN, "bank:LON", False),  # QA is not who ships
        (CARL, "bank:LON", False),  # a courier cannot take it from the bank unasked
        (CARL, "courier:carl", True),
        (Person("cora", frozenset({"courier"})), "courier:carl", False),
        (ALICE, "courier:carl", False),  # nobody acts for the courier who holds it
        (CLARA, "hospital:H1", True),
        (CLARA, "SpeedyBio", False),  # an older free-text custodian: nobody proves to be it
    ],
)
def test_only_the_present_custodian_hands_on_or_records_delivery(person, custodian, may):
    assert holds(person, custodian) is may
