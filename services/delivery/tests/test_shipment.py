"""Shipment aggregate: given events → when command → then events or refusal."""

from __future__ import annotations

import dataclasses
import functools
import typing
from datetime import UTC, datetime, timedelta

import pytest

from services.delivery.domain.custody import Person
from services.delivery.domain.model import (
    AcceptCustody,
    Compromise,
    CreateShipment,
    CustodyAccepted,
    CustodyOffered,
    Decision,
    DeliveryRules,
    Dispatch,
    DispositionShipment,
    ESignature,
    FlagAtRisk,
    Handoff,
    HandOver,
    RecordDelivery,
    RecordReturn,
    ReturnOutcome,
    Shipment,
    ShipmentAtRisk,
    ShipmentCommand,
    ShipmentCompromised,
    ShipmentCreated,
    ShipmentDelivered,
    ShipmentDispatched,
    ShipmentDispositioned,
    ShipmentEvent,
    ShipmentReturned,
    ShipmentStatus,
    Shipper,
)
from services.delivery.domain.shipment import decide, evolve
from shared.errors import InvalidArgument, NotFound, PermissionDenied, PreconditionFailed

NOW = datetime(2026, 6, 1, 9, 0, tzinfo=UTC)
PLACED_AT = NOW - timedelta(hours=2)
PROMISED = NOW + timedelta(hours=6)
ARRIVED = NOW + timedelta(hours=4)
SHIPPER = Shipper("LON-DS-04", 10.0, 3)  # holds 600 min: covers 300 min × 2 exactly
CREATED = ShipmentCreated(
    order_id="order-1",
    order_site_id="LON",
    hospital_id="H1",
    unit_ids=("unit-1",),
    shipper=SHIPPER,
    logger_id="LOG-7",
    courier="BioCourier",
    route="LON→H1",
    planned_transit_minutes=300.0,
    promised_at=PROMISED,
    order_placed_at=PLACED_AT,
)
BANK = "bank:LON"
COURIER = "courier:bob"
EVE = "courier:eve"
WARD_PARTY = "hospital:H1"
BOB = Person("bob", frozenset({"courier"}))
NURSE = Person("h1-kim", frozenset({"clinician"}), hospital="H1")
WARD = "H1-cell-lab"
CAUSE = "excursion:LON-DS-04:2026-06-01T10:00:00+00:00"
SIGNED = ESignature("Bob Courier", "received sealed shipper", NOW + timedelta(minutes=11))
RULES = DeliveryRules()  # safety factor 2, at most 20 uses
QA_SIGNED = ESignature("Anna QA", "excursion reviewed", NOW + timedelta(hours=5))

CREATED_ONLY: tuple[ShipmentEvent, ...] = (CREATED,)
IN_TRANSIT = (*CREATED_ONLY, ShipmentDispatched(NOW, BANK, 2.0))
OFFERED = (*IN_TRANSIT, CustodyOffered(BANK, COURIER, "LON dock", NOW + timedelta(minutes=10)))
HANDED = (*OFFERED, CustodyAccepted(COURIER, "LON dock", SIGNED.signed_at, SIGNED))
DELIVERED = (*HANDED, ShipmentDelivered(ARRIVED, WARD, 6 * 3600.0, False))
COMPROMISED = (*IN_TRANSIT, ShipmentCompromised(CAUSE, "logger read -120 °C"))
COMPROMISED_DELIVERED = (*DELIVERED, ShipmentCompromised(CAUSE, "logger read -120 °C"))
ACCEPTED = (*COMPROMISED, ShipmentDispositioned(Decision.ACCEPT, QA_SIGNED))
REJECTED = (*COMPROMISED, ShipmentDispositioned(Decision.REJECT, QA_SIGNED))
AT_RISK = (*IN_TRANSIT, ShipmentAtRisk(PROMISED, PROMISED + timedelta(hours=2), "flight delayed"))
RETURNED = (*IN_TRANSIT, ShipmentReturned(ReturnOutcome.RETURNED, "patient unwell"))
DISCARDED = (*REJECTED, ShipmentReturned(ReturnOutcome.DISCARDED, "QA rejected"))

