"""Storage vocabulary: tank layout, stored units, events (past tense), commands (imperative)."""

from __future__ import annotations

import dataclasses
import enum
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

from shared.signing import RecordLink, signed_content_hash


class UnitStatus(enum.StrEnum):
    NONE = "NONE"
    STORED = "STORED"
    QUARANTINED = "QUARANTINED"
    PICKED = "PICKED"  # taken out for shipment
    DISCARDED = "DISCARDED"
    RECALLED = "RECALLED"
    EXPIRED = "EXPIRED"


class Disposition(enum.StrEnum):
    RELEASE = "RELEASE"  # back to stock
    DISCARD = "DISCARD"


@dataclass(frozen=True, slots=True)
class PositionDef:
    address: str  # "<tank>/R<n>/B<n>/P<nn>"
    segregated: bool


@dataclass(frozen=True, slots=True)
class UnitFacts:
    """What manufacturing released (copied into storage's own stream on store)."""

    din: str
    product_code: str
    product_type: str
    viable_nk_cells: float
    cd3_cells: float
    volume_ml: float
    expires_on: date
    segregated: bool


@dataclass(frozen=True, slots=True)
class Reservation:
    order_id: str
    hold_until: datetime


# ---- tank events and state --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TankRegistered:
    tank_id: str
    positions: tuple[PositionDef, ...]


@dataclass(frozen=True, slots=True)
class PositionOccupied:
    address: str
    unit_id: str


@dataclass(frozen=True, slots=True)
class PositionVacated:
    address: str
    unit_id: str


TankEvent = TankRegistered | PositionOccupied | PositionVacated


@dataclass(frozen=True, slots=True)
class Tank:
    tank_id: str = ""
    segregated: dict[str, bool] = field(default_factory=dict)  # address -> segregated?
    occupant: dict[str, str] = field(default_factory=dict)  # address -> unit id

    @property
    def registered(self) -> bool:
        return bool(self.tank_id)

    def units(self) -> tuple[str, ...]:
        return tuple(sorted(self.occupant.values()))


# ---- unit events and state --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class UnitStored:
    address: str
    facts: UnitFacts


@dataclass(frozen=True, slots=True)
class UnitMoved:
    from_address: str
    to_address: str


@dataclass(frozen=True, slots=True)
class UnitQuarantined:
    cause: str  # e.g. "excursion:LON-T1:2026-11-26T10:00:00+00:00" or a QA finding
    detail: str


@dataclass(frozen=True, slots=True)
class Signature:
    """A QA disposition's e-signature: the signed-in person (name, issuer subject), meaning,
    time, and the record it belongs to (event id + hash of what was signed)."""

    signer_name: str
    meaning: str
    signed_at: datetime
    signer_subject: str
    event_id: str = ""
    content_hash: str = ""

    def linked(self, link: RecordLink, decision: str, address: str) -> Signature:
        signed = {
            "record": "DispositionUnit", "decision": decision, "address": address,
            "signer_name": self.signer_name, "signer_subject": self.signer_subject,
            "signed_at": self.signed_at, "meaning": self.meaning,
        }  # fmt: skip
        return dataclasses.replace(
            self, event_id=link.event_id, content_hash=signed_content_hash(link, signed)
        )


@dataclass(frozen=True, slots=True)
class QuarantineLifted:
    signed_by: str  # the signer's username
    meaning: str
    signature: Signature | None = None  # None only in records from before people signed in

    def sealed(self, link: RecordLink) -> QuarantineLifted:
        if self.signature is None:
            return self
        return dataclasses.replace(self, signature=self.signature.linked(link, "RELEASE", ""))


@dataclass(frozen=True, slots=True)
class UnitReserved:
    order_id: str
    hold_until: datetime


@dataclass(frozen=True, slots=True)
class ReservationReleased:
    order_id: str
    why: str


@dataclass(frozen=True, slots=True)
class ReservationExpired:
    order_id: str
    hold_until: datetime


@dataclass(frozen=True, slots=True)
class UnitExpired:
    expired_on: date


@dataclass(frozen=True, slots=True)
class UnitPicked:
    order_id: str
    from_address: str


@dataclass(frozen=True, slots=True)
class UnitDiscarded:
    from_address: str
    why: str
    signature: Signature | None = None  # a QA disposition's (DISCARD); none for other discards

    def sealed(self, link: RecordLink) -> UnitDiscarded:
        if self.signature is None:
            return self
        signature = self.signature.linked(link, "DISCARD", self.from_address)
        return dataclasses.replace(self, signature=signature)


@dataclass(frozen=True, slots=True)
class UnitRecalled:
    recall_id: str
    why: str


UnitEvent = (
    UnitStored
    | UnitMoved
    | UnitQuarantined
    | QuarantineLifted
    | UnitReserved
    | ReservationReleased
    | ReservationExpired
    | UnitExpired
    | UnitPicked
    | UnitDiscarded
    | UnitRecalled
)


@dataclass(frozen=True, slots=True)
class StoredUnit:
    unit_id: str = ""
    status: UnitStatus = UnitStatus.NONE
    address: str = ""
    facts: UnitFacts | None = None
    reservation: Reservation | None = None
    quarantine_causes: tuple[str, ...] = ()
    picked_for: str = ""  # the order whose shipment took it

    def active_reservation(self, now: datetime) -> Reservation | None:
        if self.reservation is not None and self.reservation.hold_until > now:
            return self.reservation
        return None


# ---- commands ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RegisterTank:
    tank_id: str
    racks: int
    boxes_per_rack: int
    positions_per_box: int
    segregated_boxes: tuple[str, ...] = ()  # e.g. ("R1/B2",): every position of it segregated


@dataclass(frozen=True, slots=True)
class OccupyPosition:
    address: str
    unit_id: str
    segregated_unit: bool
    moving_from: str = ""  # a move within this tank: the position the unit leaves


@dataclass(frozen=True, slots=True)
class VacatePosition:
    address: str
    unit_id: str


@dataclass(frozen=True, slots=True)
class StoreUnit:
    unit_id: str
    address: str
    facts: UnitFacts | None  # None: manufacturing never released this unit (as known here)
    today: date


@dataclass(frozen=True, slots=True)
class MoveUnit:
    to_address: str


@dataclass(frozen=True, slots=True)
class QuarantineUnit:
    cause: str
    detail: str


@dataclass(frozen=True, slots=True)
class DispositionUnit:
    decision: Disposition
    signer: str  # the signer's username
    signer_role: str
    meaning: str
    signature: Signature | None = None  # the signed-in person's (the servicer sets it)


@dataclass(frozen=True, slots=True)
class ReserveUnit:
    order_id: str
    hold_until: datetime
    now: datetime
    max_hold: timedelta | None = None  # the site's cap on how far ahead a hold may reach


@dataclass(frozen=True, slots=True)
class ReleaseReservation:
    order_id: str


@dataclass(frozen=True, slots=True)
class ExpireReservation:
    now: datetime


@dataclass(frozen=True, slots=True)
class ExpireUnit:
    today: date


@dataclass(frozen=True, slots=True)
class PickUnit:
    order_id: str
    now: datetime


@dataclass(frozen=True, slots=True)
class DiscardUnit:
    why: str


@dataclass(frozen=True, slots=True)
class RecallUnit:
    recall_id: str
    why: str
