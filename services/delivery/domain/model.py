"""Delivery vocabulary: shipments with their custody chain, recalls; events and commands."""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from services.delivery.domain.custody import Person
from shared.signing import RecordLink, signed_content_hash


class ShipmentStatus(enum.StrEnum):
    NONE = "NONE"
    CREATED = "CREATED"
    IN_TRANSIT = "IN_TRANSIT"
    DELIVERED = "DELIVERED"
    RETURNED = "RETURNED"
    DISCARDED = "DISCARDED"


class Decision(enum.StrEnum):
    ACCEPT = "ACCEPT"  # QA: the compromised shipment may still be infused
    REJECT = "REJECT"  # QA: it must be returned or discarded


class ReturnOutcome(enum.StrEnum):
    RETURNED = "RETURNED"
    DISCARDED = "DISCARDED"


class Trigger(enum.StrEnum):
    DONOR_POSITIVE = "DONOR_POSITIVE"
    STERILITY_POSITIVE = "STERILITY_POSITIVE"
    PRODUCT_DEFECT = "PRODUCT_DEFECT"


@dataclass(frozen=True, slots=True)
class Shipper:
    shipper_id: str
    qualified_hold_hours: float
    uses_since_requalification: int


@dataclass(frozen=True, slots=True)
class ESignature:
    """The signed-in person (name, issuer subject), meaning, time, and the record it belongs to
    (event id + hash of what was signed)."""

    signer_name: str
    meaning: str
    signed_at: datetime
    signer_subject: str = ""  # empty only in records from before people signed in
    event_id: str = ""
    content_hash: str = ""

    def linked(self, link: RecordLink, record: Mapping[str, object]) -> ESignature:
        signed = {
            **record, "signer_name": self.signer_name, "signer_subject": self.signer_subject,
            "signed_at": self.signed_at, "meaning": self.meaning,
        }  # fmt: skip
        return dataclasses.replace(
            self, event_id=link.event_id, content_hash=signed_content_hash(link, signed)
        )


@dataclass(frozen=True, slots=True)
class DeliveryRules:
    safety_factor: float = 2.0  # the shipper's hold must cover planned transit × this
    max_shipper_uses: int = 20  # uses before the dry shipper must be requalified


# ---- shipment events ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ShipmentCreated:
    order_id: str
    order_site_id: str
    hospital_id: str
    unit_ids: tuple[str, ...]
    shipper: Shipper
    logger_id: str
    courier: str
    route: str
    planned_transit_minutes: float
    promised_at: datetime
    order_placed_at: datetime | None


@dataclass(frozen=True, slots=True)
class ShipmentDispatched:
    at: datetime
    custodian: str
    safety_factor: float


@dataclass(frozen=True, slots=True)
class CustodyOffered:
    from_party: str
    to_party: str
    place: str
    at: datetime


@dataclass(frozen=True, slots=True)
class CustodyAccepted:
    party: str
    place: str
    at: datetime
    signature: ESignature

    def sealed(self, link: RecordLink) -> CustodyAccepted:
        record = {"record": "CustodyAccepted", "party": self.party, "place": self.place}
        return dataclasses.replace(self, signature=self.signature.linked(link, record))


@dataclass(frozen=True, slots=True)
class ShipmentDelivered:
    at: datetime
    place: str
    order_to_delivery_seconds: float
    late: bool


@dataclass(frozen=True, slots=True)
class ShipmentCompromised:
    cause: str
    detail: str


@dataclass(frozen=True, slots=True)
class ShipmentDispositioned:
    decision: Decision
    signature: ESignature

    def sealed(self, link: RecordLink) -> ShipmentDispositioned:
        record = {"record": "ShipmentDispositioned", "decision": self.decision.value}
        return dataclasses.replace(self, signature=self.signature.linked(link, record))


@dataclass(frozen=True, slots=True)
class ShipmentAtRisk:
    promised_at: datetime
    expected_at: datetime
    why: str


@dataclass(frozen=True, slots=True)
class ShipmentReturned:
    outcome: ReturnOutcome
    why: str


