"""Matching's network inventory: every site's stocked units (storage's events) with where each
comes from (manufacturing's releases) and its donor's facts (donor intake's events), read
through the upstream translators into matching's own tables (migrations/001)."""

from __future__ import annotations

import asyncpg

from services.matching.upstream.donor import (
    DonorBloodGrouped,
    DonorCmvTested,
    DonorHlaTyped,
    DonorKirGenotyped,
    donor_fact,
)
from services.matching.upstream.manufacturing import BatchOfDonor, BatchUnitsReleased, batch_fact
from services.matching.upstream.storage import (
    UnitFact,
    UnitHeld,
    UnitHoldEnded,
    UnitRevised,
    UnitStatusChanged,
    UnitStocked,
    unit_fact,
)
from shared.bulk_replay import NotNullViolation, Tables
from shared.events import StoredEvent
from shared.topics import DONOR_EVENTS, MANUFACTURING_EVENTS, STORAGE_EVENTS

_TOUCHED = "changed_xid = pg_current_xact_id()"


class CandidateUnitsProjection:
    """Every site's units in stock, their status, hold and version (the site is the envelope's)."""

    name = "candidate_units"
    topics = (STORAGE_EVENTS,)
    rows_keyed_by_aggregate = True  # batched in waves on the fast path (shared.batched_apply)
    bulk_tables = ("candidate_units",)  # fold: shared.bulk_replay

    async def apply(self, conn: asyncpg.Connection, event: StoredEvent) -> None:
        fact = unit_fact(event)
        if fact is None:
            return
        unit_id, version = event.aggregate_id, event.aggregate_version
        if isinstance(fact, UnitStocked):
            await conn.execute(
                "INSERT INTO candidate_units (unit_id, site_id, din, product_type, status,"
                " expires_on, viable_nk_cells, cd3_cells, version)"
                " VALUES ($1, $2, $3, $4, 'STORED', $5, $6, $7, $8) ON CONFLICT DO NOTHING",
                unit_id, event.site_id, fact.din, fact.product_type, fact.expires_on,
                fact.viable_nk_cells, fact.cd3_cells, version,
            )  # fmt: skip
            return
        sets, values = _changes(fact)
        n = len(values)
        assignments = ", ".join([*sets, f"version = ${n + 2}", _TOUCHED])
        await conn.execute(
            f"UPDATE candidate_units SET {assignments} WHERE unit_id = ${n + 1}",
            *values, unit_id, version,
        )  # fmt: skip

    def fold(self, tables: Tables, event: StoredEvent) -> None:
        """apply's rows, in memory (a replay into an empty database)."""
        fact = unit_fact(event)
        if fact is None:
            return
        unit_id, version, units = (
            event.aggregate_id,
            event.aggregate_version,
            tables["candidate_units"],
        )
        if isinstance(fact, UnitStocked):
            units.insert(
                unit_id=unit_id, site_id=event.site_id, din=fact.din,
                product_type=fact.product_type, status="STORED", expires_on=fact.expires_on,
                viable_nk_cells=fact.viable_nk_cells, cd3_cells=fact.cd3_cells, version=version,
            )  # fmt: skip
            return
        units.update(unit_id, **_folded(fact), version=version)


def _folded(fact: UnitFact) -> dict[str, object]:
    """_changes's assignments as values (the bulk fold)."""
    released: dict[str, object] = {"reserved_for": "", "hold_until": None}
    match fact:
        case UnitHeld(order_id, hold_until):
            return {"reserved_for": order_id, "hold_until": hold_until}
        case UnitHoldEnded():
            return released
        case UnitStatusChanged(status, hold_ended):
            return {"status": status, **(released if hold_ended else {})}
        case UnitRevised():
            return {}
    raise AssertionError(f"unexpected unit fact {fact!r}")


