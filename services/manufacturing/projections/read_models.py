"""Manufacturing read models: donors/collections it depends on, and its batches and units."""

from __future__ import annotations

import json

import asyncpg

from services.manufacturing.adapters.codec import CODEC
from services.manufacturing.domain import model
from services.manufacturing.upstream import donor
from shared.bulk_replay import Tables
from shared.events import StoredEvent
from shared.topics import DONOR_EVENTS, MANUFACTURING_EVENTS


class DonorFactsProjection:
    """Donor eligibility and collections as published by donor intake (any site)."""

    name = "donor_facts"
    topics = (DONOR_EVENTS,)
    rows_keyed_by_aggregate = True  # batched in waves on the fast path (shared.batched_apply)
    bulk_tables = ("donor_status", "known_collections")  # fold: shared.bulk_replay

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

    def fold(self, tables: Tables, event: StoredEvent) -> None:
        """apply's rows, in memory (a replay into an empty database)."""
        if event.aggregate_type != "donor":
            return
        fact = donor.translate(event)
        if isinstance(fact, donor.DonorEligibility):
            status, version = tables["donor_status"], event.aggregate_version
            row = status.get(event.aggregate_id)
            if row is None:
                status.insert(donor_id=event.aggregate_id, eligibility=fact.status, version=version)
            elif row["version"] < version:
                status.update(event.aggregate_id, eligibility=fact.status, version=version)
        elif isinstance(fact, donor.Collection):
            tables["known_collections"].insert(
                din=fact.din, site_id=event.site_id, donor_id=event.aggregate_id,
                collected_at=fact.collected_at, eligibility=fact.eligibility,
                urgent_physician_request=fact.urgent_physician_request,
            )  # fmt: skip


class BatchesProjection:
    name = "batches"
    topics = (MANUFACTURING_EVENTS,)
    rows_keyed_by_aggregate = True  # batched in waves on the fast path (shared.batched_apply)
    bulk_tables = ("batches", "units")  # fold: shared.bulk_replay

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

    def fold(self, tables: Tables, event: StoredEvent) -> None:
        """apply's rows, in memory (a replay into an empty database)."""
        e = CODEC.decode(event.event_type, event.payload)
        batch_id, version, batches = event.aggregate_id, event.aggregate_version, tables["batches"]
        match e:
            case model.BatchStarted():
                batches.insert(
                    batch_id=batch_id, din=e.din, donor_id=e.donor_id,
                    product_type=e.product_type, status="IN_PROCESS", version=version,
                )  # fmt: skip
                return
            case model.QcResultRecorded():
                row = batches.get(batch_id)
                if row is not None:
                    shown = f"{e.value:g}" if e.value is not None else e.text
                    qc = {**json.loads(row["qc"]), e.test: {"result": shown, "passed": e.passed}}
                    batches.update(batch_id, qc=json.dumps(qc), version=version)
                return
            case model.BatchReleased():
                batches.update(
                    batch_id, status="RELEASED", released_by=e.signature.name, version=version
                )
                units = tables["units"]
                for u in e.units:
                    units.insert(
                        unit_id=u.unit_id, batch_id=batch_id, din=u.din,
                        product_code=u.product_code, division=u.division,
                        viable_nk_cells=u.viable_nk_cells, cd3_cells=u.cd3_cells,
                        volume_ml=u.volume_ml, expires_on=u.expires_on, status=u.status,
                        segregated=u.segregated, labels=list(u.labels),
                        restricting_allele=u.restricting_allele,
                    )  # fmt: skip
                return
        batches.update(batch_id, version=version)
