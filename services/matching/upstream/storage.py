"""Storage's published unit events (`cellbank.storage.v1`) as what matching's network inventory
needs: a unit's stock facts, its status and its hold. Every event of a unit moves its version
on, including those matching ignores (the owner checks the version matching reserves with)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime

from cellbank.storage.v1 import events_pb2 as pb
from google.protobuf.message import Message

from shared.events import StoredEvent
from shared.proto_mapping import timestamp_to_datetime

PACKAGE = "cellbank.storage.v1."


@dataclass(frozen=True, slots=True)
class UnitStocked:
    """The unit was put into stock at its site (the site is the envelope's)."""

    din: str
    product_type: str
    expires_on: date
    viable_nk_cells: float
    cd3_cells: float


@dataclass(frozen=True, slots=True)
class UnitHeld:
    order_id: str
    hold_until: datetime


@dataclass(frozen=True, slots=True)
class UnitHoldEnded:
    """Released or lapsed: the unit is free for any order again."""


@dataclass(frozen=True, slots=True)
class UnitStatusChanged:
    status: str  # STORED, QUARANTINED, EXPIRED, PICKED, DISCARDED, RECALLED
    hold_ended: bool = False  # the unit left stock: no hold stays on it


@dataclass(frozen=True, slots=True)
class UnitRevised:
    """Nothing matching reads changed (e.g. moved within its site): only the version."""


UnitFact = UnitStocked | UnitHeld | UnitHoldEnded | UnitStatusChanged | UnitRevised

# The events whose fact is the same whatever their fields say.
_CONSTANT: dict[str, tuple[type[Message], UnitFact]] = {
    "UnitMoved": (pb.UnitMoved, UnitRevised()),
    "UnitQuarantined": (pb.UnitQuarantined, UnitStatusChanged("QUARANTINED")),
    "QuarantineLifted": (pb.QuarantineLifted, UnitStatusChanged("STORED")),
    "UnitExpired": (pb.UnitExpired, UnitStatusChanged("EXPIRED")),
    "UnitPicked": (pb.UnitPicked, UnitStatusChanged("PICKED", hold_ended=True)),
    "UnitDiscarded": (pb.UnitDiscarded, UnitStatusChanged("DISCARDED", hold_ended=True)),
    "UnitRecalled": (pb.UnitRecalled, UnitStatusChanged("RECALLED")),
    "ReservationReleased": (pb.ReservationReleased, UnitHoldEnded()),
    "ReservationExpired": (pb.ReservationExpired, UnitHoldEnded()),
}


def unit_fact(event: StoredEvent) -> UnitFact | None:
    """The fact of one event of storage's unit aggregate; None for other aggregates (tanks).
    A payload that does not parse raises protobuf's DecodeError (the record is poison)."""
    if event.aggregate_type != "unit" or not event.event_type.startswith(PACKAGE):
        return None
    name = event.event_type[len(PACKAGE) :]
    if name == "UnitStored":
        f = pb.UnitStored.FromString(event.payload).facts
        return UnitStocked(
            f.din, f.product_type, date.fromisoformat(f.expires_on), f.viable_nk_cells, f.cd3_cells
        )
    if name == "UnitReserved":
        reserved = pb.UnitReserved.FromString(event.payload)
        return UnitHeld(reserved.order_id, timestamp_to_datetime(reserved.hold_until))
    if name not in _CONSTANT:
        return UnitRevised()  # a kind of unit event matching does not know (yet)
    message, fact = _CONSTANT[name]
    message.FromString(event.payload)  # a broken record is poison, whatever its kind
    return fact