HISTORIES = {
    "created": CREATED_ONLY,
    "in transit": IN_TRANSIT,
    "offered": OFFERED,
    "handed over": HANDED,
    "delivered": DELIVERED,
    "compromised": COMPROMISED,
    "compromised after delivery": COMPROMISED_DELIVERED,
    "accepted by QA": ACCEPTED,
    "rejected by QA": REJECTED,
    "at risk": AT_RISK,
    "returned": RETURNED,
    "discarded": DISCARDED,
}


def given(*events: ShipmentEvent) -> Shipment:
    return functools.reduce(evolve, events, Shipment())


def when(events: tuple[ShipmentEvent, ...], command: ShipmentCommand) -> list[ShipmentEvent]:
    return list(decide(given(*events), command))


def create(now: datetime = NOW, **changes: typing.Any) -> CreateShipment:
    return CreateShipment(dataclasses.replace(CREATED, **changes), now)


def shipper(**changes: typing.Any) -> Shipper:
    return dataclasses.replace(SHIPPER, **changes)


def dispatch(custodian: str = BANK, rules: DeliveryRules = RULES) -> Dispatch:
    return Dispatch(NOW, custodian, rules)


def hand_over(to_party: str = COURIER, place: str = "LON dock") -> HandOver:
    return HandOver(to_party, place, NOW + timedelta(minutes=10))


def accept(
    place: str = "LON dock", meaning: str = SIGNED.meaning, by: Person = BOB
) -> AcceptCustody:
    return AcceptCustody(place, dataclasses.replace(SIGNED, meaning=meaning), by)


def deliver(at: datetime = ARRIVED, place: str = WARD) -> RecordDelivery:
    return RecordDelivery(at, place)


def qa(decision: Decision, role: str = "qa", meaning: str = QA_SIGNED.meaning):
    return DispositionShipment(decision, role, dataclasses.replace(QA_SIGNED, meaning=meaning))


def refused_field(events: tuple[ShipmentEvent, ...], command: ShipmentCommand) -> str:
    with pytest.raises(InvalidArgument) as refused:
        when(events, command)
    return refused.value.field


# ---- create ---------------------------------------------------------------------------------


def test_create_records_the_shipment_as_asked():
    assert when((), create()) == [CREATED]
    shipment = given(*CREATED_ONLY)
    assert (shipment.status, shipment.created, shipment.custodian) == (
        ShipmentStatus.CREATED, CREATED, "",
    )  # fmt: skip


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"shipper": shipper(shipper_id="")}, "shipper.shipper_id"),
        ({"shipper": shipper(shipper_id="   ")}, "shipper.shipper_id"),
        ({"shipper": shipper(qualified_hold_hours=0.0)}, "shipper.qualified_hold_hours"),
        ({"shipper": shipper(qualified_hold_hours=-1.0)}, "shipper.qualified_hold_hours"),
        ({"shipper": shipper(qualified_hold_hours=float("inf"))}, "shipper.qualified_hold_hours"),
        ({"shipper": shipper(qualified_hold_hours=float("nan"))}, "shipper.qualified_hold_hours"),
        ({"shipper": shipper(uses_since_requalification=-1)}, "shipper.uses_since_requalification"),
        ({"planned_transit_minutes": 0.0}, "planned_transit_minutes"),
        ({"planned_transit_minutes": -30.0}, "planned_transit_minutes"),
        ({"planned_transit_minutes": float("inf")}, "planned_transit_minutes"),
        ({"planned_transit_minutes": float("nan")}, "planned_transit_minutes"),
        ({"courier": ""}, "courier"),
        ({"courier": "  "}, "courier"),
        ({"promised_at": NOW}, "promised_at"),
        ({"promised_at": NOW - timedelta(seconds=1)}, "promised_at"),
    ],
    ids=[
        "no shipper", "blank shipper", "zero hold", "negative hold", "infinite hold", "nan hold",
        "negative uses", "zero transit", "negative transit", "infinite transit", "nan transit",
        "no courier", "blank courier", "promised now", "promised in the past",
    ],
)  # fmt: skip
def test_create_refuses_a_malformed_field_naming_it(changes, field):
    assert refused_field((), create(**changes)) == field


