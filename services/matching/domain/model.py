"""Matching vocabulary: patients, orders, their events (past tense) and commands (imperative)."""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

from shared.signing import RecordLink, signed_content_hash


class ProductCategory(enum.StrEnum):
    """What a hospital orders; each maps to manufacturing product types by code prefix."""

    NK = "NK"
    CAR_NK = "CAR_NK"
    VST = "VST"


class Cmv(enum.StrEnum):
    UNKNOWN = "UNKNOWN"
    NEGATIVE = "NEGATIVE"
    POSITIVE = "POSITIVE"


class OrderStatus(enum.StrEnum):
    NONE = "NONE"
    PLACED = "PLACED"  # allocation in progress (or again, after a lost unit)
    ALLOCATED = "ALLOCATED"
    REJECTED = "REJECTED"
    CANCELLED = "CANCELLED"
    DISPATCHED = "DISPATCHED"  # its shipment left the owning site
    DELIVERED = "DELIVERED"
    RECEIVED = "RECEIVED"  # the hospital signed for it
    INFUSED = "INFUSED"


LIVE = (OrderStatus.PLACED, OrderStatus.ALLOCATED)


@dataclass(frozen=True, slots=True)
class PatientSnapshot:
    patient_ref: str
    weight_kg: float
    hla_alleles: tuple[str, ...]
    abo: str  # A, B, AB, O or "" (unknown)
    cmv: Cmv


@dataclass(frozen=True, slots=True)
class AllocatedUnit:
    unit_id: str
    din: str
    site_id: str
    dose_cells_per_kg: float
    unit_version: int
    score: float
    reasons: tuple[str, ...]


# ---- events -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class OrderPlaced:
    hospital_id: str
    request_id: str
    patient: PatientSnapshot
    product_type: ProductCategory
    dose_min: float
    dose_max: float
    needed_by: datetime | None  # None: no date given (units must not be expired now)
    # Several units may make the dose when no single one reaches it (False in older events).
    allow_multiple_units: bool = False


@dataclass(frozen=True, slots=True)
class OrderAllocated:
    units: tuple[AllocatedUnit, ...]
    classification_version: str


@dataclass(frozen=True, slots=True)
class OrderRejected:
    reason: str
    classification_version: str


@dataclass(frozen=True, slots=True)
class OrderCancelled:
    reason: str


@dataclass(frozen=True, slots=True)
class AllocationLost:
    unit_id: str
    why: str


@dataclass(frozen=True, slots=True)
class Signature:
    """A clinician's e-signature: the signed-in person (name, issuer subject), meaning, time,
    and the record it belongs to (event id + hash of what was signed)."""

    signer_name: str
    meaning: str
    signed_at: datetime
    signer_subject: str = ""  # empty only in records from before people signed in
    event_id: str = ""
    content_hash: str = ""

    def linked(self, link: RecordLink, record: Mapping[str, object]) -> Signature:
        signed = {
            **record, "signer_name": self.signer_name, "signer_subject": self.signer_subject,
            "signed_at": self.signed_at, "meaning": self.meaning,
        }  # fmt: skip
        return dataclasses.replace(
            self, event_id=link.event_id, content_hash=signed_content_hash(link, signed)
        )


@dataclass(frozen=True, slots=True)
class OrderDispatched:
    shipment_id: str
    at: datetime


@dataclass(frozen=True, slots=True)
class OrderDelivered:
    shipment_id: str
    at: datetime


@dataclass(frozen=True, slots=True)
class OrderShipmentCompromised:
    shipment_id: str
    cause: str


@dataclass(frozen=True, slots=True)
class OrderShipmentDispositioned:
    shipment_id: str
    decision: str  # ACCEPT | REJECT


@dataclass(frozen=True, slots=True)
class OrderShipmentReturned:
    shipment_id: str
    outcome: str


@dataclass(frozen=True, slots=True)
class OrderReceived:
    signature: Signature

    def sealed(self, link: RecordLink) -> OrderReceived:
        record = {"record": "OrderReceived"}
        return dataclasses.replace(self, signature=self.signature.linked(link, record))


@dataclass(frozen=True, slots=True)
class OrderInfused:
    unit_id: str
    signature: Signature
    order_to_infusion_seconds: float

    def sealed(self, link: RecordLink) -> OrderInfused:
        record = {"record": "OrderInfused", "unit_id": self.unit_id}
        return dataclasses.replace(self, signature=self.signature.linked(link, record))


