"""The order aggregate: placed → allocated | rejected; cancelled while live; a lost unit
sends it back to allocation. The allocation itself (which units) is the saga's, not this."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from services.matching.domain.model import (
    AcknowledgeNotification,
    AdverseEventReported,
    AllocationLost,
    CancelOrder,
    ConfirmInfusion,
    ConfirmReceipt,
    IssueNotification,
    LoseAllocation,
    Notification,
    NotificationAcknowledged,
    NotificationCommand,
    NotificationEvent,
    NotificationIssued,
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
    RecordAllocation,
    RecordShipment,
    RejectOrder,
    ReportAdverseEvent,
)
from shared.errors import InvalidArgument, NotFound, PreconditionFailed


def decide(state: Order, command: OrderCommand) -> Sequence[OrderEvent]:
    """The events a command causes, or a typed refusal naming why (nothing written)."""
    match command:
        case PlaceOrder(placed):
            if state.placed is None:
                return [placed]
            if state.placed != placed:
                raise PreconditionFailed(
                    "request_id already used",
                    f"request {placed.request_id!r} placed a different order; use a new request_id",
                )
            return []  # the same request again: the original order stands
        case _ if state.status is OrderStatus.NONE:
            raise NotFound("no such order")
        case RecordAllocation(units, version):
            if state.status is OrderStatus.ALLOCATED and state.units == units:
                return []
            if state.status is not OrderStatus.PLACED:
                raise PreconditionFailed("order not awaiting allocation", state.status.value)
            if not units:
                raise InvalidArgument("units", "an allocation names at least one unit")
            assert state.placed is not None
            if len(units) > 1 and not state.placed.allow_multiple_units:
                raise PreconditionFailed(
                    "one unit ordered", "the order does not allow several units for its dose"
                )
            if len({u.unit_id for u in units}) != len(units):
                raise InvalidArgument("units", "a unit is named twice")
            return [OrderAllocated(units, version)]
        case RejectOrder(reason, version):
            if state.status is OrderStatus.REJECTED:
                return []
            if state.status is not OrderStatus.PLACED:
                raise PreconditionFailed("order not awaiting allocation", state.status.value)
            return [OrderRejected(reason, version)]
        case CancelOrder(reason, hospital_id):
            assert state.placed is not None
            if state.placed.hospital_id != hospital_id:
                raise NotFound("no such order")  # another hospital's: its existence is not told
            if state.status is OrderStatus.CANCELLED:
                return []
            if not reason.strip():
                raise InvalidArgument("reason", "a cancellation records why")
            if not state.live:
                raise PreconditionFailed("order can no longer be cancelled", state.status.value)
            return [OrderCancelled(reason.strip())]
        case LoseAllocation(unit_id, why):
            if not state.holds(unit_id) or state.status is not OrderStatus.ALLOCATED:
                return []
            return [AllocationLost(unit_id, why)]
        case RecordShipment(event):
            return shipment_reported(state, event)
        case ConfirmReceipt(hospital_id, signature):
            _own(state, hospital_id)
            _signed(signature.meaning)
            if state.status in (OrderStatus.RECEIVED, OrderStatus.INFUSED):
                return []
            if state.status is not OrderStatus.DELIVERED:
                raise PreconditionFailed(
                    "order not delivered",
                    f"order is {state.status.value}; receipt follows delivery",
                )
            return [OrderReceived(signature)]
        case ConfirmInfusion(hospital_id, unit_id, signature, since_placed):
            _own(state, hospital_id)
            _signed(signature.meaning)
            if not any(u.unit_id == unit_id for u in state.units):
                raise InvalidArgument("unit_id", f"{unit_id!r} is not a unit of this order")
            if any(i.unit_id == unit_id for i in state.infused):
                return []
            if state.returned:
                raise PreconditionFailed(
                    "shipment returned", f"its shipment was {state.returned.lower()}"
                )
            if state.status not in (OrderStatus.RECEIVED, OrderStatus.INFUSED):
                raise PreconditionFailed(
                    "order not received", f"order is {state.status.value}; infusion follows receipt"
                )
            if not state.cleared_for_infusion:
                raise PreconditionFailed(
                    "shipment compromised",
                    "a temperature excursion needs a QA disposition (ACCEPT) before infusion"
                    + (" — QA rejected it" if state.disposition == "REJECT" else ""),
                )
            return [OrderInfused(unit_id, signature, since_placed)]
        case ReportAdverseEvent(hospital_id, report):
            _own(state, hospital_id)
            if not report.description.strip():
                raise InvalidArgument("description", "is required")
            if not any(i.unit_id == report.unit_id for i in state.infused):
                raise PreconditionFailed(
                    "no infused unit", f"unit {report.unit_id!r} was not infused under this order"
                )
            if any(r.report_id == report.report_id for r in state.adverse_events):
                return []
            return [report]
    raise TypeError(f"unknown command {command!r}")


def shipment_reported(state: Order, event: object) -> list[OrderEvent]:
    """Facts of the order's shipment, recorded once each; the order follows its delivery."""
    match event:
        case OrderDispatched():
            if state.status is OrderStatus.ALLOCATED:
                return [event]
        case OrderDelivered():
            if state.status in (OrderStatus.ALLOCATED, OrderStatus.DISPATCHED):
                return [event]
        case OrderShipmentCompromised() if not state.compromised:
            return [event]
        case OrderShipmentDispositioned(_, decision) if state.compromised and not state.disposition:
            return [event] if decision in ("ACCEPT", "REJECT") else []
        case OrderShipmentReturned() if (
            state.status is not OrderStatus.INFUSED and not state.returned
        ):
            return [event]
    return []


