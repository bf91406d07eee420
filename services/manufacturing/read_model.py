"""Queries of the manufacturing read models."""

from __future__ import annotations

import json
from typing import Any

import asyncpg
from cellbank.manufacturing.v1 import manufacturing_service_pb2 as pb

from shared.errors import NotFound, PreconditionFailed


class ManufacturingReadModel:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def collection_donor(self, din: str, site_id: str) -> str:
        row = await self.pool.fetchrow(
            "SELECT donor_id, site_id FROM known_collections WHERE din = $1", din
        )
        if row is None:
            raise NotFound(
                f"collection {din} is not known here (not collected, or not yet received)"
            )
        if row["site_id"] != site_id:
            raise PreconditionFailed(
                "collection of another site",
                f"{din} was collected at {row['site_id']}; it manufactures it",
            )
        return str(row["donor_id"])

    async def donor_eligibility(self, donor_id: str) -> str:
        value = await self.pool.fetchval(
            "SELECT eligibility FROM donor_status WHERE donor_id = $1", donor_id
        )
        return str(value or "PENDING")

    async def batch(self, batch_id: str) -> pb.BatchView:
        row = await self.pool.fetchrow("SELECT * FROM batches WHERE batch_id = $1", batch_id)
        if row is None:
            raise NotFound(f"batch {batch_id} not found (or not projected yet)")
        qc = json.loads(row["qc"])
        return pb.BatchView(
            batch_id=row["batch_id"],
            din=row["din"],
            donor_id=row["donor_id"],
            product_type=row["product_type"],
            status=row["status"],
            qc=[
                pb.QcView(test=t, result=v["result"], passed=v["passed"])
                for t, v in sorted(qc.items())
            ],
            version=row["version"],
            released_by=row["released_by"],
        )

    async def units(self, din: str = "") -> list[pb.Unit]:
        rows = await self.pool.fetch(
            "SELECT * FROM units WHERE ($1 = '' OR din = $1) ORDER BY unit_id", din
        )
        return [unit_view(r) for r in rows]


def unit_view(row: Any) -> pb.Unit:
    return pb.Unit(
        unit_id=row["unit_id"],
        batch_id=row["batch_id"],
        din=row["din"],
        product_code=row["product_code"],
        division=row["division"],
        viable_nk_cells=row["viable_nk_cells"],
        cd3_cells=row["cd3_cells"],
        volume_ml=row["volume_ml"],
        expires_on=str(row["expires_on"]),
        status=row["status"],
        segregated=row["segregated"],
        labels=list(row["labels"]),
        restricting_allele=row.get("restricting_allele") or "",
    )
