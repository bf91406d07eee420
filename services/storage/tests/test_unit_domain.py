"""Stored unit aggregate: given events → when command → then events or refusal."""

from __future__ import annotations

import dataclasses
import functools
from datetime import UTC, date, datetime, timedelta

import pytest

from services.storage.domain.model import (
    DiscardUnit,
    Disposition,
    DispositionUnit,
    ExpireReservation,
    ExpireUnit,
    MoveUnit,
    PickUnit,
    QuarantineLifted,
    QuarantineUnit,
    RecallUnit,
    ReleaseReservation,
    Reservation,
    ReservationExpired,
    ReservationReleased,
    ReserveUnit,
    StoredUnit,
    StoreUnit,
    UnitDiscarded,
    UnitEvent,
    UnitExpired,
    UnitFacts,
    UnitMoved,
    UnitPicked,
    UnitQuarantined,
    UnitRecalled,
    UnitReserved,
    UnitStatus,
    UnitStored,
)
from services.storage.domain.unit import Command, decide, evolve
from shared.errors import InvalidArgument, NotFound, PreconditionFailed

NOW = datetime(2026, 6, 1, 9, 0, tzinfo=UTC)
TODAY = NOW.date()
EXPIRES_ON = date(2027, 3, 1)
FACTS = UnitFacts(
    din="G123426000001",
    product_code="E7654V00",
    product_type="NK",
    viable_nk_cells=5e8,
    cd3_cells=1e6,
    volume_ml=50.0,
    expires_on=EXPIRES_ON,
    segregated=False,
)
HERE = "LON-T1/R1/B1/P01"
THERE = "LON-T1/R1/B1/P02"
HOLD = NOW + timedelta(hours=4)
CAUSE = "excursion:LON-T1:2026-06-01T08:00:00+00:00"

STORED: tuple[UnitEvent, ...] = (UnitStored(HERE, FACTS),)
RESERVED = (*STORED, UnitReserved("order-1", HOLD))
QUARANTINED = (*STORED, UnitQuarantined(CAUSE, "every unit of LON-T1"))
RECALLED = (*STORED, UnitRecalled("recall-1", "donor positive"))
EXPIRED = (*STORED, UnitExpired(EXPIRES_ON))
PICKED = (*RESERVED, UnitPicked("order-1", HERE))
DISCARDED = (*STORED, UnitDiscarded(HERE, "bag damaged"))


def given(*events: UnitEvent) -> StoredUnit:
    return functools.reduce(evolve, events, StoredUnit())


def when(events: tuple[UnitEvent, ...], command: Command) -> list[UnitEvent]:
    return list(decide(given(*events), command))


def store(facts: UnitFacts | None = FACTS, address: str = HERE, today: date = TODAY) -> StoreUnit:
    return StoreUnit("unit-1", address, facts, today)


def reserve(order_id: str = "order-1", hold: datetime = HOLD, now: datetime = NOW) -> ReserveUnit:
    return ReserveUnit(order_id, hold, now)


def qa(decision: Disposition, role: str = "qa", meaning: str = "excursion reviewed: cleared"):
    return DispositionUnit(decision, "qa-anna", role, meaning)


# ---- store ----------------------------------------------------------------------------------


def test_store_records_the_released_facts_at_the_address():
    assert when((), store()) == [UnitStored(HERE, FACTS)]
    unit = given(*STORED)
    assert (unit.status, unit.address, unit.facts) == (UnitStatus.STORED, HERE, FACTS)


def test_store_refuses_a_unit_manufacturing_never_released():
    with pytest.raises(PreconditionFailed, match="only RELEASED units"):
        when((), store(facts=None))


@pytest.mark.parametrize("days_left", [-1, -300])
def test_store_refuses_an_expired_unit(days_left):
    facts = dataclasses.replace(FACTS, expires_on=TODAY + timedelta(days_left))
    with pytest.raises(PreconditionFailed, match="unit expired"):
        when((), store(facts=facts))


@pytest.mark.parametrize("days_left", [0, 1], ids=["today", "tomorrow"])
def test_store_accepts_a_unit_expiring_today_or_later(days_left):
    """An expiry date means the end of that day: a unit expiring today is still usable."""
    facts = dataclasses.replace(FACTS, expires_on=TODAY + timedelta(days_left))
    assert when((), store(facts=facts)) == [UnitStored(HERE, facts)]


def test_store_retried_at_the_same_address_records_nothing():
    assert when(STORED, store()) == []


def test_store_twice_at_another_address_refused():
    with pytest.raises(PreconditionFailed, match="already stored"):
        when(STORED, store(address=THERE))


@pytest.mark.parametrize(
    "history", [PICKED, DISCARDED, QUARANTINED], ids=["picked", "discarded", "quarantined"]
)
def test_store_again_after_the_unit_left_stock_refused(history):
    with pytest.raises(PreconditionFailed, match="already stored"):
        when(history, store())