@pytest.mark.parametrize(
    "changes",
    [
        {"shipper": shipper(qualified_hold_hours=0.01)},
        {"shipper": shipper(uses_since_requalification=0)},
        {"planned_transit_minutes": 0.5},
        {"promised_at": NOW + timedelta(seconds=1)},
        {"order_placed_at": None},
    ],
    ids=["tiny hold", "fresh shipper", "short transit", "promised just after now", "no placed"],
)
def test_create_accepts_the_smallest_valid_values(changes):
    assert when((), create(**changes)) == [dataclasses.replace(CREATED, **changes)]


def test_create_refuses_an_order_with_no_unit():
    with pytest.raises(PreconditionFailed, match="order has no allocated unit: order-1"):
        when((), create(unit_ids=()))


@pytest.mark.parametrize(
    "history", [CREATED_ONLY, IN_TRANSIT, DELIVERED], ids=["created", "in transit", "delivered"]
)
def test_create_retried_with_the_same_facts_records_nothing(history):
    assert when(history, create(now=NOW + timedelta(hours=1))) == []


def test_create_again_with_other_facts_is_refused():
    with pytest.raises(PreconditionFailed, match="already created for this order: IN_TRANSIT"):
        when(IN_TRANSIT, create(courier="OtherCourier"))


@pytest.mark.parametrize(
    "command",
    [
        dispatch(),
        hand_over(),
        accept(),
        deliver(),
        Compromise(CAUSE, "d"),
        qa(Decision.ACCEPT),
        FlagAtRisk(PROMISED, "late"),
        RecordReturn(ReturnOutcome.RETURNED, "why"),
    ],
    ids=lambda c: type(c).__name__,
)
def test_commands_for_a_shipment_never_created_are_not_found(command):
    with pytest.raises(NotFound):
        when((), command)


# ---- dispatch -------------------------------------------------------------------------------


def test_dispatch_puts_the_shipment_in_transit_with_its_first_custodian():
    assert when(CREATED_ONLY, dispatch()) == [ShipmentDispatched(NOW, BANK, 2.0)]
    shipment = given(*IN_TRANSIT)
    assert (shipment.status, shipment.custodian, shipment.dispatched_at, shipment.pending) == (
        ShipmentStatus.IN_TRANSIT, BANK, NOW, None,
    )  # fmt: skip


def test_dispatch_retried_records_nothing():
    assert when(IN_TRANSIT, dispatch()) == []
    assert when(HANDED, dispatch()) == []


@pytest.mark.parametrize(
    "history", [DELIVERED, RETURNED, DISCARDED], ids=["delivered", "returned", "discarded"]
)
def test_dispatch_refused_once_the_shipment_has_arrived_or_gone_back(history):
    with pytest.raises(PreconditionFailed, match="shipment not awaiting dispatch"):
        when(history, dispatch())


def test_dispatch_refused_without_a_temperature_logger():
    with pytest.raises(PreconditionFailed, match="no temperature logger") as refused:
        when((dataclasses.replace(CREATED, logger_id=""),), dispatch())
    assert refused.value.rule == "no temperature logger"


def test_a_blank_logger_id_is_no_logger():
    with pytest.raises(PreconditionFailed, match="no temperature logger"):
        when((dataclasses.replace(CREATED, logger_id="   "),), dispatch())