def _changes(fact: UnitFact) -> tuple[list[str], list[object]]:
    """SQL assignments (placeholders $1…) and their values for one later fact of a unit."""
    released = ["reserved_for = ''", "hold_until = NULL"]
    match fact:
        case UnitHeld(order_id, hold_until):
            return ["reserved_for = $1", "hold_until = $2"], [order_id, hold_until]
        case UnitHoldEnded():
            return released, []
        case UnitStatusChanged(status, hold_ended):
            return ["status = $1", *(released if hold_ended else [])], [status]
        case UnitRevised():
            return [], []
    raise AssertionError(f"unexpected unit fact {fact!r}")


class CandidateOriginsProjection:
    """Which donor each released unit comes from (and a VST's restricting allele), and what the
    ranking reads of every donor."""

    name = "candidate_origins"
    topics = (MANUFACTURING_EVENTS, DONOR_EVENTS)
    rows_keyed_by_aggregate = True  # batched in waves on the fast path (shared.batched_apply)
    bulk_tables = ("candidate_batches", "candidate_origins", "candidate_donors")  # bulk_replay

    async def apply(self, conn: asyncpg.Connection, event: StoredEvent) -> None:
        if event.aggregate_type == "donor":
            await self._donor(conn, event)
            return
        fact = batch_fact(event)
        if isinstance(fact, BatchOfDonor):
            await conn.execute(
                "INSERT INTO candidate_batches VALUES ($1, $2) ON CONFLICT DO NOTHING",
                event.aggregate_id, fact.donor_id,
            )  # fmt: skip
        elif isinstance(fact, BatchUnitsReleased):
            # The donor comes from the batch's start (same aggregate, so always written
            # before). Written without a read, so a replay batches it (a missing start leaves
            # donor_id NULL: refused by its NOT NULL, the record is dead-lettered).
            await conn.executemany(
                "INSERT INTO candidate_origins (unit_id, donor_id, restricting_allele)"
                " SELECT $1, b.donor_id, $2"
                " FROM (SELECT 1) AS one LEFT JOIN candidate_batches b ON b.batch_id = $3"
                " ON CONFLICT DO NOTHING",
                [(u.unit_id, u.restricting_allele, event.aggregate_id) for u in fact.units],
            )  # fmt: skip

    async def _donor(self, conn: asyncpg.Connection, event: StoredEvent) -> None:
        if (written := _donor_column(event)) is None:
            return
        column, value = written
        await conn.execute(
            f"INSERT INTO candidate_donors (donor_id, {column}) VALUES ($1, $2)"
            f" ON CONFLICT (donor_id) DO UPDATE SET {column} = $2, {_TOUCHED}",
            event.aggregate_id, value,
        )  # fmt: skip

    def fold(self, tables: Tables, event: StoredEvent) -> None:
        """apply's rows, in memory (a replay into an empty database)."""
        if event.aggregate_type == "donor":
            if (written := _donor_column(event)) is not None:
                column, value = written
                tables["candidate_donors"].upsert(donor_id=event.aggregate_id, **{column: value})
            return
        fact = batch_fact(event)
        batches = tables["candidate_batches"]
        if isinstance(fact, BatchOfDonor):
            batches.insert(batch_id=event.aggregate_id, donor_id=fact.donor_id)
        elif isinstance(fact, BatchUnitsReleased):
            batch = batches.get(event.aggregate_id)
            if batch is None:  # as apply's join: donor_id NULL
                raise NotNullViolation(f"no candidate_batches row for {event.aggregate_id}")
            for u in fact.units:
                tables["candidate_origins"].insert(
                    unit_id=u.unit_id, donor_id=batch["donor_id"],
                    restricting_allele=u.restricting_allele,
                )  # fmt: skip


def _donor_column(event: StoredEvent) -> tuple[str, object] | None:
    """The candidate_donors column a donor event writes and its value (None: none), for the
    live apply and the bulk fold alike."""
    match donor_fact(event):
        case DonorHlaTyped(alleles):
            return "hla", list(alleles)
        case DonorKirGenotyped(genes):
            return "kir_genes", list(genes)
        case DonorCmvTested(status):
            return "cmv", status.value
        case DonorBloodGrouped(abo):
            return "abo", abo
    return None
