"""Order delivery lifecycle and recall notifications: given events → when command → then."""

from __future__ import annotations

import dataclasses
import functools
import typing
from datetime import timedelta

import pytest

from services.matching.adapters.codec import CODEC
from services.matching.domain.model import (
    AcknowledgeNotification,
    AdverseEventReported,
    ConfirmInfusion,
    ConfirmReceipt,
    IssueNotification,
    Notification,
    NotificationAcknowledged,
    NotificationCommand,
    NotificationEvent,
    NotificationIssued,
    OrderAllocated,
    OrderCommand,
    OrderDelivered,
    OrderDispatched,
    OrderEvent,
    OrderInfused,
    OrderReceived,
    OrderShipmentCompromised,
    OrderShipmentDispositioned,
    OrderShipmentReturned,
    OrderStatus,
    RecordShipment,
    ReportAdverseEvent,
    Signature,
)
from services.matching.domain.order import decide_notification, evolve_notification
from services.matching.tests.builders import NOW
from services.matching.tests.test_order import (
    ALLOCATED,
    CANCELLED,
    CANCELLED_ALLOCATED,
    HOSPITAL,
    LOST,
    PLACED,
    REJECTED,
    UNIT_1,
    UNIT_2,
    VERSION,
    given,
    when,
)
from shared.errors import InvalidArgument, NotFound, PreconditionFailed

SHIPMENT = "SHP-1"
CAUSE = "excursion:LON-DS-04:2026-06-01T10:00:00+00:00"
RECEIPT = Signature("Dr Lee", "received intact, seal unbroken", NOW + timedelta(hours=5))
INFUSION = Signature("Dr Lee", "thawed and infused", NOW + timedelta(hours=7))
SECONDS = 9 * 3600.0

DISPATCHED_EVENT = OrderDispatched(SHIPMENT, NOW + timedelta(hours=1))
DELIVERED_EVENT = OrderDelivered(SHIPMENT, NOW + timedelta(hours=4))
COMPROMISED_EVENT = OrderShipmentCompromised(SHIPMENT, CAUSE)
INFUSED_EVENT = OrderInfused("unit-1", INFUSION, SECONDS)

DISPATCHED = (*ALLOCATED, DISPATCHED_EVENT)
DELIVERED = (*DISPATCHED, DELIVERED_EVENT)
RECEIVED = (*DELIVERED, OrderReceived(RECEIPT))
INFUSED = (*RECEIVED, INFUSED_EVENT)
COMPROMISED = (*DELIVERED, COMPROMISED_EVENT)
COMPROMISED_RECEIVED = (*COMPROMISED, OrderReceived(RECEIPT))
QA_ACCEPTED = (*COMPROMISED_RECEIVED, OrderShipmentDispositioned(SHIPMENT, "ACCEPT"))
QA_REJECTED = (*COMPROMISED_RECEIVED, OrderShipmentDispositioned(SHIPMENT, "REJECT"))
TWO_UNITS_RECEIVED = (
    *PLACED,
    OrderAllocated((UNIT_1, UNIT_2), VERSION),
    DISPATCHED_EVENT,
    DELIVERED_EVENT,
    OrderReceived(RECEIPT),
)
RETURNED = (*DELIVERED, OrderShipmentReturned(SHIPMENT, "RETURNED"))
DISCARDED = (*DELIVERED, OrderShipmentReturned(SHIPMENT, "DISCARDED"))

BEFORE_DISPATCH = {
    "placed": PLACED,
    "allocated": ALLOCATED,
    "rejected": REJECTED,
    "cancelled": CANCELLED,
    "cancelled after allocation": CANCELLED_ALLOCATED,
    "lost": LOST,
}
AFTER_DISPATCH = {
    "dispatched": DISPATCHED,
    "delivered": DELIVERED,
    "received": RECEIVED,
    "infused": INFUSED,
    "compromised": COMPROMISED,
    "accepted by QA": QA_ACCEPTED,
    "rejected by QA": QA_REJECTED,
}
HISTORIES = {**BEFORE_DISPATCH, **AFTER_DISPATCH}


def except_(*names: str) -> dict[str, tuple[OrderEvent, ...]]:
    return {name: h for name, h in HISTORIES.items() if name not in names}


def receive(hospital: str = HOSPITAL, meaning: str = RECEIPT.meaning) -> ConfirmReceipt:
    return ConfirmReceipt(hospital, dataclasses.replace(RECEIPT, meaning=meaning))


