"""Donor read model: one row per donor, one per collection (same transaction as checkpoint)."""

from __future__ import annotations

import json

import asyncpg

from services.donor_intake.adapters.codec import CODEC
from services.donor_intake.domain import model
from shared.bulk_replay import Tables
from shared.events import StoredEvent
from shared.topics import DONOR_EVENTS


class DonorsProjection:
    name = "donors"
    topics = (DONOR_EVENTS,)
    rows_keyed_by_aggregate = True  # batched in waves on the fast path (shared.batched_apply)
    bulk_tables = ("donors", "collections")  # fold: a replay's bulk path (shared.bulk_replay)

    async def apply(self, conn: asyncpg.Connection, event: StoredEvent) -> None:
        if event.aggregate_type != "donor":
            return
        e = CODEC.decode(event.event_type, event.payload)
        donor_id = event.aggregate_id
        if isinstance(e, model.DonorRegistered):
            await conn.execute(
                "INSERT INTO donors (donor_id, donor_ref, version, updated_at, updated_by)"
                " VALUES ($1, $2, $3, $4, $5) ON CONFLICT (donor_id) DO NOTHING",
                donor_id, e.donor_ref, event.aggregate_version, event.recorded_at, event.actor,
            )  # fmt: skip
            return
        if isinstance(e, model.CollectionRecorded):
            await conn.execute(
                "INSERT INTO collections VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
                " ON CONFLICT (din) DO NOTHING",
                e.din, donor_id, e.collected_at, e.volume_ml, e.nk_cells, e.cd3_cells,
                e.eligibility.value, e.urgent_physician_request,
            )  # fmt: skip
        changes = _changes(e)
        parts = [
            f"{column} = {expr.format(f'${i}')}" for i, (column, expr, _) in enumerate(changes, 1)
        ]
        n = len(changes)
        parts += [f"version = ${n + 2}", f"updated_at = ${n + 3}", f"updated_by = ${n + 4}"]
        await conn.execute(
            f"UPDATE donors SET {', '.join(parts)} WHERE donor_id = ${n + 1}",
            *(value for _, _, value in changes),
            donor_id, event.aggregate_version, event.recorded_at, event.actor,
        )  # fmt: skip

    def fold(self, tables: Tables, event: StoredEvent) -> None:
        """apply's rows, in memory (a replay into an empty database)."""
        if event.aggregate_type != "donor":
            return
        e = CODEC.decode(event.event_type, event.payload)
        donor_id, donors = event.aggregate_id, tables["donors"]
        if isinstance(e, model.DonorRegistered):
            donors.insert(
                donor_id=donor_id, donor_ref=e.donor_ref, version=event.aggregate_version,
                updated_at=event.recorded_at, updated_by=event.actor,
            )  # fmt: skip
            return
        if isinstance(e, model.CollectionRecorded):
            tables["collections"].insert(
                din=e.din, donor_id=donor_id, collected_at=e.collected_at, volume_ml=e.volume_ml,
                nk_cells=e.nk_cells, cd3_cells=e.cd3_cells, eligibility=e.eligibility.value,
                urgent_physician_request=e.urgent_physician_request,
            )  # fmt: skip
        row = donors.get(donor_id)
        if row is None:
            return
        sets = {
            column: [*row[column], value] if expr.startswith("array_append") else value
            for column, expr, value in _changes(e)
        }
        donors.update(
            donor_id, **sets, version=event.aggregate_version, updated_at=event.recorded_at,
            updated_by=event.actor,
        )  # fmt: skip


def _changes(e: object) -> list[tuple[str, str, object]]:
    """(column, SQL expression around the placeholder {}, value) for one event."""
    match e:
        case model.ConsentGiven():
            return [("consent", "{}", "GIVEN")]
        case model.ConsentWithdrawn():
            return [("consent", "{}", "WITHDRAWN")]
        case model.EligibilityDetermined(status, reasons):
            return [
                ("eligibility", "{}", status.value),
                ("eligibility_reasons", "{}", list(reasons)),
            ]
        case model.DonorDeferred(until, reason):
            return [("deferred_until", "{}", until), ("deferral_reason", "{}", reason)]
        case model.HlaTyped(loci):
            hla = [{"locus": t.locus, "alleles": list(t.alleles)} for t in loci]
            return [("hla", "{}::jsonb", json.dumps(hla))]
        case model.KirGenotyped(genes):
            return [("kir_genes", "{}", list(genes))]
        case model.BloodGroupRecorded(abo, rh):
            return [("abo", "{}", abo), ("rh", "{}", rh)]
        case model.CmvSerostatusRecorded(status):
            return [("cmv", "{}", status.value)]
        case model.CollectionRecorded(din):
            return [("dins", "array_append(dins, {})", din)]
    return []