def _own(state: Order, hospital_id: str) -> None:
    assert state.placed is not None
    if state.placed.hospital_id != hospital_id:
        raise NotFound("no such order")  # another hospital's: its existence is not told


def _signed(meaning: str) -> None:
    if not meaning.strip():
        raise InvalidArgument("signature.meaning", "the e-signature says what it means")


def evolve(state: Order, event: OrderEvent) -> Order:
    """Apply one event; total over every event type (replay must never fail)."""
    replace = dataclasses.replace
    match event:
        case OrderPlaced():
            return replace(state, status=OrderStatus.PLACED, placed=event)
        case OrderAllocated(units, version):
            return replace(
                state,
                status=OrderStatus.ALLOCATED,
                units=units,
                classification_version=version,
                status_reason="",
            )
        case OrderRejected(reason, version):
            # Units kept from an allocation that lost one of its several units go back too.
            return replace(
                state, status=OrderStatus.REJECTED, status_reason=reason,
                classification_version=version, units=(),
                released=(*state.released, *state.units),
            )  # fmt: skip
        case OrderCancelled(reason):
            return replace(
                state,
                status=OrderStatus.CANCELLED,
                status_reason=reason,
                released=(*state.released, *state.units),
            )
        case OrderDispatched(shipment_id):
            return replace(state, status=OrderStatus.DISPATCHED, shipment_id=shipment_id)
        case OrderDelivered(shipment_id):
            return replace(state, status=OrderStatus.DELIVERED, shipment_id=shipment_id)
        case OrderShipmentCompromised(shipment_id, cause):
            return replace(
                state,
                compromised=True,
                status_reason=f"shipment {shipment_id} compromised: {cause}",
            )
        case OrderShipmentDispositioned(_, decision):
            return replace(state, disposition=decision, status_reason=f"QA disposition: {decision}")
        case OrderShipmentReturned(shipment_id, outcome):
            return replace(
                state, returned=outcome, status_reason=f"shipment {shipment_id} {outcome.lower()}"
            )
        case OrderReceived():
            return replace(state, status=OrderStatus.RECEIVED, received=event)
        case OrderInfused():
            return replace(state, status=OrderStatus.INFUSED, infused=(*state.infused, event))
        case AdverseEventReported():
            return replace(state, adverse_events=(*state.adverse_events, event))
        case AllocationLost(unit_id, why):
            lost = tuple(u for u in state.units if u.unit_id == unit_id)
            return replace(
                state,
                status=OrderStatus.PLACED,
                units=tuple(u for u in state.units if u.unit_id != unit_id),
                released=(*state.released, *lost),
                status_reason=f"unit {unit_id} was taken back by its site ({why}); allocating again",
            )
    raise TypeError(f"unknown event {event!r}")


def decide_notification(
    state: Notification, command: NotificationCommand
) -> Sequence[NotificationEvent]:
    match command:
        case IssueNotification(issued):
            return [] if state.issued is not None else [issued]
        case AcknowledgeNotification(hospital_id, by):
            if state.issued is None or state.issued.hospital_id != hospital_id:
                raise NotFound("no such notification")
            if state.acknowledged:
                return []
            if not by.strip():
                raise InvalidArgument("by", "an acknowledgement names who acknowledged")
            return [NotificationAcknowledged(by.strip())]
    raise TypeError(f"unknown command {command!r}")


def evolve_notification(state: Notification, event: NotificationEvent) -> Notification:
    match event:
        case NotificationIssued():
            return dataclasses.replace(state, issued=event)
        case NotificationAcknowledged(by):
            return dataclasses.replace(state, acknowledged_by=by, acknowledged=True)
    raise TypeError(f"unknown event {event!r}")