def infuse(
    unit_id: str = "unit-1", hospital: str = HOSPITAL, meaning: str = INFUSION.meaning
) -> ConfirmInfusion:
    return ConfirmInfusion(
        hospital, unit_id, dataclasses.replace(INFUSION, meaning=meaning), SECONDS
    )


def adverse(
    report_id: str = "ae-1",
    unit_id: str = "unit-1",
    description: str = "fever 39.2 °C two hours after infusion",
    hospital: str = HOSPITAL,
) -> ReportAdverseEvent:
    report = AdverseEventReported(
        report_id, unit_id, description, "MODERATE", NOW + timedelta(hours=9)
    )
    return ReportAdverseEvent(hospital, report)


def refused_field(events: tuple[OrderEvent, ...], command: OrderCommand) -> str:
    with pytest.raises(InvalidArgument) as refused:
        when(events, command)
    return refused.value.field


# ---- facts reported by the shipment ---------------------------------------------------------


def test_dispatch_of_an_allocated_order_records_its_shipment():
    assert when(ALLOCATED, RecordShipment(DISPATCHED_EVENT)) == [DISPATCHED_EVENT]
    order = given(*DISPATCHED)
    assert (order.status, order.shipment_id, order.live) == (
        OrderStatus.DISPATCHED, SHIPMENT, False,
    )  # fmt: skip


@pytest.mark.parametrize(
    "history", except_("allocated").values(), ids=except_("allocated").keys()
)  # fmt: skip
def test_dispatch_is_recorded_only_for_an_allocated_order(history):
    assert when(history, RecordShipment(DISPATCHED_EVENT)) == []


@pytest.mark.parametrize("history", [ALLOCATED, DISPATCHED], ids=["allocated", "dispatched"])
def test_delivery_is_recorded_for_an_allocated_or_dispatched_order(history):
    assert when(history, RecordShipment(DELIVERED_EVENT)) == [DELIVERED_EVENT]
    order = given(*history, DELIVERED_EVENT)
    assert (order.status, order.shipment_id) == (OrderStatus.DELIVERED, SHIPMENT)


@pytest.mark.parametrize(
    "history",
    except_("allocated", "dispatched").values(),
    ids=except_("allocated", "dispatched").keys(),
)
def test_delivery_is_not_recorded_in_any_other_state(history):
    assert when(history, RecordShipment(DELIVERED_EVENT)) == []


@pytest.mark.parametrize(
    "history", [DISPATCHED, DELIVERED, RECEIVED], ids=["dispatched", "delivered", "received"]
)
def test_a_compromised_shipment_holds_the_order_back_from_infusion(history):
    assert when(history, RecordShipment(COMPROMISED_EVENT)) == [COMPROMISED_EVENT]
    order = given(*history, COMPROMISED_EVENT)
    assert order.compromised and not order.cleared_for_infusion
    assert order.status_reason == f"shipment {SHIPMENT} compromised: {CAUSE}"


def test_a_compromise_is_recorded_once():
    other = OrderShipmentCompromised(SHIPMENT, "silence:LON-DS-04")
    assert when(COMPROMISED, RecordShipment(COMPROMISED_EVENT)) == []
    assert when(COMPROMISED, RecordShipment(other)) == []
    assert when(QA_ACCEPTED, RecordShipment(other)) == []


@pytest.mark.parametrize("decision", ["ACCEPT", "REJECT"])
def test_a_disposition_of_a_compromised_shipment_is_recorded(decision):
    event = OrderShipmentDispositioned(SHIPMENT, decision)
    assert when(COMPROMISED, RecordShipment(event)) == [event]
    order = given(*COMPROMISED, event)
    assert (order.disposition, order.cleared_for_infusion) == (decision, decision == "ACCEPT")
    assert order.status_reason == f"QA disposition: {decision}"


@pytest.mark.parametrize("history", [DELIVERED, RECEIVED], ids=["delivered", "received"])
def test_a_disposition_of_a_shipment_never_compromised_is_not_recorded(history):
    assert when(history, RecordShipment(OrderShipmentDispositioned(SHIPMENT, "ACCEPT"))) == []


@pytest.mark.parametrize("decision", ["ACCEPT", "REJECT"])
@pytest.mark.parametrize("history", [QA_ACCEPTED, QA_REJECTED], ids=["accepted", "rejected"])
def test_a_disposition_is_recorded_once(history, decision):
    assert when(history, RecordShipment(OrderShipmentDispositioned(SHIPMENT, decision))) == []