@pytest.mark.parametrize(
    ("transit", "rules"),
    [
        (300.0, DeliveryRules()),  # 600 min hold = 300 × 2: the boundary is inclusive
        (299.0, DeliveryRules()),
        (400.0, DeliveryRules(safety_factor=1.5)),  # 600 = 400 × 1.5
    ],
    ids=["boundary", "margin to spare", "custom factor at its boundary"],
)
def test_dispatch_when_the_hold_covers_planned_transit_times_the_safety_factor(transit, rules):
    history = (dataclasses.replace(CREATED, planned_transit_minutes=transit),)
    assert when(history, dispatch(rules=rules)) == [
        ShipmentDispatched(NOW, BANK, rules.safety_factor)
    ]


@pytest.mark.parametrize(
    ("transit", "rules", "numbers"),
    [
        (
            300.5,
            DeliveryRules(),
            "LON-DS-04 holds 600 min; planned transit 300.5 min × 2 = 601 min",
        ),
        (250.0, DeliveryRules(safety_factor=3), "holds 600 min; planned transit 250 min × 3 = 750"),
    ],
    ids=["just over", "custom factor"],
)
def test_dispatch_refused_when_the_hold_is_too_short_naming_the_numbers(transit, rules, numbers):
    history = (dataclasses.replace(CREATED, planned_transit_minutes=transit),)
    with pytest.raises(PreconditionFailed, match="dry shipper hold too short") as refused:
        when(history, dispatch(rules=rules))
    assert numbers in str(refused.value)


@pytest.mark.parametrize(
    ("uses", "rules"),
    [(19, DeliveryRules()), (0, DeliveryRules()), (4, DeliveryRules(max_shipper_uses=5))],
)
def test_dispatch_while_the_shipper_has_uses_left(uses, rules):
    history = (dataclasses.replace(CREATED, shipper=shipper(uses_since_requalification=uses)),)
    assert len(when(history, dispatch(rules=rules))) == 1


@pytest.mark.parametrize(
    ("uses", "rules", "numbers"),
    [
        (20, DeliveryRules(), "20 uses since the last (at most 20)"),
        (31, DeliveryRules(), "31 uses since the last (at most 20)"),
        (5, DeliveryRules(max_shipper_uses=5), "5 uses since the last (at most 5)"),
    ],
)
def test_dispatch_refused_when_the_shipper_is_due_for_requalification(uses, rules, numbers):
    history = (dataclasses.replace(CREATED, shipper=shipper(uses_since_requalification=uses)),)
    with pytest.raises(PreconditionFailed, match="dry shipper due for requalification") as refused:
        when(history, dispatch(rules=rules))
    assert numbers in str(refused.value)


@pytest.mark.parametrize("custodian", ["", "   "])
def test_dispatch_names_who_holds_the_shipment(custodian):
    assert refused_field(CREATED_ONLY, dispatch(custodian=custodian)) == "custodian"


# ---- hand over and accept custody -----------------------------------------------------------


def test_hand_over_offers_custody_without_moving_it():
    assert when(IN_TRANSIT, hand_over(f" {COURIER} ", " LON dock ")) == [
        CustodyOffered(BANK, COURIER, "LON dock", NOW + timedelta(minutes=10))
    ]
    shipment = given(*OFFERED)
    assert shipment.custodian == BANK
    assert shipment.pending == Handoff(BANK, COURIER, "LON dock", NOW + timedelta(minutes=10))


def test_a_second_offer_while_one_is_pending_is_refused_naming_the_first():
    with pytest.raises(PreconditionFailed, match="handoff already offered") as refused:
        when(OFFERED, hand_over(EVE))
    assert COURIER in str(refused.value)


@pytest.mark.parametrize("to_party", ["", "   ", BANK, f"  {BANK} ", "bank:lon"])
def test_hand_over_needs_another_party_than_the_custodian(to_party):
    assert refused_field(IN_TRANSIT, hand_over(to_party)) == "to_party"