@pytest.mark.parametrize(
    "command",
    [MoveUnit(THERE), QuarantineUnit(CAUSE, ""), reserve(), RecallUnit("r", "why")],
    ids=lambda c: type(c).__name__,
)
def test_commands_for_a_unit_not_stored_here_are_not_found(command):
    with pytest.raises(NotFound):
        when((), command)


# ---- move -----------------------------------------------------------------------------------


def test_move_records_from_and_to():
    assert when(STORED, MoveUnit(THERE)) == [UnitMoved(HERE, THERE)]
    assert given(*STORED, UnitMoved(HERE, THERE)).address == THERE


def test_move_to_where_it_is_records_nothing():
    assert when(STORED, MoveUnit(HERE)) == []


def test_move_keeps_a_quarantined_unit_quarantined():
    moved = given(*QUARANTINED, *when(QUARANTINED, MoveUnit(THERE)))
    assert (moved.status, moved.address) == (UnitStatus.QUARANTINED, THERE)


@pytest.mark.parametrize("history", [PICKED, DISCARDED], ids=["picked", "discarded"])
def test_move_refused_for_a_unit_no_longer_in_a_position(history):
    with pytest.raises(PreconditionFailed, match="not in a position"):
        when(history, MoveUnit(THERE))


# ---- quarantine and QA disposition ----------------------------------------------------------


def test_quarantine_records_the_cause():
    assert when(STORED, QuarantineUnit(CAUSE, "every unit of LON-T1")) == [
        UnitQuarantined(CAUSE, "every unit of LON-T1")
    ]
    assert given(*QUARANTINED).status is UnitStatus.QUARANTINED


def test_quarantine_releases_an_active_reservation():
    assert when(RESERVED, QuarantineUnit(CAUSE, "d")) == [
        ReservationReleased("order-1", "quarantined"),
        UnitQuarantined(CAUSE, "d"),
    ]
    assert given(*RESERVED, *when(RESERVED, QuarantineUnit(CAUSE, "d"))).reservation is None


def test_quarantine_for_the_same_cause_twice_records_nothing():
    assert when(QUARANTINED, QuarantineUnit(CAUSE, "reported again")) == []


def test_an_excursion_already_dispositioned_does_not_quarantine_again():
    lifted = (*QUARANTINED, QuarantineLifted("qa-anna", "cleared"))
    assert when(lifted, QuarantineUnit(CAUSE, "replayed fact")) == []


def test_quarantine_for_a_second_cause_is_recorded():
    other = "sensor-silent:LON-T1:2026-06-01T08:30:00+00:00"
    assert when(QUARANTINED, QuarantineUnit(other, "d")) == [UnitQuarantined(other, "d")]


@pytest.mark.parametrize(
    "history",
    [PICKED, DISCARDED, RECALLED, EXPIRED],
    ids=["picked", "discarded", "recalled", "expired"],
)
def test_quarantine_ignores_units_gone_or_already_held_back(history):
    assert when(history, QuarantineUnit(CAUSE, "d")) == []


@pytest.mark.parametrize("role", ["operator", "QA ", "", "physician"])
def test_disposition_needs_a_qa_signature(role):
    with pytest.raises(PreconditionFailed, match="signing role"):
        when(QUARANTINED, qa(Disposition.RELEASE, role=role))


def test_disposition_needs_the_meaning_of_the_signature():
    with pytest.raises(InvalidArgument) as refused:
        when(QUARANTINED, qa(Disposition.RELEASE, meaning="  "))
    assert refused.value.field == "meaning"


@pytest.mark.parametrize(
    "history", [STORED, RECALLED, PICKED], ids=["stored", "recalled", "picked"]
)
def test_disposition_refused_for_a_unit_not_quarantined(history):
    with pytest.raises(PreconditionFailed, match="not quarantined"):
        when(history, qa(Disposition.RELEASE))


def test_qa_release_puts_the_unit_back_in_stock():
    assert when(QUARANTINED, qa(Disposition.RELEASE)) == [
        QuarantineLifted("qa-anna", "excursion reviewed: cleared")
    ]
    released = given(*QUARANTINED, QuarantineLifted("qa-anna", "cleared"))
    assert released.status is UnitStatus.STORED
    assert when((*QUARANTINED, QuarantineLifted("qa-anna", "cleared")), reserve()) == [
        UnitReserved("order-1", HOLD)
    ]


def test_qa_discard_discards_the_unit_with_the_signed_meaning():
    events = when(QUARANTINED, qa(Disposition.DISCARD, meaning="warmed above -130"))
    assert events == [UnitDiscarded(HERE, "QA disposition: warmed above -130")]
    discarded = given(*QUARANTINED, *events)
    assert (discarded.status, discarded.address) == (UnitStatus.DISCARDED, "")


