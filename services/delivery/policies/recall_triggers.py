"""Recall triggers raised at this site: a donor's positive marker after collection (donor
intake) and a positive 14-day sterility (manufacturing) each raise one recall (idempotent:
the recall id comes from the triggering event)."""

from __future__ import annotations

import asyncpg

from services.delivery.app import Delivery
from services.delivery.domain.model import Trigger
from services.delivery.upstream import donor, manufacturing
from shared.commands import Meta
from shared.events import StoredEvent
from shared.topics import DONOR_EVENTS, MANUFACTURING_EVENTS


class RecallTriggers:
    name = "recall_triggers"
    topics = (DONOR_EVENTS, MANUFACTURING_EVENTS)

    def __init__(self, app: Delivery) -> None:
        self.app = app

    async def apply(self, conn: asyncpg.Connection, event: StoredEvent) -> None:
        if event.site_id != self.app.site_id:
            return  # each site raises the recalls of its own donors and batches
        meta = Meta(
            actor=f"service:delivery-{self.app.site_id}",
            reason="",
            at=event.occurred_at,
            correlation_id=event.correlation_id,
            causation_id=event.event_id,
        )
        if event.aggregate_type == "donor":
            e = donor.translate(event)
            if isinstance(e, donor.PositiveAfterCollection):
                reason = (
                    f"donor {event.aggregate_id} positive for {e.marker} (specimen"
                    f" {e.specimen_date.isoformat()}) after collection"
                )
                await self.app.raise_recall(
                    Trigger.DONOR_POSITIVE, event.aggregate_id, reason, e.dins, (),
                    event.event_id, meta.because(reason),
                )  # fmt: skip
        elif event.aggregate_type == "batch":
            m = manufacturing.translate(event)
            if isinstance(m, manufacturing.SterilityFailed):
                reason = f"positive 14-day sterility of batch {event.aggregate_id}"
                await self.app.raise_recall(
                    Trigger.STERILITY_POSITIVE, event.aggregate_id, reason, (m.din,), m.unit_ids,
                    event.event_id, meta.because(reason),
                )  # fmt: skip
