"""The delivery of this site's orders and recalls that concern its hospitals, as the delivery
events (of every site) report them: each becomes an event of the order or a notification.
Commands are idempotent, so a redelivered event changes nothing."""

from __future__ import annotations

import logging

import asyncpg

from services.matching.app import Matching
from services.matching.domain.model import NotificationIssued, RecordShipment
from services.matching.upstream.delivery import (
    RecallNotice,
    ShipmentOpened,
    UnitsRecalled,
    delivery_fact,
)
from shared.commands import Meta
from shared.errors import CellBankError
from shared.events import StoredEvent
from shared.topics import DELIVERY_EVENTS

log = logging.getLogger(__name__)


class DeliveryPolicy:
    name = "delivery_policy"
    topics = (DELIVERY_EVENTS,)

    def __init__(self, app: Matching) -> None:
        self.app = app

    async def apply(self, conn: asyncpg.Connection, event: StoredEvent) -> None:
        fact = delivery_fact(event)
        if fact is None:
            return
        meta = Meta(
            actor=f"service:matching-{self.app.site_id}",
            reason=f"{event.event_type.rsplit('.', 1)[-1]} reported by {event.site_id}",
            at=event.occurred_at,
            correlation_id=event.correlation_id,
            causation_id=event.event_id,
        )
        if isinstance(fact, UnitsRecalled):
            for notice in fact.notices:
                if notice.order_site_id == self.app.site_id:
                    await self._notify(fact, notice, meta)
            return
        if isinstance(fact, ShipmentOpened):
            if fact.order_site_id == self.app.site_id:
                await conn.execute(
                    "INSERT INTO shipment_orders VALUES ($1, $2) ON CONFLICT DO NOTHING",
                    fact.shipment_id, fact.order_id,
                )  # fmt: skip
            return
        order_id = await conn.fetchval(
            "SELECT order_id FROM shipment_orders WHERE shipment_id = $1", fact.shipment_id
        )
        if order_id is None:
            return  # another site's order
        try:
            await self.app.handlers.record_shipment(order_id, RecordShipment(fact), meta)
        except CellBankError as exc:  # a rule of the order refused it: logged, not poison
            log.warning(
                "shipment fact not recorded on the order",
                extra={"order_id": order_id, "shipment_id": fact.shipment_id, "error": str(exc)},
            )

    async def _notify(self, recall: UnitsRecalled, notice: RecallNotice, meta: Meta) -> None:
        units = ", ".join(notice.unit_ids)
        message = (
            f"RECALL {recall.recall_id}: unit(s) {units} of order {notice.order_id} (patient"
            f" {notice.patient_ref}) are recalled — {recall.trigger}: {recall.reason}."
            " Quarantine any unit not yet infused; review recipients for adverse reactions."
        )
        await self.app.handlers.issue_notification(
            NotificationIssued(
                notice.hospital_id, recall.recall_id, notice.order_id, notice.unit_ids, message
            ),
            meta,
        )
