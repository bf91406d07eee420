"""Order aggregate: given events → when command → then events or refusal."""

from __future__ import annotations

import dataclasses
import functools
import typing
from datetime import datetime, timedelta

import pytest

from services.matching.domain.model import (
    AdverseEventReported,
    AllocatedUnit,
    AllocationLost,
    CancelOrder,
    LoseAllocation,
    Order,
    OrderAllocated,
    OrderCancelled,
    OrderCommand,
    OrderDelivered,
    OrderDispatched,
    OrderEvent,
    OrderInfused,
    OrderPlaced,
    OrderReceived,
    OrderRejected,
    OrderShipmentCompromised,
    OrderShipmentDispositioned,
    OrderShipmentReturned,
    OrderStatus,
    PlaceOrder,
    ProductCategory,
    RecordAllocation,
    RejectOrder,
    Signature,
)
from services.matching.domain.order import decide, evolve
from services.matching.tests.builders import NOW, TABLE, patient
from shared.errors import InvalidArgument, NotFound, PreconditionFailed

VERSION = TABLE.version
HOSPITAL = "H1"
PLACE = OrderPlaced(
    hospital_id=HOSPITAL,
    request_id="req-1",
    patient=patient(),
    product_type=ProductCategory.NK,
    dose_min=5e6,
    dose_max=3e7,
    needed_by=NOW + timedelta(days=2),
)
PLACE_SEVERAL = dataclasses.replace(PLACE, request_id="req-2", allow_multiple_units=True)
UNIT_1 = AllocatedUnit("unit-1", "G123426000001", "LON", 1e7, 3, 55.0, ("dose ok",))
UNIT_2 = AllocatedUnit("unit-2", "G123426000002", "MAN", 1.2e7, 1, 41.5, ("dose ok",))

PLACED: tuple[OrderEvent, ...] = (PLACE,)
ALLOCATED = (*PLACED, OrderAllocated((UNIT_1,), VERSION))
REJECTED = (*PLACED, OrderRejected("no suitable NK unit", VERSION))
CANCELLED = (*PLACED, OrderCancelled("patient condition changed"))
CANCELLED_ALLOCATED = (*ALLOCATED, OrderCancelled("patient condition changed"))
LOST = (*ALLOCATED, AllocationLost("unit-1", "quarantined"))
REALLOCATED = (*LOST, OrderAllocated((UNIT_2,), VERSION))

HISTORIES = {
    "placed": PLACED,
    "allocated": ALLOCATED,
    "rejected": REJECTED,
    "cancelled": CANCELLED,
    "cancelled after allocation": CANCELLED_ALLOCATED,
    "lost": LOST,
    "reallocated": REALLOCATED,
}


def given(*events: OrderEvent) -> Order:
    return functools.reduce(evolve, events, Order())


def when(events: tuple[OrderEvent, ...], command: OrderCommand) -> list[OrderEvent]:
    return list(decide(given(*events), command))


def place(placed: OrderPlaced = PLACE, now: datetime = NOW) -> PlaceOrder:
    return PlaceOrder(placed, now)


def cancel(reason: str = "patient condition changed", hospital: str = HOSPITAL) -> CancelOrder:
    return CancelOrder(reason, hospital)


# ---- place ----------------------------------------------------------------------------------


def test_place_records_the_order():
    assert when((), place()) == [PLACE]
    order = given(*PLACED)
    assert (order.status, order.placed, order.units, order.live) == (
        OrderStatus.PLACED, PLACE, (), True,
    )  # fmt: skip


def test_a_new_order_is_not_live():
    assert given().status is OrderStatus.NONE
    assert not given().live


@pytest.mark.parametrize("history", HISTORIES.values(), ids=HISTORIES.keys())
def test_the_same_request_again_records_nothing_whatever_became_of_the_order(history):
    assert when(history, place(now=NOW + timedelta(hours=5))) == []