@pytest.mark.parametrize("place", ["", "  "])
def test_hand_over_records_where(place):
    assert refused_field(IN_TRANSIT, hand_over(place=place)) == "place"


@pytest.mark.parametrize(
    "command", [hand_over(), accept()], ids=lambda c: type(c).__name__
)  # fmt: skip
@pytest.mark.parametrize(
    "history", [CREATED_ONLY, DELIVERED, RETURNED], ids=["created", "delivered", "returned"]
)
def test_custody_moves_only_in_transit(history, command):
    with pytest.raises(PreconditionFailed, match="shipment not in transit"):
        when(history, command)


def test_accept_custody_moves_it_to_the_offered_party_with_the_signature():
    assert when(OFFERED, accept()) == [
        CustodyAccepted(COURIER, "LON dock", SIGNED.signed_at, SIGNED)
    ]
    shipment = given(*HANDED)
    assert (shipment.custodian, shipment.pending) == (COURIER, None)
    assert shipment.handoffs == (
        Handoff(BANK, COURIER, "LON dock", NOW + timedelta(minutes=10), SIGNED.signed_at, SIGNED),
    )


def test_accept_custody_without_a_place_keeps_the_offered_one():
    assert when(OFFERED, accept(place="  ")) == [
        CustodyAccepted(COURIER, "LON dock", SIGNED.signed_at, SIGNED)
    ]


@pytest.mark.parametrize("history", [IN_TRANSIT, HANDED], ids=["never offered", "accepted"])
def test_accept_custody_needs_a_pending_offer(history):
    with pytest.raises(PreconditionFailed, match="no handoff to accept"):
        when(history, accept())


@pytest.mark.parametrize("meaning", ["", "   "])
def test_accept_custody_needs_the_meaning_of_the_signature(meaning):
    assert refused_field(OFFERED, accept(meaning=meaning)) == "signature_meaning"
    assert given(*OFFERED).custodian == BANK


def test_custody_passes_on_along_a_chain_of_accepted_offers():
    nurse_signs = ESignature("Nurse Kim", "received at ward", NOW + timedelta(hours=3))
    offered = (*HANDED, *when(HANDED, hand_over(WARD_PARTY, "H1 door")))
    assert given(*offered).custodian == COURIER
    shipment = given(*offered, *when(offered, AcceptCustody("H1 door", nurse_signs, NURSE)))
    assert shipment.custodian == WARD_PARTY
    assert [(h.from_party, h.to_party) for h in shipment.handoffs] == [
        (BANK, COURIER), (COURIER, WARD_PARTY),
    ]  # fmt: skip


@pytest.mark.parametrize(
    "someone",
    [
        Person("eve", frozenset({"courier"})),  # another courier
        Person("bob", frozenset({"operator"})),  # bob's username, but not as a courier
        Person("alice", frozenset({"operator", "qa"}), site="LON"),
        NURSE,
    ],
    ids=["another courier", "same name, not a courier", "operator", "clinician"],
)
def test_only_the_named_receiver_accepts_custody(someone):
    with pytest.raises(PermissionDenied, match=f"offered to {COURIER}"):
        when(OFFERED, accept(by=someone))
    assert given(*OFFERED).custodian == BANK


def test_the_receiver_is_checked_before_the_meaning():
    with pytest.raises(PermissionDenied):
        when(OFFERED, accept(meaning=" ", by=NURSE))


def test_a_hospital_handoff_is_accepted_by_a_clinician_of_that_hospital_only():
    offered = (*HANDED, *when(HANDED, hand_over("hospital:h1", "H1 door")))
    assert given(*offered).pending == Handoff(
        COURIER, WARD_PARTY, "H1 door", NOW + timedelta(minutes=10)
    )
    other_hospital = Person("h2-erin", frozenset({"clinician"}), hospital="H2")
    with pytest.raises(PermissionDenied):
        when(offered, accept("H1 door", by=other_hospital))
    (accepted,) = when(offered, accept("H1 door", by=NURSE))
    assert isinstance(accepted, CustodyAccepted) and accepted.party == WARD_PARTY


