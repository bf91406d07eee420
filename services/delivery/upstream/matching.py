"""Matching's published order, notification and HLA-reference events, as delivery's lookback
needs them: who ordered for which patient, how far the order went and with which units, which
hospitals were told of a recall, and the HLA reference each site classifies with."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from cellbank.matching.v1 import events_pb2 as pb

from services.delivery.upstream.published import Translator


class OrderStage(enum.StrEnum):
    """How far an order went (lookback's order status)."""

    PLACED = "PLACED"
    ALLOCATED = "ALLOCATED"
    REJECTED = "REJECTED"
    CANCELLED = "CANCELLED"
    DISPATCHED = "DISPATCHED"
    DELIVERED = "DELIVERED"
    RECEIVED = "RECEIVED"
    INFUSED = "INFUSED"


@dataclass(frozen=True, slots=True)
class OrderPlaced:
    hospital_id: str
    patient_ref: str


@dataclass(frozen=True, slots=True)
class OrderProgressed:
    """The order reached `stage`; its units are `unit_ids` (None = unchanged)."""

    stage: OrderStage
    unit_ids: tuple[str, ...] | None = None


@dataclass(frozen=True, slots=True)
class UnitInfused:
    unit_id: str


@dataclass(frozen=True, slots=True)
class HospitalNotified:
    """A hospital is told of a recall (the event's aggregate is the notification)."""

    hospital_id: str
    recall_id: str
    order_id: str


@dataclass(frozen=True, slots=True)
class NotificationAcknowledged:
    pass


@dataclass(frozen=True, slots=True)
class HlaReference:
    """The HLA reference release the event's site classifies with."""

    release: str
    classification_version: str
    checksums: tuple[tuple[str, str], ...]  # (file, sha256)
    source: str


MatchingFact = (
    OrderPlaced
    | OrderProgressed
    | UnitInfused
    | HospitalNotified
    | NotificationAcknowledged
    | HlaReference
)


translate: Translator[MatchingFact] = Translator(
    {
        pb.OrderPlaced: lambda m: OrderPlaced(m.hospital_id, m.patient.patient_ref),
        pb.OrderAllocated: lambda m: OrderProgressed(
            OrderStage.ALLOCATED, tuple(u.unit_id for u in m.units)
        ),
        pb.AllocationLost: lambda m: OrderProgressed(OrderStage.PLACED, ()),
        pb.OrderRejected: lambda m: OrderProgressed(OrderStage.REJECTED),
        pb.OrderCancelled: lambda m: OrderProgressed(OrderStage.CANCELLED),
        pb.OrderDispatched: lambda m: OrderProgressed(OrderStage.DISPATCHED),
        pb.OrderDelivered: lambda m: OrderProgressed(OrderStage.DELIVERED),
        pb.OrderReceived: lambda m: OrderProgressed(OrderStage.RECEIVED),
        pb.OrderInfused: lambda m: UnitInfused(m.unit_id),
        pb.NotificationIssued: lambda m: HospitalNotified(m.hospital_id, m.recall_id, m.order_id),
        pb.NotificationAcknowledged: lambda m: NotificationAcknowledged(),
        pb.HlaReferenceLoaded: lambda m: HlaReference(
            m.release,
            m.classification_version,
            tuple((c.file, c.sha256) for c in m.checksums),
            m.source,
        ),
    },
)