@pytest.mark.parametrize("decision", ["", "accept", "MAYBE"])
def test_a_disposition_other_than_accept_or_reject_is_not_recorded(decision):
    assert when(COMPROMISED, RecordShipment(OrderShipmentDispositioned(SHIPMENT, decision))) == []


@pytest.mark.parametrize("outcome", ["RETURNED", "DISCARDED"])
@pytest.mark.parametrize(
    "history", [DISPATCHED, DELIVERED, QA_REJECTED], ids=["dispatched", "delivered", "rejected"]
)
def test_a_return_is_recorded_with_its_outcome(history, outcome):
    event = OrderShipmentReturned(SHIPMENT, outcome)
    assert when(history, RecordShipment(event)) == [event]
    assert given(*history, event).status_reason == f"shipment {SHIPMENT} {outcome.lower()}"


def test_a_return_of_an_infused_order_is_not_recorded():
    assert when(INFUSED, RecordShipment(OrderShipmentReturned(SHIPMENT, "RETURNED"))) == []


def test_a_return_is_recorded_once():
    assert when(RETURNED, RecordShipment(OrderShipmentReturned(SHIPMENT, "RETURNED"))) == []


def test_shipment_facts_for_an_order_never_placed_are_not_found():
    with pytest.raises(NotFound):
        when((), RecordShipment(DISPATCHED_EVENT))


# ---- receipt --------------------------------------------------------------------------------


def test_receipt_of_a_delivered_order_records_the_signature():
    assert when(DELIVERED, receive()) == [OrderReceived(RECEIPT)]
    order = given(*RECEIVED)
    assert (order.status, order.received) == (OrderStatus.RECEIVED, OrderReceived(RECEIPT))


def test_a_compromised_order_may_still_be_received():
    assert when(COMPROMISED, receive()) == [OrderReceived(RECEIPT)]


@pytest.mark.parametrize(
    "history", [DELIVERED, RECEIVED, PLACED], ids=["delivered", "received", "placed"]
)
def test_receipt_by_another_hospital_is_not_found(history):
    with pytest.raises(NotFound):
        when(history, receive(hospital="H2"))


@pytest.mark.parametrize("meaning", ["", "   "])
def test_receipt_needs_the_meaning_of_the_signature(meaning):
    assert refused_field(DELIVERED, receive(meaning=meaning)) == "signature.meaning"


@pytest.mark.parametrize("history", [RECEIVED, INFUSED], ids=["received", "infused"])
def test_receipt_confirmed_again_records_nothing(history):
    assert when(history, receive()) == []


NOT_DELIVERED = {**BEFORE_DISPATCH, "dispatched": DISPATCHED}


@pytest.mark.parametrize("history", NOT_DELIVERED.values(), ids=NOT_DELIVERED.keys())
def test_receipt_only_after_delivery(history):
    with pytest.raises(PreconditionFailed, match="order not delivered") as refused:
        when(history, receive())
    assert given(*history).status.value in str(refused.value)


def test_receipt_of_an_order_never_placed_is_not_found():
    with pytest.raises(NotFound):
        when((), receive())


# ---- infusion -------------------------------------------------------------------------------


def test_infusion_of_a_received_unit_records_the_signature_and_time():
    assert when(RECEIVED, infuse()) == [INFUSED_EVENT]
    order = given(*INFUSED)
    assert (order.status, order.infused) == (OrderStatus.INFUSED, (INFUSED_EVENT,))


@pytest.mark.parametrize("unit_id", ["unit-2", "", "UNIT-1"])
def test_infusion_of_a_unit_not_of_the_order_names_the_unit(unit_id):
    assert refused_field(RECEIVED, infuse(unit_id)) == "unit_id"


def test_infusion_of_a_unit_the_order_gave_back_names_the_unit():
    history = (*LOST, OrderAllocated((UNIT_2,), VERSION), DISPATCHED_EVENT, DELIVERED_EVENT)
    assert refused_field((*history, OrderReceived(RECEIPT)), infuse("unit-1")) == "unit_id"


def test_infusion_by_another_hospital_is_not_found():
    with pytest.raises(NotFound):
        when(RECEIVED, infuse(hospital="H2"))


@pytest.mark.parametrize("meaning", ["", "   "])
def test_infusion_needs_the_meaning_of_the_signature(meaning):
    assert refused_field(RECEIVED, infuse(meaning=meaning)) == "signature.meaning"