# ---- reserve --------------------------------------------------------------------------------


def test_reserve_records_order_and_hold():
    assert when(STORED, reserve()) == [UnitReserved("order-1", HOLD)]
    assert given(*RESERVED).active_reservation(NOW) == Reservation("order-1", HOLD)


@pytest.mark.parametrize("order_id", ["", "   "])
def test_reserve_needs_an_order(order_id):
    with pytest.raises(InvalidArgument) as refused:
        when(STORED, reserve(order_id=order_id))
    assert refused.value.field == "order_id"


@pytest.mark.parametrize("hold", [NOW, NOW - timedelta(seconds=1)], ids=["now", "past"])
def test_reserve_needs_a_hold_in_the_future(hold):
    with pytest.raises(InvalidArgument) as refused:
        when(STORED, reserve(hold=hold))
    assert refused.value.field == "hold_until"


def test_a_hold_reaches_no_further_than_the_sites_cap():
    cap = timedelta(hours=4)
    assert when(STORED, ReserveUnit("order-1", NOW + cap, NOW, cap)) == [
        UnitReserved("order-1", NOW + cap)
    ]
    with pytest.raises(InvalidArgument) as refused:
        when(STORED, ReserveUnit("order-1", NOW + cap + timedelta(seconds=1), NOW, cap))
    assert refused.value.field == "hold_until" and "14400 s ahead" in str(refused.value)


@pytest.mark.parametrize(
    ("history", "why"),
    [
        (QUARANTINED, "unit is quarantined"),
        (RECALLED, "unit is recalled"),
        (EXPIRED, "unit is expired: on 2027-03-01"),
        (PICKED, "unit not in stock: PICKED"),
        (DISCARDED, "unit not in stock: DISCARDED"),
    ],
    ids=["quarantined", "recalled", "expired", "picked", "discarded"],
)
def test_reserve_refused_naming_why_the_unit_is_unavailable(history, why):
    with pytest.raises(PreconditionFailed, match=why):
        when(history, reserve())


def test_reserve_refused_once_the_stability_limit_passed_even_before_expiry_is_recorded():
    day_after = datetime(2027, 3, 2, 0, 0, tzinfo=UTC)  # EXPIRES_ON has ended
    with pytest.raises(PreconditionFailed, match="unit is expired"):
        when(STORED, reserve(hold=day_after + timedelta(hours=1), now=day_after))


@pytest.mark.parametrize("hour", [0, 8, 23])
def test_a_unit_can_be_reserved_and_picked_all_of_its_expiry_day(hour):
    on_expiry_day = datetime(2027, 3, 1, hour, tzinfo=UTC)
    reserved = when(STORED, reserve(hold=on_expiry_day + timedelta(minutes=30), now=on_expiry_day))
    assert reserved == [UnitReserved("order-1", on_expiry_day + timedelta(minutes=30))]
    assert when((*STORED, *reserved), PickUnit("order-1", on_expiry_day)) == [
        UnitPicked("order-1", HERE)
    ]


def test_second_reservation_refused_naming_the_holder():
    with pytest.raises(PreconditionFailed, match="already reserved") as refused:
        when(RESERVED, reserve(order_id="order-2"))
    assert "order-1" in str(refused.value)


def test_same_reservation_asked_again_records_nothing():
    assert when(RESERVED, reserve()) == []


def test_the_same_order_renews_its_hold_with_a_later_one():
    later = HOLD + timedelta(hours=24)
    assert when(RESERVED, reserve(hold=later)) == [UnitReserved("order-1", later)]


def test_the_same_order_asking_for_a_shorter_hold_keeps_the_longer():
    assert when(RESERVED, reserve(hold=HOLD - timedelta(minutes=5))) == []


def test_lapsed_reservation_is_expired_then_replaced():
    later = HOLD + timedelta(minutes=1)
    new_hold = later + timedelta(hours=2)
    assert when(RESERVED, reserve("order-2", new_hold, now=later)) == [
        ReservationExpired("order-1", HOLD),
        UnitReserved("order-2", new_hold),
    ]


# ---- release and expiry of reservations -----------------------------------------------------


def test_release_reservation_by_its_order():
    assert when(RESERVED, ReleaseReservation("order-1")) == [
        ReservationReleased("order-1", "released by request")
    ]
    assert given(*RESERVED, ReservationReleased("order-1", "r")).reservation is None


@pytest.mark.parametrize("history", [RESERVED, STORED], ids=["other-order", "not-reserved"])
def test_release_reservation_for_another_order_refused(history):
    with pytest.raises(PreconditionFailed, match="no such reservation"):
        when(history, ReleaseReservation("order-2"))


