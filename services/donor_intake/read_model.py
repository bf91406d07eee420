"""Queries of the donor read model (built by projections/donors.py)."""

from __future__ import annotations

import json

import asyncpg
from cellbank.donor.v1 import donor_service_pb2 as pb

from shared.errors import NotFound


class DonorReadModel:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def donor(self, donor_id: str) -> pb.DonorView:
        row = await self.pool.fetchrow("SELECT * FROM donors WHERE donor_id = $1", donor_id)
        if row is None:
            raise NotFound(f"donor {donor_id} not found (or not projected yet)")
        return pb.DonorView(
            donor_id=row["donor_id"],
            donor_ref=row["donor_ref"],
            consent=row["consent"],
            eligibility=row["eligibility"],
            eligibility_reasons=row["eligibility_reasons"],
            deferred_until=row["deferred_until"].isoformat() if row["deferred_until"] else "",
            hla=[
                pb.HlaLocus(locus=h["locus"], alleles=h["alleles"]) for h in json.loads(row["hla"])
            ],
            kir_genes=row["kir_genes"],
            abo=row["abo"],
            rh=row["rh"],
            cmv=row["cmv"],
            dins=row["dins"],
            version=row["version"],
        )