@pytest.mark.parametrize("to_party", ["SpeedyBio", "courier:", "vendor:x", "courier:a:b"])
def test_hand_over_names_a_party_a_person_can_stand_for(to_party):
    assert refused_field(IN_TRANSIT, hand_over(to_party)) == "to_party"


def test_custody_may_go_back_to_an_earlier_custodian():
    assert when(HANDED, hand_over(BANK))[0] == CustodyOffered(
        COURIER, BANK, "LON dock", NOW + timedelta(minutes=10)
    )


# ---- delivery -------------------------------------------------------------------------------


def test_delivery_records_order_to_delivery_time_and_keeps_the_custodian():
    assert when(HANDED, deliver(place=f" {WARD} ")) == [
        ShipmentDelivered(ARRIVED, WARD, 6 * 3600.0, False)
    ]
    shipment = given(*DELIVERED)
    assert (shipment.status, shipment.custodian) == (ShipmentStatus.DELIVERED, COURIER)
    assert shipment.delivered == ShipmentDelivered(ARRIVED, WARD, 6 * 3600.0, False)


@pytest.mark.parametrize(
    ("at", "late"),
    [
        (PROMISED - timedelta(minutes=1), False),
        (PROMISED, False),
        (PROMISED + timedelta(seconds=1), True),
    ],
    ids=["early", "on the dot", "late"],
)
def test_delivery_is_late_only_after_the_promised_time(at, late):
    [delivered] = when(HANDED, deliver(at=at))
    assert isinstance(delivered, ShipmentDelivered)
    assert delivered.late is late


def test_delivery_of_an_order_with_no_placement_time_records_zero_seconds():
    history = (dataclasses.replace(CREATED, order_placed_at=None), *IN_TRANSIT[1:])
    assert when(history, deliver()) == [ShipmentDelivered(ARRIVED, WARD, 0.0, False)]


def test_delivery_refused_while_a_handoff_is_pending_the_custodian_still_responsible():
    with pytest.raises(PreconditionFailed, match="custody not settled") as refused:
        when(OFFERED, deliver())
    assert f"{COURIER} has not accepted the handoff; {BANK} is still responsible" in str(
        refused.value
    )


@pytest.mark.parametrize("place", ["", "   "])
def test_delivery_records_where(place):
    assert refused_field(HANDED, deliver(place=place)) == "place"


def test_delivery_recorded_twice_records_nothing():
    assert when(DELIVERED, deliver(at=ARRIVED + timedelta(hours=1))) == []


@pytest.mark.parametrize("history", [CREATED_ONLY, RETURNED], ids=["created", "returned"])
def test_delivery_refused_for_a_shipment_not_in_transit(history):
    with pytest.raises(PreconditionFailed, match="shipment not in transit"):
        when(history, deliver())


# ---- compromise and QA disposition ----------------------------------------------------------


@pytest.mark.parametrize("history", [IN_TRANSIT, DELIVERED], ids=["in transit", "delivered"])
def test_compromise_records_the_cause_and_holds_the_shipment_back_from_infusion(history):
    assert when(history, Compromise(CAUSE, "d")) == [ShipmentCompromised(CAUSE, "d")]
    shipment = given(*history, ShipmentCompromised(CAUSE, "d"))
    assert shipment.compromised and not shipment.cleared_for_infusion
    assert shipment.compromise_causes == (CAUSE,)


def test_compromise_for_the_same_cause_twice_records_nothing():
    assert when(COMPROMISED, Compromise(CAUSE, "reported again")) == []


def test_compromise_for_a_second_cause_is_recorded():
    other = "silence:LON-DS-04:2026-06-01T11:00:00+00:00"
    assert when(COMPROMISED, Compromise(other, "d")) == [ShipmentCompromised(other, "d")]
    assert given(*COMPROMISED, ShipmentCompromised(other, "d")).compromise_causes == (CAUSE, other)


