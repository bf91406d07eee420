"""The delivery of this site's orders and recalls that concern its hospitals, as the delivery
events (of every site) report them: each becomes an event of the order or a notification.
Commands are idempotent, so a redelivered event changes nothing."""

from __future__ import annotations

import logging

import asyncpg

from services.delivery.adapters.codec import CODEC as DELIVERY_CODEC
from services.delivery.domain import model as delivery
from services.matching.app import Matching
from services.matching.domain.model import (
    NotificationIssued,
    OrderDelivered,
    OrderDispatched,
    OrderShipmentCompromised,
    OrderShipmentDispositioned,
    OrderShipmentReturned,
    RecordShipment,
)
from shared.commands import Meta
from shared.errors import CellBankError
from shared.events import StoredEvent
from shared.topics import DELIVERY_EVENTS

log = logging.getLogger(__name__)
ShipmentFact = (
    OrderDispatched
    | OrderDelivered
    | OrderShipmentCompromised
    | OrderShipmentDispositioned
    | OrderShipmentReturned
)


class DeliveryPolicy:
    name = "delivery_policy"
    topics = (DELIVERY_EVENTS,)

    def __init__(self, app: Matching) -> None:
        self.app = app

    async def apply(self, conn: asyncpg.Connection, event: StoredEvent) -> None:
        e = DELIVERY_CODEC.decode(event.event_type, event.payload)
        meta = Meta(
            actor=f"service:matching-{self.app.site_id}",
            reason=f"{event.event_type.rsplit('.', 1)[-1]} reported by {event.site_id}",
            at=event.occurred_at,
            correlation_id=event.correlation_id,
            causation_id=event.event_id,
        )
        if isinstance(e, delivery.RecallRaised):
            for notice in e.notices:
                if notice.order_site_id == self.app.site_id:
                    await self._notify(e, notice, event.aggregate_id, meta)
            return
        if event.aggregate_type != "shipment":
            return
        shipment_id = event.aggregate_id
        if isinstance(e, delivery.ShipmentCreated):
            if e.order_site_id == self.app.site_id:
                await conn.execute(
                    "INSERT INTO shipment_orders VALUES ($1, $2) ON CONFLICT DO NOTHING",
                    shipment_id, e.order_id,
                )  # fmt: skip
            return
        order_id = await conn.fetchval(
            "SELECT order_id FROM shipment_orders WHERE shipment_id = $1", shipment_id
        )
        if order_id is None:
            return  # another site's order
        fact = _fact(shipment_id, e)
        if fact is None:
            return
        try:
            await self.app.record_shipment(order_id, RecordShipment(fact), meta)
        except CellBankError as exc:  # a rule of the order refused it: logged, not poison
            log.warning(
                "shipment fact not recorded on the order",
                extra={"order_id": order_id, "shipment_id": shipment_id, "error": str(exc)},
            )

    async def _notify(
        self,
        recall: delivery.RecallRaised,
        notice: delivery.RecallNotice,
        recall_id: str,
        meta: Meta,
    ) -> None:
        units = ", ".join(notice.unit_ids)
        message = (
            f"RECALL {recall_id}: unit(s) {units} of order {notice.order_id} (patient"
            f" {notice.patient_ref}) are recalled — {recall.trigger.value}: {recall.reason}."
            " Quarantine any unit not yet infused; review recipients for adverse reactions."
        )
        await self.app.issue_notification(
            NotificationIssued(
                notice.hospital_id, recall_id, notice.order_id, notice.unit_ids, message
            ),
            meta,
        )


def _fact(shipment_id: str, e: object) -> ShipmentFact | None:
    match e:
        case delivery.ShipmentDispatched(at):
            return OrderDispatched(shipment_id, at)
        case delivery.ShipmentDelivered(at):
            return OrderDelivered(shipment_id, at)
        case delivery.ShipmentCompromised(cause):
            return OrderShipmentCompromised(shipment_id, cause)
        case delivery.ShipmentDispositioned(decision):
            return OrderShipmentDispositioned(shipment_id, decision.value)
        case delivery.ShipmentReturned(outcome):
            return OrderShipmentReturned(shipment_id, outcome.value)
    return None