ShipmentEvent = (
    ShipmentCreated
    | ShipmentDispatched
    | CustodyOffered
    | CustodyAccepted
    | ShipmentDelivered
    | ShipmentCompromised
    | ShipmentDispositioned
    | ShipmentAtRisk
    | ShipmentReturned
)


# ---- shipment commands ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CreateShipment:
    created: ShipmentCreated
    now: datetime


@dataclass(frozen=True, slots=True)
class Dispatch:
    at: datetime
    custodian: str
    rules: DeliveryRules


@dataclass(frozen=True, slots=True)
class HandOver:
    to_party: str
    place: str
    at: datetime
    by: Person | None = None  # who hands it on: only the present custodian may


@dataclass(frozen=True, slots=True)
class AcceptCustody:
    place: str
    signature: ESignature
    receiver: Person  # who accepts: only a person of the handoff's named party may


@dataclass(frozen=True, slots=True)
class RecordDelivery:
    at: datetime
    place: str
    by: Person | None = None  # who records it: only the present custodian may


@dataclass(frozen=True, slots=True)
class Compromise:
    cause: str
    detail: str


@dataclass(frozen=True, slots=True)
class DispositionShipment:
    decision: Decision
    signer_role: str
    signature: ESignature


@dataclass(frozen=True, slots=True)
class FlagAtRisk:
    expected_at: datetime
    why: str


@dataclass(frozen=True, slots=True)
class RecordReturn:
    outcome: ReturnOutcome
    why: str


ShipmentCommand = (
    CreateShipment
    | Dispatch
    | HandOver
    | AcceptCustody
    | RecordDelivery
    | Compromise
    | DispositionShipment
    | FlagAtRisk
    | RecordReturn
)


# ---- shipment state -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Handoff:
    from_party: str
    to_party: str
    place: str
    offered_at: datetime
    accepted_at: datetime | None = None
    signature: ESignature | None = None


@dataclass(frozen=True, slots=True)
class Shipment:
    status: ShipmentStatus = ShipmentStatus.NONE
    created: ShipmentCreated | None = None
    custodian: str = ""  # responsible now; an offered handoff does not change it
    handoffs: tuple[Handoff, ...] = ()
    dispatched_at: datetime | None = None
    delivered: ShipmentDelivered | None = None
    compromise_causes: tuple[str, ...] = ()
    disposition: Decision | None = None
    at_risk: bool = False

    @property
    def pending(self) -> Handoff | None:
        last = self.handoffs[-1] if self.handoffs else None
        return last if last is not None and last.accepted_at is None else None

    @property
    def compromised(self) -> bool:
        return bool(self.compromise_causes)

    @property
    def cleared_for_infusion(self) -> bool:
        """Not compromised, or compromised and accepted by QA."""
        return not self.compromised or self.disposition is Decision.ACCEPT


# ---- recall ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RecallNotice:
    """A hospital that holds or infused an affected unit, told by its order's site."""

    order_id: str
    order_site_id: str
    hospital_id: str
    unit_ids: tuple[str, ...]
    patient_ref: str


@dataclass(frozen=True, slots=True)
class RecallRaised:
    trigger: Trigger
    subject: str
    reason: str
    dins: tuple[str, ...]
    unit_ids: tuple[str, ...]
    source_event_id: str
    notices: tuple[RecallNotice, ...] = ()


@dataclass(frozen=True, slots=True)
class RecallUnitHeld:
    unit_id: str
    site_id: str
    outcome: str  # RECALLED | NOT_IN_STOCK


RecallEvent = RecallRaised | RecallUnitHeld


@dataclass(frozen=True, slots=True)
class RaiseRecall:
    raised: RecallRaised


@dataclass(frozen=True, slots=True)
class RecordUnitHeld:
    unit_id: str
    site_id: str
    outcome: str


RecallCommand = RaiseRecall | RecordUnitHeld


@dataclass(frozen=True, slots=True)
class Recall:
    raised: RecallRaised | None = None
    held: tuple[RecallUnitHeld, ...] = ()

    @property
    def pending_units(self) -> tuple[str, ...]:
        done = {h.unit_id for h in self.held}
        return tuple(u for u in self.raised.unit_ids if u not in done) if self.raised else ()