@dataclass(frozen=True, slots=True)
class AdverseEventReported:
    report_id: str
    unit_id: str
    description: str
    severity: str
    occurred_at: datetime


OrderEvent = (
    OrderPlaced
    | OrderAllocated
    | OrderRejected
    | OrderCancelled
    | AllocationLost
    | OrderDispatched
    | OrderDelivered
    | OrderShipmentCompromised
    | OrderShipmentDispositioned
    | OrderShipmentReturned
    | OrderReceived
    | OrderInfused
    | AdverseEventReported
)


# ---- commands ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PlaceOrder:
    placed: OrderPlaced
    now: datetime


@dataclass(frozen=True, slots=True)
class RecordAllocation:
    units: tuple[AllocatedUnit, ...]
    classification_version: str


@dataclass(frozen=True, slots=True)
class RejectOrder:
    reason: str
    classification_version: str


@dataclass(frozen=True, slots=True)
class CancelOrder:
    reason: str
    hospital_id: str


@dataclass(frozen=True, slots=True)
class LoseAllocation:
    unit_id: str
    why: str


@dataclass(frozen=True, slots=True)
class RecordShipment:
    """What the order's shipment reported (dispatched, delivered, compromised, …)."""

    event: (
        OrderDispatched
        | OrderDelivered
        | OrderShipmentCompromised
        | OrderShipmentDispositioned
        | OrderShipmentReturned
    )


@dataclass(frozen=True, slots=True)
class ConfirmReceipt:
    hospital_id: str
    signature: Signature


@dataclass(frozen=True, slots=True)
class ConfirmInfusion:
    hospital_id: str
    unit_id: str
    signature: Signature
    order_to_infusion_seconds: float  # from the order's placement (the envelope's time)


@dataclass(frozen=True, slots=True)
class ReportAdverseEvent:
    hospital_id: str
    report: AdverseEventReported


OrderCommand = (
    PlaceOrder
    | RecordAllocation
    | RejectOrder
    | CancelOrder
    | LoseAllocation
    | RecordShipment
    | ConfirmReceipt
    | ConfirmInfusion
    | ReportAdverseEvent
)


# ---- notifications ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NotificationIssued:
    hospital_id: str
    recall_id: str
    order_id: str
    unit_ids: tuple[str, ...]
    message: str
    kind: str = "RECALL"


@dataclass(frozen=True, slots=True)
class NotificationAcknowledged:
    by: str


NotificationEvent = NotificationIssued | NotificationAcknowledged


@dataclass(frozen=True, slots=True)
class IssueNotification:
    issued: NotificationIssued


@dataclass(frozen=True, slots=True)
class AcknowledgeNotification:
    hospital_id: str
    by: str


NotificationCommand = IssueNotification | AcknowledgeNotification


@dataclass(frozen=True, slots=True)
class Notification:
    issued: NotificationIssued | None = None
    acknowledged_by: str = ""
    acknowledged: bool = False


# ---- state ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Order:
    status: OrderStatus = OrderStatus.NONE
    placed: OrderPlaced | None = None
    units: tuple[AllocatedUnit, ...] = ()
    status_reason: str = ""
    classification_version: str = ""
    released: tuple[AllocatedUnit, ...] = field(default=())  # units it held and gave back
    shipment_id: str = ""
    compromised: bool = False  # its shipment had a temperature excursion
    disposition: str = ""  # QA's decision on a compromised shipment (ACCEPT | REJECT)
    returned: str = ""  # its shipment came back or was discarded (RETURNED | DISCARDED)
    received: OrderReceived | None = None
    infused: tuple[OrderInfused, ...] = ()
    adverse_events: tuple[AdverseEventReported, ...] = ()

    @property
    def cleared_for_infusion(self) -> bool:
        return not self.compromised or self.disposition == "ACCEPT"

    @property
    def live(self) -> bool:
        return self.status in LIVE

    @property
    def settled(self) -> bool:
        """Nothing more happens to it but the hospital's own reports: it was rejected or
        cancelled, every unit was infused, or its shipment came back or was discarded."""
        if self.status in (OrderStatus.REJECTED, OrderStatus.CANCELLED) or self.returned:
            return True
        infused = {i.unit_id for i in self.infused}
        return self.status is OrderStatus.INFUSED and all(u.unit_id in infused for u in self.units)

    def holds(self, unit_id: str) -> bool:
        return self.live and any(u.unit_id == unit_id for u in self.units)
