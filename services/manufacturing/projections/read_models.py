"""Manufacturing read models: donors/collections it depends on, and its batches and units."""

from __future__ import annotations

import json

import asyncpg

from services.manufacturing.adapters.codec import CODEC
from services.manufacturing.domain import model
from services.manufacturing.upstream import donor
from shared.events import StoredEvent
from shared.topics import DONOR_EVENTS, MANUFACTURING_EVENTS


class DonorFactsProjection:
    """Donor eligibility and collections as published by donor intake (any site)."""

    name = "donor_facts"
    topics = (DONOR_EVENTS,)
    rows_keyed_by_aggregate = True  # batched in waves on the fast path (shared.batched_apply)

    async def apply(self, conn: asyncpg.Connection, event: StoredEvent) -> None:
        if event.aggregate_type != "donor":
            return
        fact = donor.translate(event)
        if isinstance(fact, donor.DonorEligibility):
            await conn.execute(
                "INSERT INTO donor_status VALUES ($1, $2, $3) ON CONFLICT (donor_id) DO UPDATE"
                " SET eligibility = $2, version = $3 WHERE donor_status.version < $3",
                event.aggregate_id, fact.status, event.aggregate_version,
            )  # fmt: skip
        elif isinstance(fact, donor.Collection):
            await conn.execute(
                "INSERT INTO known_collections VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
                fact.din, event.site_id, event.aggregate_id, fact.collected_at, fact.eligibility,
                fact.urgent_physician_request,
            )  # fmt: skip


class BatchesProjection:
    name = "batches"
    topics = (MANUFACTURING_EVENTS,)
    rows_keyed_by_aggregate = True  # batched in waves on the fast path (shared.batched_apply)

    async def apply(self, conn: asyncpg.Connection, event: StoredEvent) -> None:
        e = CODEC.decode(event.event_type, event.payload)
        batch_id, version = event.aggregate_id, event.aggregate_version
        match e:
            case model.BatchStarted():
                await conn.execute(
                    "INSERT INTO batches (batch_id, din, donor_id, product_type, status, version)"
                    " VALUES ($1, $2, $3, $4, 'IN_PROCESS', $5) ON CONFLICT DO NOTHING",
                    batch_id, e.din, e.donor_id, e.product_type, version,
                )  # fmt: skip
                return
            case model.QcResultRecorded():
                shown = f"{e.value:g}" if e.value is not None else e.text
                qc = json.dumps({e.test: {"result": shown, "passed": e.passed}})
                await conn.execute(
                    "UPDATE batches SET qc = qc || $2::jsonb, version = $3 WHERE batch_id = $1",
                    batch_id, qc, version,
                )  # fmt: skip
                return
            case model.BatchReleased():
                await conn.execute(
                    "UPDATE batches SET status = 'RELEASED', released_by = $2, version = $3"
                    " WHERE batch_id = $1",
                    batch_id, e.signature.name, version,
                )  # fmt: skip
                await conn.executemany(
                    "INSERT INTO units VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)"
                    " ON CONFLICT DO NOTHING",
                    [
                        (u.unit_id, batch_id, u.din, u.product_code, u.division, u.viable_nk_cells,
                         u.cd3_cells, u.volume_ml, u.expires_on, u.status, u.segregated, list(u.labels),
                         u.restricting_allele)
                        for u in e.units
                    ],
                )  # fmt: skip
                return
        await conn.execute("UPDATE batches SET version = $2 WHERE batch_id = $1", batch_id, version)