@pytest.mark.parametrize(
    "history",
    [ALLOCATED, DISPATCHED, DELIVERED, CANCELLED_ALLOCATED],
    ids=["allocated", "dispatched", "delivered", "cancelled"],
)
def test_infusion_only_after_receipt(history):
    with pytest.raises(PreconditionFailed, match="order not received"):
        when(history, infuse())


def test_infusion_refused_while_the_shipment_is_compromised_without_disposition():
    with pytest.raises(PreconditionFailed, match="shipment compromised") as refused:
        when(COMPROMISED_RECEIVED, infuse())
    assert "QA rejected" not in str(refused.value)


def test_infusion_refused_once_qa_rejected_the_compromised_shipment():
    with pytest.raises(PreconditionFailed, match=r"shipment compromised: .* — QA rejected it"):
        when(QA_REJECTED, infuse())


def test_infusion_allowed_once_qa_accepted_the_compromised_shipment():
    assert when(QA_ACCEPTED, infuse()) == [INFUSED_EVENT]


def test_infusion_confirmed_again_for_the_same_unit_records_nothing():
    assert when(INFUSED, infuse()) == []


def test_each_unit_of_a_two_unit_order_can_be_infused():
    first = when(TWO_UNITS_RECEIVED, infuse("unit-1"))
    assert when((*TWO_UNITS_RECEIVED, *first), infuse("unit-2")) == [
        OrderInfused("unit-2", INFUSION, SECONDS)
    ]


@pytest.mark.parametrize("history", [RETURNED, DISCARDED], ids=["returned", "discarded"])
def test_a_unit_whose_shipment_was_returned_or_discarded_cannot_be_infused(history):
    received = (*history, *when(history, receive()))
    with pytest.raises(PreconditionFailed):
        when(received, infuse())


# ---- adverse events -------------------------------------------------------------------------


def test_an_adverse_event_of_an_infused_unit_is_recorded():
    command = adverse()
    assert when(INFUSED, command) == [command.report]
    assert given(*INFUSED, command.report).adverse_events == (command.report,)


@pytest.mark.parametrize("description", ["", "   "])
def test_an_adverse_event_needs_a_description(description):
    assert refused_field(INFUSED, adverse(description=description)) == "description"


@pytest.mark.parametrize(
    ("history", "unit_id"),
    [(RECEIVED, "unit-1"), (INFUSED, "unit-2"), (ALLOCATED, "unit-1")],
    ids=["received", "another unit", "allocated"],
)
def test_an_adverse_event_only_for_an_infused_unit(history, unit_id):
    with pytest.raises(PreconditionFailed, match="no infused unit"):
        when(history, adverse(unit_id=unit_id))


def test_the_same_report_again_records_nothing():
    reported = (*INFUSED, adverse().report)
    assert when(reported, adverse()) == []


def test_a_second_report_for_the_same_unit_is_recorded():
    reported = (*INFUSED, adverse().report)
    assert when(reported, adverse("ae-2")) == [adverse("ae-2").report]


def test_an_adverse_event_reported_by_another_hospital_is_not_found():
    with pytest.raises(NotFound):
        when(INFUSED, adverse(hospital="H2"))


# ---- the whole delivery lifecycle -----------------------------------------------------------


def test_replaying_the_decided_delivery_lifecycle_rebuilds_the_state_also_through_the_codec() -> (
    None
):
    commands: list[OrderCommand] = [
        RecordShipment(DISPATCHED_EVENT),
        RecordShipment(DELIVERED_EVENT),
        RecordShipment(COMPROMISED_EVENT),
        receive(),
        RecordShipment(OrderShipmentDispositioned(SHIPMENT, "ACCEPT")),
        infuse(),
        adverse(),
        adverse(),  # retried
    ]
    history = list(ALLOCATED)
    for command in commands:
        history.extend(when(tuple(history), command))
    state = given(*history)
    assert (state.status, state.disposition, len(state.adverse_events)) == (
        OrderStatus.INFUSED, "ACCEPT", 1,
    )  # fmt: skip
    assert given(*(CODEC.decode(*CODEC.encode(e)) for e in history)) == state


# ---- notifications --------------------------------------------------------------------------

ISSUED = NotificationIssued(
    hospital_id=HOSPITAL,
    recall_id="RCL-1",
    order_id="order-1",
    unit_ids=("unit-1",),
    message="unit-1 is recalled: donor positive at follow-up",
)
NOTIFIED: tuple[NotificationEvent, ...] = (ISSUED,)
ACKNOWLEDGED = (*NOTIFIED, NotificationAcknowledged("Dr Lee"))