@pytest.mark.parametrize(
    "changes",
    [
        {"dose_max": 2e7},
        {"patient": patient(weight_kg=71.0)},
        {"product_type": ProductCategory.CAR_NK},
        {"needed_by": None},
        {"hospital_id": "H2"},
        {"allow_multiple_units": True},
    ],
    ids=["dose", "patient", "product", "needed_by", "hospital", "several units"],
)
def test_the_same_request_id_with_different_content_is_refused(changes):
    other = dataclasses.replace(PLACE, **changes)
    with pytest.raises(PreconditionFailed, match="request_id already used") as e:
        when(PLACED, place(other))
    assert e.value.rule == "request_id already used"
    assert "req-1" in str(e.value)


@pytest.mark.parametrize(
    "command",
    [
        RecordAllocation((UNIT_1,), VERSION),
        RejectOrder("none", VERSION),
        cancel(),
        LoseAllocation("unit-1", "gone"),
    ],
    ids=lambda c: type(c).__name__,
)
def test_commands_for_an_order_never_placed_are_not_found(command):
    with pytest.raises(NotFound):
        when((), command)


# ---- record allocation ----------------------------------------------------------------------


def test_record_allocation_of_a_placed_order_allocates_it():
    assert when(PLACED, RecordAllocation((UNIT_1,), VERSION)) == [
        OrderAllocated((UNIT_1,), VERSION)
    ]
    order = given(*ALLOCATED)
    assert (order.status, order.units) == (OrderStatus.ALLOCATED, (UNIT_1,))
    assert order.holds("unit-1") and not order.holds("unit-2")


def test_an_order_is_for_one_unit_unless_it_allows_several():
    assert PLACE.allow_multiple_units is False  # the default, and what older events decode to
    with pytest.raises(PreconditionFailed, match="one unit ordered"):
        when(PLACED, RecordAllocation((UNIT_1, UNIT_2), VERSION))


def test_an_order_allowing_several_units_allocates_them_all():
    assert when((PLACE_SEVERAL,), RecordAllocation((UNIT_1, UNIT_2), VERSION)) == [
        OrderAllocated((UNIT_1, UNIT_2), VERSION)
    ]
    order = given(PLACE_SEVERAL, OrderAllocated((UNIT_1, UNIT_2), VERSION))
    assert order.status is OrderStatus.ALLOCATED
    assert order.units == (UNIT_1, UNIT_2)
    assert order.classification_version == VERSION
    assert order.holds("unit-1") and order.holds("unit-2") and not order.holds("unit-3")


def test_recording_the_same_allocation_again_records_nothing():
    assert when(ALLOCATED, RecordAllocation((UNIT_1,), VERSION)) == []


def test_recording_another_allocation_over_an_allocated_order_is_refused():
    with pytest.raises(PreconditionFailed, match="order not awaiting allocation: ALLOCATED"):
        when(ALLOCATED, RecordAllocation((UNIT_2,), VERSION))


@pytest.mark.parametrize(
    ("history", "status"),
    [(CANCELLED, "CANCELLED"), (CANCELLED_ALLOCATED, "CANCELLED"), (REJECTED, "REJECTED")],
    ids=["cancelled", "cancelled after allocation", "rejected"],
)
def test_record_allocation_only_while_placed(history, status):
    with pytest.raises(PreconditionFailed, match=f"order not awaiting allocation: {status}"):
        when(history, RecordAllocation((UNIT_1,), VERSION))


def test_an_allocation_names_at_least_one_unit():
    with pytest.raises(InvalidArgument) as e:
        when(PLACED, RecordAllocation((), VERSION))
    assert e.value.field == "units"


def test_an_allocation_names_a_unit_once():
    with pytest.raises(InvalidArgument, match="named twice"):
        when((PLACE_SEVERAL,), RecordAllocation((UNIT_1, UNIT_1), VERSION))