@pytest.mark.parametrize("now", [NOW, HOLD - timedelta(microseconds=1)])
def test_reservation_does_not_expire_before_its_hold(now):
    assert when(RESERVED, ExpireReservation(now)) == []


@pytest.mark.parametrize("now", [HOLD, HOLD + timedelta(days=3)], ids=["at", "after"])
def test_reservation_expires_once_its_hold_passed(now):
    assert when(RESERVED, ExpireReservation(now)) == [ReservationExpired("order-1", HOLD)]


def test_reservation_expired_twice_records_nothing():
    expired = (*RESERVED, ReservationExpired("order-1", HOLD))
    assert when(expired, ExpireReservation(HOLD + timedelta(hours=1))) == []
    assert when(STORED, ExpireReservation(HOLD)) == []


# ---- unit expiry ----------------------------------------------------------------------------


@pytest.mark.parametrize("today", [EXPIRES_ON - timedelta(days=1), EXPIRES_ON])
def test_unit_not_expired_until_its_expiry_day_has_ended(today):
    assert when(STORED, ExpireUnit(today)) == []


@pytest.mark.parametrize("today", [EXPIRES_ON + timedelta(days=1), EXPIRES_ON + timedelta(days=10)])
def test_unit_expires_the_day_after_its_expiry_date(today):
    assert when(STORED, ExpireUnit(today)) == [UnitExpired(EXPIRES_ON)]
    assert given(*EXPIRED).status is UnitStatus.EXPIRED


def test_expiry_releases_the_reservation():
    assert when(RESERVED, ExpireUnit(EXPIRES_ON + timedelta(days=1))) == [
        ReservationReleased("order-1", "expired"),
        UnitExpired(EXPIRES_ON),
    ]


@pytest.mark.parametrize(
    "history",
    [EXPIRED, PICKED, DISCARDED, QUARANTINED],
    ids=["expired", "picked", "discarded", "quarantined-keeps-its-pending-disposition"],
)
def test_expiry_records_nothing_for_units_expired_or_gone(history):
    assert when(history, ExpireUnit(EXPIRES_ON + timedelta(days=1))) == []


# ---- pick, discard, recall ------------------------------------------------------------------


def test_pick_with_the_orders_active_reservation():
    assert when(RESERVED, PickUnit("order-1", NOW)) == [UnitPicked("order-1", HERE)]
    picked = given(*PICKED)
    assert (picked.status, picked.address, picked.reservation) == (UnitStatus.PICKED, "", None)


@pytest.mark.parametrize(
    ("history", "order_id", "now"),
    [
        (STORED, "order-1", NOW),
        (RESERVED, "order-2", NOW),
        (RESERVED, "order-1", HOLD),  # the hold has lapsed
    ],
    ids=["unreserved", "other-order", "lapsed"],
)
def test_pick_needs_the_orders_active_reservation(history, order_id, now):
    with pytest.raises(PreconditionFailed, match="active reservation"):
        when(history, PickUnit(order_id, now))


def test_pick_refused_for_a_unit_another_order_picked():
    with pytest.raises(PreconditionFailed, match="not in stock"):
        when(PICKED, PickUnit("order-2", NOW))


def test_a_retried_pick_for_the_same_order_records_nothing():
    assert when(PICKED, PickUnit("order-1", NOW)) == []


@pytest.mark.parametrize("why", ["", "   "])
def test_discard_needs_a_reason(why):
    with pytest.raises(InvalidArgument) as refused:
        when(STORED, DiscardUnit(why))
    assert refused.value.field == "why"


def test_discard_records_where_from_and_why_and_releases_the_reservation():
    assert when(RESERVED, DiscardUnit("bag damaged")) == [
        ReservationReleased("order-1", "discarded"),
        UnitDiscarded(HERE, "bag damaged"),
    ]


@pytest.mark.parametrize("history", [PICKED, DISCARDED], ids=["picked", "discarded"])
def test_discard_refused_for_a_unit_already_gone(history):
    with pytest.raises(PreconditionFailed, match="already gone"):
        when(history, DiscardUnit("bag damaged"))


def test_recall_holds_the_unit_back_and_releases_the_reservation():
    assert when(RESERVED, RecallUnit("recall-1", "donor positive")) == [
        ReservationReleased("order-1", "recalled"),
        UnitRecalled("recall-1", "donor positive"),
    ]
    assert given(*RECALLED).status is UnitStatus.RECALLED


def test_recall_twice_records_nothing():
    assert when(RECALLED, RecallUnit("recall-1", "donor positive")) == []


@pytest.mark.parametrize("history", [PICKED, DISCARDED], ids=["picked", "discarded"])
def test_recall_of_a_unit_gone_from_stock_records_nothing_here(history):
    assert when(history, RecallUnit("recall-1", "donor positive")) == []
