"""Queries of matching's orders and notifications, and the watch of one order."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass
from datetime import datetime

from services.matching.adapters.codec import NOTIFICATION, ORDER
from services.matching.domain.model import Notification, Order
from services.matching.ports import ReadModel
from shared.errors import NotFound
from shared.events import StoredEvent
from shared.eventstore import EventStore

POLL_SECONDS = 0.5  # a watch also polls: another process may change the order


@dataclass(frozen=True, slots=True)
class NotificationView:
    notification_id: str
    state: Notification
    created_at: datetime
    acknowledged_at: datetime | None


@dataclass(frozen=True, slots=True)
class OrderView:
    order_id: str
    state: Order
    version: int
    placed_at: datetime | None
    updated_at: datetime | None


def order_view(order_id: str, events: Sequence[StoredEvent]) -> OrderView:
    state = ORDER.fold(events)
    placed_at = events[0].occurred_at if events else None
    updated_at = events[-1].occurred_at if events else None
    return OrderView(order_id, state, len(events), placed_at, updated_at)


class OrderChanges:
    """Wakes the watches of an order this process changed (others are polled)."""

    def __init__(self) -> None:
        self._changed: dict[str, asyncio.Event] = {}

    def notify(self, order_id: str) -> None:
        event = self._changed.pop(order_id, None)
        if event is not None:
            event.set()

    async def wait(self, order_id: str, timeout: float) -> None:
        """Until the order is changed here, or `timeout` seconds passed."""
        changed = self._changed.setdefault(order_id, asyncio.Event())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(changed.wait(), timeout)


class OrderViews:
    def __init__(self, store: EventStore, read_model: ReadModel, changes: OrderChanges) -> None:
        self.store = store
        self.read_model = read_model
        self.changes = changes

    async def view(self, order_id: str, hospital_id: str | None = None) -> OrderView:
        """The order; NOT_FOUND if it does not exist or belongs to another hospital."""
        events = await self.store.load(order_id)
        view = order_view(order_id, events)
        if view.state.placed is None or (
            hospital_id is not None and view.state.placed.hospital_id != hospital_id
        ):
            raise NotFound(f"order {order_id} not found")
        return view

    async def orders_of(self, hospital_id: str) -> list[OrderView]:
        ids = await self.read_model.order_ids_of(hospital_id)
        streams = await self.read_model.events_of(ids)
        return [order_view(i, streams[i]) for i in ids if streams[i]]

    async def watch(self, order_id: str, hospital_id: str) -> AsyncGenerator[OrderView, None]:
        """The order now, then each new version; ends once it is settled (Order.settled)."""
        view = await self.view(order_id, hospital_id)
        yield view
        while not view.state.settled:
            await self.changes.wait(order_id, POLL_SECONDS)
            latest = await self.view(order_id)
            if latest.version != view.version:
                view = latest
                yield view

    async def notifications(self, hospital_id: str) -> list[NotificationView]:
        ids = await self.read_model.aggregates_of_type("notification")
        streams = await self.read_model.events_of(ids)
        out = []
        for notification_id, events in streams.items():
            state = NOTIFICATION.fold(events)
            if state.issued is None or state.issued.hospital_id != hospital_id:
                continue
            acknowledged = events[-1].occurred_at if state.acknowledged else None
            out.append(
                NotificationView(notification_id, state, events[0].occurred_at, acknowledged)
            )
        return sorted(out, key=lambda n: n.created_at, reverse=True)