def test_an_order_that_lost_its_unit_can_be_allocated_again():
    assert when(LOST, RecordAllocation((UNIT_2,), VERSION)) == [OrderAllocated((UNIT_2,), VERSION)]
    order = given(*REALLOCATED)
    assert (order.status, order.units, order.status_reason) == (
        OrderStatus.ALLOCATED, (UNIT_2,), "",
    )  # fmt: skip
    assert order.released == (UNIT_1,)


# ---- reject ---------------------------------------------------------------------------------


def test_reject_a_placed_order_records_why_and_the_table_version():
    assert when(PLACED, RejectOrder("no suitable NK unit", VERSION)) == [
        OrderRejected("no suitable NK unit", VERSION)
    ]
    order = given(*REJECTED)
    assert order.status is OrderStatus.REJECTED
    assert (order.status_reason, order.classification_version) == ("no suitable NK unit", VERSION)
    assert not order.live


def test_reject_twice_records_nothing():
    assert when(REJECTED, RejectOrder("again", VERSION)) == []


@pytest.mark.parametrize(
    "history", [ALLOCATED, CANCELLED], ids=["allocated", "cancelled"]
)  # fmt: skip
def test_reject_only_while_placed(history):
    with pytest.raises(PreconditionFailed, match="order not awaiting allocation"):
        when(history, RejectOrder("no unit", VERSION))


# ---- cancel ---------------------------------------------------------------------------------


@pytest.mark.parametrize("history", [PLACED, ALLOCATED, LOST], ids=["placed", "allocated", "lost"])
def test_a_live_order_can_be_cancelled_with_a_reason(history):
    assert when(history, cancel("  patient condition changed ")) == [
        OrderCancelled("patient condition changed")
    ]


def test_cancelling_an_order_of_several_units_releases_them_all():
    order = given(PLACE_SEVERAL, OrderAllocated((UNIT_1, UNIT_2), VERSION), OrderCancelled("x"))
    assert order.released == (UNIT_1, UNIT_2)
    assert not order.holds("unit-1") and not order.holds("unit-2")


def test_cancelling_an_allocated_order_releases_its_units():
    order = given(*CANCELLED_ALLOCATED)
    assert order.status is OrderStatus.CANCELLED
    assert order.status_reason == "patient condition changed"
    assert order.released == (UNIT_1,)
    assert not order.live and not order.holds("unit-1")


@pytest.mark.parametrize("history", [PLACED, CANCELLED], ids=["placed", "cancelled"])
def test_cancel_by_another_hospital_is_not_found(history):
    with pytest.raises(NotFound):
        when(history, cancel(hospital="H2"))


@pytest.mark.parametrize("reason", ["", "   "])
def test_cancel_needs_a_reason(reason):
    with pytest.raises(InvalidArgument) as e:
        when(PLACED, cancel(reason))
    assert e.value.field == "reason"


def test_cancel_twice_records_nothing():
    assert when(CANCELLED, cancel("another reason")) == []


def test_a_rejected_order_can_no_longer_be_cancelled():
    with pytest.raises(PreconditionFailed, match="order can no longer be cancelled: REJECTED"):
        when(REJECTED, cancel())


# ---- lose allocation ------------------------------------------------------------------------


def test_losing_the_allocated_unit_sends_the_order_back_to_allocation():
    assert when(ALLOCATED, LoseAllocation("unit-1", "quarantined")) == [
        AllocationLost("unit-1", "quarantined")
    ]
    order = given(*LOST)
    assert order.status is OrderStatus.PLACED
    assert order.units == ()
    assert order.released == (UNIT_1,)
    assert "unit-1" in order.status_reason and "quarantined" in order.status_reason
    assert order.live and not order.holds("unit-1")


def test_losing_one_of_two_units_keeps_the_other_and_releases_the_lost_one():
    order = given(*PLACED, OrderAllocated((UNIT_1, UNIT_2), VERSION), AllocationLost("unit-2", "x"))
    assert (order.status, order.units, order.released) == (
        OrderStatus.PLACED, (UNIT_1,), (UNIT_2,),
    )  # fmt: skip
    assert order.holds("unit-1")  # kept while allocation runs again; the saga may reuse it


