"""Matching's commands: a hospital's orders (place, cancel, receipt, infusion, adverse events),
the facts of their shipments, and the recall notifications of its hospitals."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from functools import partial

from services.matching.adapters.codec import NOTIFICATION, ORDER
from services.matching.dependencies import Dependencies
from services.matching.domain.model import (
    AcknowledgeNotification,
    CancelOrder,
    IssueNotification,
    NotificationIssued,
    OrderCommand,
    OrderPlaced,
    OrderStatus,
    PlaceOrder,
    RecordShipment,
)
from services.matching.domain.order import decide, decide_notification
from services.matching.metrics import ORDERS
from services.matching.saga import Allocation, release
from services.matching.views import NotificationView, OrderChanges, OrderView, OrderViews
from shared.commands import Meta, execute
from shared.errors import ConcurrencyConflict


class OrderHandlers:
    def __init__(
        self,
        deps: Dependencies,
        allocation: Allocation,
        views: OrderViews,
        changes: OrderChanges,
    ) -> None:
        self.deps = deps
        self.allocation = allocation
        self.views = views
        self.changes = changes

    def order_id_for(self, hospital_id: str, request_id: str) -> str:
        """Deterministic: the same request of the same hospital is the same order."""
        digest = hashlib.sha256(f"{hospital_id}\0{request_id}".encode()).hexdigest()[:20].upper()
        return f"ORD-{self.deps.site_id}-{digest}"

    async def place_order(self, placed: OrderPlaced, meta: Meta) -> OrderView:
        """Record the order and run its allocation; answers with the outcome, or PLACED if
        the allocation takes longer than `place_wait` (it goes on)."""
        order_id = self.order_id_for(placed.hospital_id, placed.request_id)
        command = PlaceOrder(placed, meta.at)
        for attempt in range(3):
            try:
                outcome = await execute(
                    self.deps.store, ORDER, order_id, partial(decide, command=command),
                    meta.correlated(order_id),
                )  # fmt: skip
                break
            except ConcurrencyConflict:
                if attempt == 2:
                    raise
                continue  # the same request arrived twice at once: decide on the winner's order
        if outcome.events:
            self.changes.notify(order_id)
            ORDERS.labels("placed").inc()
        if outcome.state.status is OrderStatus.PLACED:
            saga = self.allocation.start(order_id)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(saga), self.deps.config.place_wait)
        return await self.views.view(order_id)

    async def cancel_order(
        self, order_id: str, hospital_id: str, reason: str, meta: Meta
    ) -> OrderView:
        await self.views.view(order_id, hospital_id)  # NOT_FOUND for another hospital's order
        command = CancelOrder(reason, hospital_id)
        outcome = await execute(
            self.deps.store, ORDER, order_id, partial(decide, command=command),
            meta.correlated(order_id),
        )  # fmt: skip
        if outcome.events:
            self.changes.notify(order_id)
            ORDERS.labels("cancelled").inc()
            for unit in outcome.state.released:
                # a failure is retried by the reconciler
                await release(
                    self.deps, unit.site_id, unit.unit_id, order_id,
                    f"order {order_id} cancelled: {reason}",
                )  # fmt: skip
        return await self.views.view(order_id)

    async def record_shipment(self, order_id: str, command: RecordShipment, meta: Meta) -> None:
        """A fact of the order's shipment (from the delivery events); recorded once."""
        outcome = await execute(
            self.deps.store, ORDER, order_id, partial(decide, command=command), meta
        )
        if outcome.events:
            self.changes.notify(order_id)

    async def hospital_step(
        self, order_id: str, hospital_id: str, command: OrderCommand, meta: Meta
    ) -> OrderView:
        """Receipt, infusion or an adverse-event report, e-signed by the hospital."""
        await self.views.view(order_id, hospital_id)
        outcome = await execute(
            self.deps.store, ORDER, order_id, partial(decide, command=command),
            meta.correlated(order_id),
        )  # fmt: skip
        if outcome.events:
            self.changes.notify(order_id)
        return await self.views.view(order_id)

    async def issue_notification(self, issued: NotificationIssued, meta: Meta) -> None:
        notification_id = f"NTF-{issued.recall_id}-{issued.order_id}"
        command = IssueNotification(issued)
        await execute(
            self.deps.store, NOTIFICATION, notification_id,
            partial(decide_notification, command=command), meta,
        )  # fmt: skip

    async def acknowledge_notification(
        self, notification_id: str, hospital_id: str, meta: Meta
    ) -> NotificationView:
        command = AcknowledgeNotification(hospital_id, meta.actor)
        await execute(
            self.deps.store, NOTIFICATION, notification_id,
            partial(decide_notification, command=command), meta,
        )  # fmt: skip
        (view,) = [
            n
            for n in await self.views.notifications(hospital_id)
            if n.notification_id == notification_id
        ]
        return view