def notified(*events: NotificationEvent) -> Notification:
    return functools.reduce(evolve_notification, events, Notification())


def tell(
    events: tuple[NotificationEvent, ...], command: NotificationCommand
) -> list[NotificationEvent]:
    return list(decide_notification(notified(*events), command))


def test_issue_a_notification():
    assert tell((), IssueNotification(ISSUED)) == [ISSUED]
    assert notified(*NOTIFIED) == Notification(issued=ISSUED, acknowledged_by="")


@pytest.mark.parametrize("history", [NOTIFIED, ACKNOWLEDGED], ids=["issued", "acknowledged"])
def test_issue_once(history):
    assert tell(history, IssueNotification(dataclasses.replace(ISSUED, message="again"))) == []


def test_acknowledge_records_who():
    assert tell(NOTIFIED, AcknowledgeNotification(HOSPITAL, "Dr Lee")) == [
        NotificationAcknowledged("Dr Lee")
    ]
    assert notified(*ACKNOWLEDGED).acknowledged_by == "Dr Lee"


@pytest.mark.parametrize(
    ("history", "hospital"),
    [((), HOSPITAL), (NOTIFIED, "H2"), (ACKNOWLEDGED, "H2")],
    ids=["never issued", "another hospital", "another hospital after acknowledgment"],
)
def test_acknowledge_only_by_the_notified_hospital(history, hospital):
    with pytest.raises(NotFound):
        tell(history, AcknowledgeNotification(hospital, "Dr Who"))


def test_acknowledge_once():
    assert tell(ACKNOWLEDGED, AcknowledgeNotification(HOSPITAL, "Nurse Kim")) == []


def test_a_notification_is_acknowledged_at_most_once_even_without_a_name() -> None:
    history: tuple[NotificationEvent, ...] = NOTIFIED
    for command in (AcknowledgeNotification(HOSPITAL, ""), AcknowledgeNotification(HOSPITAL, "x")):
        try:
            history = (*history, *tell(history, command))
        except InvalidArgument:
            pass
    assert sum(isinstance(e, NotificationAcknowledged) for e in history) <= 1


def test_notification_evolve_and_decide_refuse_what_is_not_theirs():
    with pytest.raises(TypeError, match="unknown event"):
        evolve_notification(Notification(), typing.cast(typing.Any, UNIT_1))
    with pytest.raises(TypeError, match="unknown command"):
        decide_notification(Notification(), typing.cast(typing.Any, UNIT_1))


@pytest.mark.parametrize(
    "event",
    [
        DISPATCHED_EVENT,
        DELIVERED_EVENT,
        COMPROMISED_EVENT,
        OrderShipmentDispositioned(SHIPMENT, "REJECT"),
        OrderShipmentReturned(SHIPMENT, "DISCARDED"),
        OrderReceived(RECEIPT),
        INFUSED_EVENT,
        adverse().report,
        ISSUED,
        NotificationAcknowledged("Dr Lee"),
    ],
    ids=lambda e: type(e).__name__,
)
def test_every_delivery_lifecycle_event_round_trips_through_the_codec(event):
    assert CODEC.decode(*CODEC.encode(event)) == event


SETTLED = {
    "rejected": REJECTED,
    "cancelled": CANCELLED,
    "cancelled after allocation": CANCELLED_ALLOCATED,
    "infused": INFUSED,
    "both units infused": (
        *TWO_UNITS_RECEIVED,
        OrderInfused("unit-1", INFUSION, SECONDS),
        OrderInfused("unit-2", INFUSION, SECONDS),
    ),
    "returned": RETURNED,
    "discarded": DISCARDED,
}
UNSETTLED = {
    **{k: v for k, v in BEFORE_DISPATCH.items() if k in ("placed", "allocated", "lost")},
    "dispatched": DISPATCHED,
    "delivered": DELIVERED,
    "received": RECEIVED,
    "compromised": COMPROMISED,
    "one of two units infused": (*TWO_UNITS_RECEIVED, OrderInfused("unit-1", INFUSION, SECONDS)),
}


@pytest.mark.parametrize("events", SETTLED.values(), ids=SETTLED.keys())
def test_an_order_is_settled_once_nothing_more_happens_to_it(events):
    """WatchOrder ends at a settled order (OrderViews.watch)."""
    assert given(*events).settled


@pytest.mark.parametrize("events", UNSETTLED.values(), ids=UNSETTLED.keys())
def test_an_order_still_on_its_way_is_not_settled(events):
    assert not given(*events).settled
