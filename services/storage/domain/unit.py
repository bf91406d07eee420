"""The stored unit aggregate: lifecycle, quarantine, reservations (at most one active)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from services.kernel.isbt128 import expired
from services.kernel.records import replacer
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
    UnitMoved,
    UnitPicked,
    UnitQuarantined,
    UnitRecalled,
    UnitReserved,
    UnitStatus,
    UnitStored,
)
from shared.errors import InvalidArgument, NotFound, PreconditionFailed

Command = (
    StoreUnit
    | MoveUnit
    | QuarantineUnit
    | DispositionUnit
    | ReserveUnit
    | ReleaseReservation
    | ExpireReservation
    | ExpireUnit
    | PickUnit
    | DiscardUnit
    | RecallUnit
)
GONE = (UnitStatus.PICKED, UnitStatus.DISCARDED)


def decide(state: StoredUnit, command: Command) -> Sequence[UnitEvent]:
    """The events a command causes, or a typed refusal naming why (nothing written)."""
    if isinstance(command, StoreUnit):
        return store(state, command)
    if state.status is UnitStatus.NONE:
        raise NotFound("unit is not in storage here")
    match command:
        case MoveUnit(to):
            if state.status in GONE or (state.status is UnitStatus.EXPIRED and not state.address):
                raise PreconditionFailed("unit not in a position", state.status.value)
            return [] if to == state.address else [UnitMoved(state.address, to)]
        case QuarantineUnit(cause, detail):
            if state.status not in (UnitStatus.STORED, UnitStatus.QUARANTINED):
                return []  # gone, recalled or expired: nothing to hold back
            if cause in state.quarantine_causes:
                return []  # the same excursion reported again
            released = _release_reservation(state, "quarantined")
            return [*released, UnitQuarantined(cause, detail)]
        case DispositionUnit():
            return disposition(state, command)
        case ReserveUnit():
            return reserve(state, command)
        case ReleaseReservation(order_id):
            if state.reservation is None or state.reservation.order_id != order_id:
                raise PreconditionFailed(
                    "no such reservation", f"unit is not reserved for {order_id}"
                )
            return [ReservationReleased(order_id, "released by request")]
        case ExpireReservation(now):
            r = state.reservation
            if r is None or r.hold_until > now:
                return []
            return [ReservationExpired(r.order_id, r.hold_until)]
        case ExpireUnit(today):
            # Only stock awaiting use expires here: a quarantined or recalled unit keeps its
            # status (its QA disposition or recall is still pending); neither can be reserved
            # once past its stability limit anyway.
            if state.facts is None or state.status is not UnitStatus.STORED:
                return []
            if not expired(state.facts.expires_on, today):
                return []  # usable until its expiry day ends
            return [*_release_reservation(state, "expired"), UnitExpired(state.facts.expires_on)]
        case PickUnit(order_id, now):
            return pick(state, order_id, now)
        case DiscardUnit(why):
            if state.status in GONE:
                raise PreconditionFailed("unit already gone", state.status.value)
            if not why.strip():
                raise InvalidArgument("why", "a discard records its reason")
            return [*_release_reservation(state, "discarded"), UnitDiscarded(state.address, why)]
        case RecallUnit(recall_id, why):
            if state.status in GONE or state.status is UnitStatus.RECALLED:
                return []  # hospitals holding it are notified by the recall process
            return [*_release_reservation(state, "recalled"), UnitRecalled(recall_id, why)]
    raise TypeError(f"unknown command {command!r}")


def store(state: StoredUnit, command: StoreUnit) -> list[UnitEvent]:
    if state.status is not UnitStatus.NONE:
        if state.status is UnitStatus.STORED and state.address == command.address:
            return []  # a retried store
        raise PreconditionFailed("unit already stored", f"{state.status.value} at {state.address}")
    if command.facts is None:
        raise PreconditionFailed(
            "only RELEASED units are stored", f"{command.unit_id} was not released"
        )
    if expired(command.facts.expires_on, command.today):
        raise PreconditionFailed("unit expired", f"on {command.facts.expires_on.isoformat()}")
    return [UnitStored(command.address, command.facts)]


def disposition(state: StoredUnit, command: DispositionUnit) -> list[UnitEvent]:
    if command.signer_role != "qa":
        raise PreconditionFailed("signing role", "a QA disposition needs a QA signature")
    if not command.meaning.strip():
        raise InvalidArgument("meaning", "the meaning of the signature is required")
    if state.status is not UnitStatus.QUARANTINED:
        raise PreconditionFailed("unit not quarantined", state.status.value)
    if command.decision is Disposition.RELEASE:
        return [QuarantineLifted(command.signer, command.meaning, command.signature)]
    why = f"QA disposition: {command.meaning}"
    return [UnitDiscarded(state.address, why, command.signature)]


def reserve(state: StoredUnit, command: ReserveUnit) -> list[UnitEvent]:
    if not command.order_id.strip():
        raise InvalidArgument("order_id", "is required")
    if command.hold_until <= command.now:
        raise InvalidArgument("hold_until", "must be in the future")
    if command.max_hold is not None and command.hold_until > command.now + command.max_hold:
        raise InvalidArgument(
            "hold_until",
            f"at most {command.max_hold.total_seconds():.0f} s ahead (the site's cap on holds)",
        )
    _require_available(state, command.now)
    active = state.active_reservation(command.now)
    if active is not None:
        if active.order_id == command.order_id:
            if command.hold_until <= active.hold_until:
                return []  # the same reservation asked again: already held at least that long
            return [UnitReserved(command.order_id, command.hold_until)]  # the order's hold renewed
        raise PreconditionFailed(
            "unit already reserved",
            f"for order {active.order_id} until {active.hold_until.isoformat()}",
        )
    lapsed: list[UnitEvent] = []
    if state.reservation is not None:  # expired but not yet released by the scheduler
        lapsed.append(ReservationExpired(state.reservation.order_id, state.reservation.hold_until))
    return [*lapsed, UnitReserved(command.order_id, command.hold_until)]


def pick(state: StoredUnit, order_id: str, now: datetime) -> list[UnitEvent]:
    if state.status is UnitStatus.PICKED and state.picked_for == order_id:
        return []  # a retried pick for the same shipment
    _require_available(state, now)
    active = state.active_reservation(now)
    if active is None or active.order_id != order_id:
        raise PreconditionFailed("pick needs the order's active reservation", f"order {order_id}")
    return [UnitPicked(order_id, state.address)]


def _require_available(state: StoredUnit, now: datetime) -> None:
    if state.status is UnitStatus.QUARANTINED:
        raise PreconditionFailed("unit is quarantined", "pending QA disposition")
    if state.status is UnitStatus.RECALLED:
        raise PreconditionFailed("unit is recalled")
    if state.status is UnitStatus.EXPIRED or (
        state.facts and expired(state.facts.expires_on, now.date())
    ):
        on = state.facts.expires_on.isoformat() if state.facts else "?"
        raise PreconditionFailed("unit is expired", f"on {on}")
    if state.status is not UnitStatus.STORED:
        raise PreconditionFailed("unit not in stock", state.status.value)


def _release_reservation(state: StoredUnit, why: str) -> list[UnitEvent]:
    if state.reservation is None:
        return []
    return [ReservationReleased(state.reservation.order_id, why)]


_replace = replacer(StoredUnit)  # dataclasses.replace without its per-call field inspection


def evolve(state: StoredUnit, event: UnitEvent) -> StoredUnit:
    """Apply one event; total over every event type (replay must never fail)."""
    replace = _replace
    match event:
        case UnitStored(address, facts):
            return replace(state, status=UnitStatus.STORED, address=address, facts=facts)
        case UnitMoved(_, to):
            return replace(state, address=to)
        case UnitQuarantined(cause):
            return replace(
                state,
                status=UnitStatus.QUARANTINED,
                quarantine_causes=(*state.quarantine_causes, cause),
            )
        case QuarantineLifted():
            return replace(state, status=UnitStatus.STORED)
        case UnitReserved(order_id, hold_until):
            return replace(state, reservation=Reservation(order_id, hold_until))
        case ReservationReleased() | ReservationExpired():
            return replace(state, reservation=None)
        case UnitExpired():
            return replace(state, status=UnitStatus.EXPIRED)
        case UnitPicked(order_id):
            return replace(
                state, status=UnitStatus.PICKED, address="", reservation=None, picked_for=order_id
            )
        case UnitDiscarded():
            return replace(state, status=UnitStatus.DISCARDED, address="", reservation=None)
        case UnitRecalled():
            return replace(state, status=UnitStatus.RECALLED)
    raise TypeError(f"unknown event {event!r}")