@pytest.mark.parametrize(
    "history", [CREATED_ONLY, RETURNED, DISCARDED], ids=["created", "returned", "discarded"]
)
def test_compromise_of_a_shipment_not_on_its_way_records_nothing(history):
    assert when(history, Compromise("excursion:x", "d")) == []


def test_a_shipment_never_compromised_is_cleared_for_infusion():
    assert given(*DELIVERED).cleared_for_infusion


@pytest.mark.parametrize("role", ["operator", "QA", "qa ", "", "courier"])
def test_disposition_needs_a_qa_signature(role):
    with pytest.raises(PreconditionFailed, match="signing role"):
        when(COMPROMISED, qa(Decision.ACCEPT, role=role))


@pytest.mark.parametrize("meaning", ["", "   "])
def test_disposition_needs_the_meaning_of_the_signature(meaning):
    assert refused_field(COMPROMISED, qa(Decision.ACCEPT, meaning=meaning)) == "signature_meaning"


@pytest.mark.parametrize("history", [IN_TRANSIT, DELIVERED], ids=["in transit", "delivered"])
def test_disposition_refused_for_a_shipment_not_compromised(history):
    with pytest.raises(PreconditionFailed, match="shipment not compromised"):
        when(history, qa(Decision.ACCEPT))


@pytest.mark.parametrize(
    ("decision", "cleared"), [(Decision.ACCEPT, True), (Decision.REJECT, False)]
)
def test_qa_decides_whether_a_compromised_shipment_may_be_infused(decision, cleared):
    for history in (COMPROMISED, COMPROMISED_DELIVERED):
        assert when(history, qa(decision)) == [ShipmentDispositioned(decision, QA_SIGNED)]
        shipment = given(*history, ShipmentDispositioned(decision, QA_SIGNED))
        assert (shipment.disposition, shipment.cleared_for_infusion) == (decision, cleared)


@pytest.mark.parametrize(
    ("history", "first"), [(ACCEPTED, "ACCEPT"), (REJECTED, "REJECT")], ids=["accepted", "rejected"]
)
def test_disposition_only_once(history, first):
    for decision in Decision:
        with pytest.raises(PreconditionFailed, match=f"already dispositioned: {first}"):
            when(history, qa(decision))


# ---- at risk --------------------------------------------------------------------------------


def test_flag_at_risk_records_the_promise_and_the_new_estimate():
    expected = PROMISED + timedelta(hours=2)
    assert when(IN_TRANSIT, FlagAtRisk(expected, "flight delayed")) == [
        ShipmentAtRisk(PROMISED, expected, "flight delayed")
    ]
    assert given(*AT_RISK).at_risk


def test_flag_at_risk_once():
    assert when(AT_RISK, FlagAtRisk(PROMISED + timedelta(hours=3), "later still")) == []


@pytest.mark.parametrize(
    "history", [CREATED_ONLY, DELIVERED, RETURNED], ids=["created", "delivered", "returned"]
)
def test_flag_at_risk_only_in_transit(history):
    assert when(history, FlagAtRisk(PROMISED + timedelta(hours=2), "late")) == []


# ---- return and discard ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("outcome", "status"),
    [
        (ReturnOutcome.RETURNED, ShipmentStatus.RETURNED),
        (ReturnOutcome.DISCARDED, ShipmentStatus.DISCARDED),
    ],
)
@pytest.mark.parametrize(
    "history", [IN_TRANSIT, REJECTED, DELIVERED], ids=["in transit", "rejected", "delivered"]
)
def test_return_records_why_and_ends_the_shipment(history, outcome, status):
    assert when(history, RecordReturn(outcome, " QA rejected ")) == [
        ShipmentReturned(outcome, "QA rejected")
    ]
    assert given(*history, ShipmentReturned(outcome, "QA rejected")).status == status


