"""Queries of matching's database: the network inventory feed (for the search index), a
hospital's orders (from the event store), and the holds the reconciler checks (the PostgreSQL
adapters of services.matching.ports' IndexSource and ReadModel)."""

from __future__ import annotations

import logging
import time

import asyncpg

from services.matching.domain.ranking import UnitProfile
from services.matching.index import Availability, CandidateIndex
from services.matching.ports import Hold
from shared.events import StoredEvent
from shared.postgres_eventstore import EVENT_COLUMNS, row_to_event

log = logging.getLogger(__name__)

ORDER_PLACED = "cellbank.matching.v1.OrderPlaced"

# Units whose own row, origin or donor facts changed in a transaction at or after the last
# refresh's snapshot xmin (every transaction not yet visible then has an xid >= xmin).
_CHANGED_UNITS = """
WITH changed AS (
    SELECT unit_id FROM candidate_units WHERE changed_xid >= $1::xid8
    UNION SELECT unit_id FROM candidate_origins WHERE changed_xid >= $1::xid8
    UNION SELECT o.unit_id FROM candidate_donors d JOIN candidate_origins o USING (donor_id)
          WHERE d.changed_xid >= $1::xid8
)
SELECT u.unit_id, u.site_id, u.din, u.product_type, u.status, u.expires_on, u.viable_nk_cells,
       u.cd3_cells, u.reserved_for, u.hold_until, u.version,
       o.restricting_allele, o.donor_id, d.hla, d.kir_genes, d.cmv, d.abo
FROM changed JOIN candidate_units u USING (unit_id)
LEFT JOIN candidate_origins o USING (unit_id)
LEFT JOIN candidate_donors d ON d.donor_id = o.donor_id
"""


class IndexFeed:
    """Keeps a CandidateIndex in step with the network inventory's tables, incrementally."""

    def __init__(self, pool: asyncpg.Pool, index: CandidateIndex) -> None:
        self.pool = pool
        self.index = index
        self._since = 0
        self.refreshed_at = 0.0

    async def refresh(self) -> int:
        """Apply every change since the last refresh; returns the rows read."""
        async with self.pool.acquire() as conn:
            xmin = await conn.fetchval("SELECT pg_snapshot_xmin(pg_current_snapshot())")
            rows = await conn.fetch(_CHANGED_UNITS, self._since)
        for r in rows:
            self.index.upsert(
                _profile(r), Availability(r["status"], r["reserved_for"], r["hold_until"])
            )
        self._since = xmin
        self.refreshed_at = time.monotonic()
        return len(rows)


def _profile(r: asyncpg.Record) -> UnitProfile:
    return UnitProfile(
        unit_id=r["unit_id"],
        din=r["din"],
        site_id=r["site_id"],
        product_type=r["product_type"],
        viable_nk_cells=r["viable_nk_cells"],
        cd3_cells=r["cd3_cells"],
        expires_on=r["expires_on"],
        donor_hla=tuple(r["hla"] or ()),
        donor_kir=tuple(r["kir_genes"] or ()),
        donor_cmv=r["cmv"] or "UNKNOWN",
        donor_abo=r["abo"] or "",
        restricting_allele=r["restricting_allele"] or "",
        version=r["version"],
        donor_id=r["donor_id"] or "",
    )


class MatchingReadModel:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def order_ids_of(self, hospital_id: str, limit: int = 500) -> list[str]:
        """Orders placed by the hospital's system (`hospital:H1`) or one of its people
        (`clinician:h1-clara@H1`), newest first."""
        rows = await self.pool.fetch(
            "SELECT aggregate_id FROM events WHERE event_type = $1"
            " AND (actor = $2 OR (actor LIKE $3 AND right(actor, $4) = $5))"
            " ORDER BY position DESC LIMIT $6",
            ORDER_PLACED, f"hospital:{hospital_id}", "%@%", len(hospital_id) + 1,
            f"@{hospital_id}", limit,
        )  # fmt: skip
        return [r["aggregate_id"] for r in rows]

    async def events_of(self, order_ids: list[str]) -> dict[str, list[StoredEvent]]:
        rows = await self.pool.fetch(
            f"SELECT {EVENT_COLUMNS} FROM events WHERE aggregate_id = ANY($1::text[])"
            " ORDER BY aggregate_id, aggregate_version",
            order_ids,
        )
        out: dict[str, list[StoredEvent]] = {i: [] for i in order_ids}
        for r in rows:
            e = row_to_event(r)
            out[e.aggregate_id].append(e)
        return out

    async def aggregates_of_type(self, aggregate_type: str) -> list[str]:
        rows = await self.pool.fetch(
            "SELECT DISTINCT aggregate_id FROM events WHERE aggregate_type = $1", aggregate_type
        )
        return [r["aggregate_id"] for r in rows]

    async def orders_whose_latest_event_is(self, *event_types: str) -> list[str]:
        """This site's orders by their latest event (e.g. awaiting allocation, allocated)."""
        rows = await self.pool.fetch(
            "SELECT aggregate_id FROM (SELECT DISTINCT ON (aggregate_id) aggregate_id, event_type"
            " FROM events WHERE aggregate_type = 'order'"
            " ORDER BY aggregate_id, aggregate_version DESC) latest"
            " WHERE event_type = ANY($1::text[])",
            list(event_types),
        )
        return [r["aggregate_id"] for r in rows]

    async def holds(self, order_prefix: str, unit_ids: list[str]) -> list[Hold]:
        """Units reserved for this site's orders, and the units its live orders hold."""
        rows = await self.pool.fetch(
            "SELECT unit_id, site_id, status, reserved_for, hold_until, version FROM candidate_units"
            " WHERE (reserved_for <> '' AND starts_with(reserved_for, $1))"
            " OR unit_id = ANY($2::text[])",
            order_prefix, unit_ids,
        )  # fmt: skip
        return [Hold(*r.values()) for r in rows]
