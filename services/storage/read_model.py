"""Queries of the storage read models (site inventory, network inventory, released units)."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

import asyncpg
from cellbank.storage.v1 import storage_service_pb2 as pb
from google.protobuf.timestamp_pb2 import Timestamp

from services.storage.domain.model import UnitFacts
from shared.errors import NotFound


class StorageReadModel:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def released_unit(self, unit_id: str, site_id: str) -> UnitFacts | None:
        row = await self.pool.fetchrow(
            "SELECT * FROM released_units WHERE unit_id = $1 AND site_id = $2", unit_id, site_id
        )
        if row is None:
            return None
        return UnitFacts(
            row["din"], row["product_code"], row["product_type"], row["viable_nk_cells"],
            row["cd3_cells"], row["volume_ml"], row["expires_on"], row["segregated"],
        )  # fmt: skip

    async def unit(self, unit_id: str, site_id: str) -> pb.InventoryUnit:
        row = await self.pool.fetchrow(
            "SELECT * FROM inventory WHERE unit_id = $1 AND site_id = $2", unit_id, site_id
        )
        if row is None:
            raise NotFound(f"unit {unit_id} is not in storage (or not projected yet)")
        return inventory_unit(row)

    async def inventory(
        self, site_id: str, status: str, product_type: str, tank_id: str
    ) -> list[pb.InventoryUnit]:
        rows = await self.pool.fetch(
            "SELECT * FROM inventory WHERE site_id = $1 AND ($2 = '' OR status = $2)"
            " AND ($3 = '' OR product_type = $3) AND ($4 = '' OR tank_id = $4) ORDER BY unit_id",
            site_id, status, product_type, tank_id,
        )  # fmt: skip
        return [inventory_unit(r) for r in rows]

    async def network(self, product_type: str, now: datetime) -> list[pb.NetworkUnit]:
        """Available units of every site: stored, not reserved, not expired, with donor facts."""
        rows = await self.pool.fetch(
            "SELECT i.*, r.donor_id, d.hla, d.kir_genes, d.cmv, d.abo, d.rh"
            " FROM inventory i JOIN released_units r USING (unit_id)"
            " LEFT JOIN donor_facts d ON d.donor_id = r.donor_id"
            " WHERE i.status = 'STORED' AND i.expires_on >= $3"  # usable to the day's end
            " AND (i.reserved_for = '' OR i.hold_until <= $2)"
            " AND ($1 = '' OR i.product_type = $1) ORDER BY i.expires_on, i.unit_id",
            product_type, now, now.date(),
        )  # fmt: skip
        return [
            pb.NetworkUnit(
                unit_id=r["unit_id"],
                site_id=r["site_id"],
                product_type=r["product_type"],
                viable_nk_cells=r["viable_nk_cells"],
                cd3_cells=r["cd3_cells"],
                expires_on=r["expires_on"].isoformat(),
                donor_id=r["donor_id"],
                hla=r["hla"] or [],
                kir_genes=r["kir_genes"] or [],
                cmv=r["cmv"] or "UNKNOWN",
                abo=r["abo"] or "",
                rh=r["rh"] or "",
                version=r["version"],
            )
            for r in rows
        ]

    async def due_holds(self, site_id: str, now: datetime, limit: int = 100) -> list[str]:
        rows = await self.pool.fetch(
            "SELECT unit_id FROM inventory WHERE site_id = $1 AND reserved_for <> ''"
            " AND hold_until <= $2 ORDER BY hold_until LIMIT $3",
            site_id, now, limit,
        )  # fmt: skip
        return [r["unit_id"] for r in rows]

    async def next_hold(self, site_id: str) -> datetime | None:
        value = await self.pool.fetchval(
            "SELECT min(hold_until) FROM inventory WHERE site_id = $1 AND reserved_for <> ''",
            site_id,
        )
        return value

    async def expiring(self, site_id: str, today: date, limit: int = 100) -> list[str]:
        rows = await self.pool.fetch(
            "SELECT unit_id FROM inventory WHERE site_id = $1 AND expires_on < $2"
            " AND status = 'STORED' LIMIT $3",
            site_id, today, limit,
        )  # fmt: skip
        return [r["unit_id"] for r in rows]


def _ts(value: datetime | None) -> Timestamp | None:
    if value is None:
        return None
    out = Timestamp()
    out.FromDatetime(value)
    return out


def inventory_unit(row: Any) -> pb.InventoryUnit:
    return pb.InventoryUnit(
        unit_id=row["unit_id"], din=row["din"], product_code=row["product_code"],
        product_type=row["product_type"], status=row["status"], address=row["address"],
        tank_id=row["tank_id"], segregated=row["segregated"], expires_on=row["expires_on"].isoformat(),
        viable_nk_cells=row["viable_nk_cells"], cd3_cells=row["cd3_cells"],
        reserved_for=row["reserved_for"], hold_until=_ts(row["hold_until"]), version=row["version"],
        quarantine_causes=row["quarantine_causes"],
    )  # fmt: skip