@pytest.mark.parametrize("why", ["", "   "])
def test_return_needs_a_reason(why):
    assert refused_field(IN_TRANSIT, RecordReturn(ReturnOutcome.RETURNED, why)) == "reason"


def test_return_refused_before_dispatch():
    with pytest.raises(PreconditionFailed, match="shipment not dispatched: CREATED"):
        when(CREATED_ONLY, RecordReturn(ReturnOutcome.RETURNED, "order cancelled"))


@pytest.mark.parametrize("outcome", ReturnOutcome)
@pytest.mark.parametrize("history", [RETURNED, DISCARDED], ids=["returned", "discarded"])
def test_return_recorded_twice_records_nothing(history, outcome):
    assert when(history, RecordReturn(outcome, "again")) == []


# ---- evolve is total ------------------------------------------------------------------------

SAMPLES: dict[type, ShipmentEvent] = {
    ShipmentCreated: CREATED,
    ShipmentDispatched: ShipmentDispatched(NOW, BANK, 2.0),
    CustodyOffered: CustodyOffered(BANK, COURIER, "LON dock", NOW),
    CustodyAccepted: CustodyAccepted(COURIER, "LON dock", NOW, SIGNED),
    ShipmentDelivered: ShipmentDelivered(ARRIVED, WARD, 1.0, False),
    ShipmentCompromised: ShipmentCompromised(CAUSE, "d"),
    ShipmentDispositioned: ShipmentDispositioned(Decision.REJECT, QA_SIGNED),
    ShipmentAtRisk: ShipmentAtRisk(PROMISED, PROMISED, "why"),
    ShipmentReturned: ShipmentReturned(ReturnOutcome.DISCARDED, "why"),
}
EVERY_HISTORY = {"new": (), **HISTORIES}


def test_the_samples_cover_every_event_type():
    assert set(SAMPLES) == set(typing.get_args(ShipmentEvent))


@pytest.mark.parametrize(
    ("history", "event"),
    [
        pytest.param(history, event, id=f"{name}-{type(event).__name__}")
        for name, history in EVERY_HISTORY.items()
        for event in SAMPLES.values()
    ],
)
def test_evolve_applies_every_event_type_in_any_state(history, event):
    assert isinstance(evolve(given(*history), event), Shipment)


def test_evolve_refuses_what_is_not_a_shipment_event():
    with pytest.raises(TypeError, match="unknown event"):
        evolve(Shipment(), typing.cast(typing.Any, SHIPPER))


def test_decide_refuses_what_is_not_a_shipment_command():
    with pytest.raises(TypeError, match="unknown command"):
        decide(given(*IN_TRANSIT), typing.cast(typing.Any, SHIPPER))


@pytest.mark.parametrize(
    "someone",
    [
        Person("eve", frozenset({"courier"})),  # another courier
        Person("alice", frozenset({"operator", "qa"}), site="LON"),  # the bank let it go
        NURSE,
    ],
    ids=["another courier", "a bank operator", "a clinician"],
)
def test_only_the_present_custodian_hands_on_or_records_delivery(someone):
    """Bob (the courier) holds it: nobody else may offer it onwards (and so hijack it with an
    offer to themselves) or close it as delivered."""
    with pytest.raises(PermissionDenied, match=f"{COURIER} holds the shipment"):
        when(HANDED, HandOver("courier:eve", "lay-by", NOW + timedelta(hours=1), someone))
    with pytest.raises(PermissionDenied, match=f"{COURIER} holds the shipment"):
        when(HANDED, RecordDelivery(ARRIVED, WARD, someone))
    assert when(HANDED, RecordDelivery(ARRIVED, WARD, BOB))  # bob himself may
    assert when(
        IN_TRANSIT, HandOver(COURIER, "LON dock", NOW, Person("op", frozenset({"operator"})))
    )
