"""The order aggregate: placed → allocated | rejected; cancelled while live; a lost unit
sends it back to allocation. The allocation itself (which unit) is the saga's, not this."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from services.matching.domain.model import (
    AllocationLost,
    CancelOrder,
    LoseAllocation,
    Order,
    OrderAllocated,
    OrderCancelled,
    OrderCommand,
    OrderEvent,
    OrderPlaced,
    OrderRejected,
    OrderStatus,
    PlaceOrder,
    RecordAllocation,
    RejectOrder,
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
    raise TypeError(f"unknown command {command!r}")


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
            return replace(
                state, status=OrderStatus.REJECTED, status_reason=reason,
                classification_version=version,
            )  # fmt: skip
        case OrderCancelled(reason):
            return replace(
                state,
                status=OrderStatus.CANCELLED,
                status_reason=reason,
                released=(*state.released, *state.units),
            )
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