def test_rejecting_an_order_that_kept_a_unit_releases_it():
    order = given(
        PLACE_SEVERAL,
        OrderAllocated((UNIT_1, UNIT_2), VERSION),
        AllocationLost("unit-2", "quarantined"),
        OrderRejected("no other unit makes the dose", VERSION),
    )
    assert (order.status, order.units, order.released) == (
        OrderStatus.REJECTED, (), (UNIT_2, UNIT_1),
    )  # fmt: skip
    assert not order.holds("unit-1")


def test_losing_the_same_unit_again_records_nothing():
    assert when(LOST, LoseAllocation("unit-1", "quarantined")) == []


@pytest.mark.parametrize(
    "history",
    [PLACED, REJECTED, CANCELLED_ALLOCATED, ALLOCATED],
    ids=["placed", "rejected", "cancelled", "allocated another unit"],
)
def test_losing_a_unit_the_order_does_not_hold_records_nothing(history):
    assert when(history, LoseAllocation("unit-9", "gone")) == []
    if history is CANCELLED_ALLOCATED:
        assert when(history, LoseAllocation("unit-1", "gone")) == []


# ---- evolve is total ------------------------------------------------------------------------

SAMPLES: dict[type, OrderEvent] = {
    OrderPlaced: PLACE,
    OrderAllocated: OrderAllocated((UNIT_1,), VERSION),
    OrderRejected: OrderRejected("none", VERSION),
    OrderCancelled: OrderCancelled("why"),
    AllocationLost: AllocationLost("unit-1", "why"),
    OrderDispatched: OrderDispatched("SHP-1", NOW),
    OrderDelivered: OrderDelivered("SHP-1", NOW),
    OrderShipmentCompromised: OrderShipmentCompromised("SHP-1", "excursion"),
    OrderShipmentDispositioned: OrderShipmentDispositioned("SHP-1", "ACCEPT"),
    OrderShipmentReturned: OrderShipmentReturned("SHP-1", "RETURNED"),
    OrderReceived: OrderReceived(Signature("dr-lee", "received", NOW)),
    OrderInfused: OrderInfused("unit-1", Signature("dr-lee", "infused", NOW), 3600.0),
    AdverseEventReported: AdverseEventReported("ae-1", "unit-1", "rash", "MILD", NOW),
}


def test_the_samples_cover_every_event_type():
    assert set(SAMPLES) == set(typing.get_args(OrderEvent))


@pytest.mark.parametrize("event", SAMPLES.values(), ids=lambda e: type(e).__name__)
@pytest.mark.parametrize("history", [(), *HISTORIES.values()], ids=["new", *HISTORIES])
def test_evolve_applies_every_event_type_in_any_state(history, event):
    assert isinstance(evolve(given(*history), event), Order)


def test_evolve_refuses_what_is_not_an_order_event():
    with pytest.raises(TypeError, match="unknown event"):
        evolve(Order(), typing.cast(typing.Any, UNIT_1))


def test_decide_refuses_what_is_not_an_order_command():
    with pytest.raises(TypeError, match="unknown command"):
        decide(given(*PLACED), typing.cast(typing.Any, UNIT_1))


def test_replaying_decided_events_rebuilds_the_state():
    commands: list[OrderCommand] = [
        place(),
        RecordAllocation((UNIT_1,), VERSION),
        LoseAllocation("unit-1", "quarantined"),
        RecordAllocation((UNIT_2,), VERSION),
        cancel(),
    ]
    state, history = Order(), list[OrderEvent]()
    for command in commands:
        for event in decide(state, command):
            state = evolve(state, event)
            history.append(event)
    assert given(*history) == state
    assert state.status is OrderStatus.CANCELLED
    assert state.released == (UNIT_1, UNIT_2)
