"""Delivery's published events (`cellbank.delivery.v1`) as what matching's orders follow: which
order a shipment carries, the shipment's progress as facts of the order, and recall notices."""

from __future__ import annotations

from dataclasses import dataclass

from cellbank.delivery.v1 import events_pb2 as pb

from services.matching.domain.model import (
    OrderDelivered,
    OrderDispatched,
    OrderShipmentCompromised,
    OrderShipmentDispositioned,
    OrderShipmentReturned,
)
from shared.events import StoredEvent
from shared.proto_mapping import timestamp_to_datetime

PACKAGE = "cellbank.delivery.v1."

ShipmentFact = (
    OrderDispatched
    | OrderDelivered
    | OrderShipmentCompromised
    | OrderShipmentDispositioned
    | OrderShipmentReturned
)


@dataclass(frozen=True, slots=True)
class ShipmentOpened:
    """A shipment was created for an order (of `order_site_id`, whose matching follows it)."""

    shipment_id: str
    order_id: str
    order_site_id: str


@dataclass(frozen=True, slots=True)
class RecallNotice:
    """A hospital that holds or infused a recalled unit, to be told by its order's site."""

    order_id: str
    order_site_id: str
    hospital_id: str
    unit_ids: tuple[str, ...]
    patient_ref: str


@dataclass(frozen=True, slots=True)
class UnitsRecalled:
    recall_id: str
    trigger: str  # DONOR_POSITIVE | STERILITY_POSITIVE | PRODUCT_DEFECT
    reason: str
    notices: tuple[RecallNotice, ...]


DeliveryFact = ShipmentOpened | ShipmentFact | UnitsRecalled


def delivery_fact(event: StoredEvent) -> DeliveryFact | None:
    """The fact of one delivery event; None for the events matching does not follow. A
    payload that does not parse raises protobuf's DecodeError (the record is poison)."""
    if not event.event_type.startswith(PACKAGE):
        return None
    name, payload = event.event_type[len(PACKAGE) :], event.payload
    if name == "RecallRaised":
        r = pb.RecallRaised.FromString(payload)
        notices = tuple(
            RecallNotice(n.order_id, n.order_site_id, n.hospital_id, tuple(n.unit_ids),
                         n.patient_ref)
            for n in r.notices
        )  # fmt: skip
        return UnitsRecalled(event.aggregate_id, r.trigger, r.reason, notices)
    if event.aggregate_type != "shipment":
        return None
    shipment_id = event.aggregate_id
    match name:
        case "ShipmentCreated":
            created = pb.ShipmentCreated.FromString(payload)
            return ShipmentOpened(shipment_id, created.order_id, created.order_site_id)
        case "ShipmentDispatched":
            at = pb.ShipmentDispatched.FromString(payload).at
            return OrderDispatched(shipment_id, timestamp_to_datetime(at))
        case "ShipmentDelivered":
            at = pb.ShipmentDelivered.FromString(payload).at
            return OrderDelivered(shipment_id, timestamp_to_datetime(at))
        case "ShipmentCompromised":
            cause = pb.ShipmentCompromised.FromString(payload).cause
            return OrderShipmentCompromised(shipment_id, cause)
        case "ShipmentDispositioned":
            decision = pb.ShipmentDispositioned.FromString(payload).decision
            return OrderShipmentDispositioned(shipment_id, _one_of(decision, DECISIONS, "decision"))
        case "ShipmentReturned":
            outcome = pb.ShipmentReturned.FromString(payload).outcome
            return OrderShipmentReturned(shipment_id, _one_of(outcome, OUTCOMES, "outcome"))
    return None


# The values delivery publishes (protos/cellbank/delivery/v1/events.proto): anything else is a
# bad record — dead-lettered, never written into matching's own store by the policy.
DECISIONS = frozenset({"ACCEPT", "REJECT"})
OUTCOMES = frozenset({"RETURNED", "DISCARDED"})


def _one_of(value: str, allowed: frozenset[str], field: str) -> str:
    if value not in allowed:
        raise ValueError(f"{field}: {value!r} is not one of {sorted(allowed)}")
    return value
