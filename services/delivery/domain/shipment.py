"""The shipment aggregate: created for an allocated order, dispatched only when the dry
shipper's hold covers the planned transit with margin and a logger rides along; custody moves
only when the receiver accepts (e-signed); delivered by whoever holds it; a temperature
excursion compromises it until QA decides."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

from services.delivery.domain.custody import Person, holds, party, stands_for
from services.delivery.domain.model import (
    AcceptCustody,
    Compromise,
    CreateShipment,
    CustodyAccepted,
    CustodyOffered,
    Dispatch,
    DispositionShipment,
    FlagAtRisk,
    Handoff,
    HandOver,
    RecordDelivery,
    RecordReturn,
    ReturnOutcome,
    Shipment,
    ShipmentAtRisk,
    ShipmentCommand,
    ShipmentCompromised,
    ShipmentCreated,
    ShipmentDelivered,
    ShipmentDispatched,
    ShipmentDispositioned,
    ShipmentEvent,
    ShipmentReturned,
    ShipmentStatus,
)
from shared.errors import InvalidArgument, NotFound, PermissionDenied, PreconditionFailed

S = ShipmentStatus


def decide(state: Shipment, command: ShipmentCommand) -> Sequence[ShipmentEvent]:
    """The events a command causes, or a typed refusal naming why (nothing written)."""
    if isinstance(command, CreateShipment):
        return create(state, command)
    if state.status is S.NONE:
        raise NotFound("no such shipment")
    created = state.created
    assert created is not None
    match command:
        case Dispatch(at, custodian, rules):
            if state.status is not S.CREATED:
                if state.status is S.IN_TRANSIT:
                    return []  # dispatched already (a retried call)
                raise PreconditionFailed("shipment not awaiting dispatch", state.status.value)
            if not custodian.strip():
                raise InvalidArgument("custodian", "someone is responsible for it leaving the bank")
            if not created.logger_id.strip():
                raise PreconditionFailed("no temperature logger", "assign a logger before dispatch")
            needed = created.planned_transit_minutes * rules.safety_factor
            hold = created.shipper.qualified_hold_hours * 60
            if hold < needed:
                raise PreconditionFailed(
                    "dry shipper hold too short",
                    f"{created.shipper.shipper_id} holds {hold:g} min; planned transit"
                    f" {created.planned_transit_minutes:g} min × {rules.safety_factor:g} = {needed:g} min",
                )
            if created.shipper.uses_since_requalification >= rules.max_shipper_uses:
                raise PreconditionFailed(
                    "dry shipper due for requalification",
                    f"{created.shipper.uses_since_requalification} uses since the last"
                    f" (at most {rules.max_shipper_uses})",
                )
            return [ShipmentDispatched(at, custodian, rules.safety_factor)]
        case HandOver(to_party, place, at, by):
            _in_transit(state)
            _custodian_only(state, by, "hand the shipment on")
            if state.pending is not None:
                raise PreconditionFailed(
                    "handoff already offered", f"to {state.pending.to_party}, not yet accepted"
                )
            to_party = party(to_party)
            if to_party == state.custodian:
                raise InvalidArgument("to_party", f"{to_party} already holds the shipment")
            if not place.strip():
                raise InvalidArgument("place", "a handoff records where it happened")
            return [CustodyOffered(state.custodian, to_party, place.strip(), at)]
        case AcceptCustody(place, signature, receiver):
            _in_transit(state)
            pending = state.pending
            if pending is None:
                raise PreconditionFailed("no handoff to accept", "the custodian offers it first")
            if not stands_for(receiver, pending.to_party):
                raise PermissionDenied(
                    f"custody is offered to {pending.to_party}: only that party's person may"
                    f" accept it, not {receiver}"
                )
            if not signature.meaning.strip():
                raise InvalidArgument(
                    "signature_meaning", "the receiver's e-signature says what it means"
                )
            return [
                CustodyAccepted(
                    pending.to_party, place.strip() or pending.place, signature.signed_at, signature
                )
            ]
        case RecordDelivery(at, place, by):
            if state.status is S.DELIVERED:
                return []
            _in_transit(state)
            _custodian_only(state, by, "record its delivery")
            if state.pending is not None:
                raise PreconditionFailed(
                    "custody not settled",
                    f"{state.pending.to_party} has not accepted the handoff; "
                    f"{state.custodian} is still responsible",
                )
            if not place.strip():
                raise InvalidArgument("place", "a delivery records where")
            placed = created.order_placed_at
            seconds = (at - placed).total_seconds() if placed is not None else 0.0
            return [ShipmentDelivered(at, place.strip(), seconds, at > created.promised_at)]
        case Compromise(cause, detail):
            if state.status not in (S.IN_TRANSIT, S.DELIVERED) or cause in state.compromise_causes:
                return []  # not on its way (or already known): nothing at stake
            return [ShipmentCompromised(cause, detail)]
        case DispositionShipment(decision, role, signature):
            if role != "qa":
                raise PreconditionFailed("signing role", "a QA disposition needs a QA signature")
            if not signature.meaning.strip():
                raise InvalidArgument(
                    "signature_meaning", "the meaning of the signature is required"
                )
            if not state.compromised:
                raise PreconditionFailed("shipment not compromised", "nothing to disposition")
            if state.disposition is not None:
                raise PreconditionFailed("already dispositioned", state.disposition.value)
            return [ShipmentDispositioned(decision, signature)]
        case FlagAtRisk(expected_at, why):
            if state.status is not S.IN_TRANSIT or state.at_risk:
                return []
            return [ShipmentAtRisk(created.promised_at, expected_at, why)]
        case RecordReturn(outcome, why):
            if state.status in (S.RETURNED, S.DISCARDED):
                return []
            if state.status not in (S.IN_TRANSIT, S.DELIVERED):
                raise PreconditionFailed("shipment not dispatched", state.status.value)
            if not why.strip():
                raise InvalidArgument("reason", "a return or discard records why")
            return [ShipmentReturned(outcome, why.strip())]
    raise TypeError(f"unknown command {command!r}")


def create(state: Shipment, command: CreateShipment) -> list[ShipmentEvent]:
    c = command.created
    if state.status is not S.NONE:
        if state.created == c:
            return []
        raise PreconditionFailed("shipment already created for this order", state.status.value)
    if not c.unit_ids:
        raise PreconditionFailed("order has no allocated unit", c.order_id)
    if not c.shipper.shipper_id.strip():
        raise InvalidArgument("shipper.shipper_id", "is required")
    hold = c.shipper.qualified_hold_hours
    if not math.isfinite(hold) or hold <= 0 or hold > 24 * 60:
        raise InvalidArgument("shipper.qualified_hold_hours", "must be a positive number of hours")
    if c.shipper.uses_since_requalification < 0:
        raise InvalidArgument("shipper.uses_since_requalification", "must be >= 0")
    transit = c.planned_transit_minutes
    if not math.isfinite(transit) or transit <= 0 or transit > 7 * 24 * 60:
        raise InvalidArgument("planned_transit_minutes", "must be a positive number of minutes")
    if not c.courier.strip():
        raise InvalidArgument("courier", "is required")
    if c.promised_at <= command.now:
        raise InvalidArgument("promised_at", "must be in the future")
    return [c]


def _in_transit(state: Shipment) -> None:
    if state.status is not S.IN_TRANSIT:
        raise PreconditionFailed("shipment not in transit", state.status.value)


def evolve(state: Shipment, event: ShipmentEvent) -> Shipment:
    """Apply one event; total over every event type (replay must never fail)."""
    replace = dataclasses.replace
    match event:
        case ShipmentCreated():
            return replace(state, status=S.CREATED, created=event)
        case ShipmentDispatched(at, custodian):
            return replace(state, status=S.IN_TRANSIT, dispatched_at=at, custodian=custodian)
        case CustodyOffered(from_party, to_party, place, at):
            return replace(
                state, handoffs=(*state.handoffs, Handoff(from_party, to_party, place, at))
            )
        case CustodyAccepted(party, place, at, signature):
            pending = state.pending
            if pending is None:  # never offered (only a damaged history): record it whole
                pending = Handoff(state.custodian, party, place, at)
                handoffs = state.handoffs
            else:
                handoffs = state.handoffs[:-1]
            accepted = replace(pending, place=place, accepted_at=at, signature=signature)
            return replace(state, handoffs=(*handoffs, accepted), custodian=party)
        case ShipmentDelivered():
            return replace(state, status=S.DELIVERED, delivered=event)
        case ShipmentCompromised(cause):
            return replace(state, compromise_causes=(*state.compromise_causes, cause))
        case ShipmentDispositioned(decision):
            return replace(state, disposition=decision)
        case ShipmentAtRisk():
            return replace(state, at_risk=True)
        case ShipmentReturned(outcome):
            status = S.DISCARDED if outcome is ReturnOutcome.DISCARDED else S.RETURNED
            return replace(state, status=status)
    raise TypeError(f"unknown event {event!r}")


def _custodian_only(state: Shipment, by: Person | None, what: str) -> None:
    if by is not None and not holds(by, state.custodian):
        raise PermissionDenied(
            f"{state.custodian} holds the shipment: only that party's person may {what}, not {by}"
        )
