"""Manufacturing command handling: look up what the domain needs, then load → decide → append."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Protocol

from services.kernel.isbt128 import validate_din
from services.manufacturing.adapters.codec import BATCH
from services.manufacturing.domain import batch
from services.manufacturing.domain.model import Batch, ReleaseBatch, StartBatch
from services.manufacturing.domain.product_types import ProductType
from shared.commands import Meta, Outcome, execute, load
from shared.errors import NotFound
from shared.eventstore import EventStore


def batch_id_for(din: str) -> str:
    """One batch per collection: the id derives from the DIN, so a second start is refused."""
    return f"batch-{din}"


class DonorFacts(Protocol):
    """What manufacturing knows of donors and collections (its read model, or a fake)."""

    async def collection_donor(self, din: str, site_id: str) -> str:
        """The donor of a collection of this site (NotFound, PreconditionFailed if another's)."""
        ...

    async def donor_eligibility(self, donor_id: str) -> str: ...


class Manufacturing:
    """The manufacturing application service of one site."""

    def __init__(
        self,
        store: EventStore,
        read_model: DonorFacts,
        product_types: Mapping[str, ProductType],
        site_id: str,
    ) -> None:
        self.site_id = site_id
        self.store = store
        self.read_model = read_model
        self.product_types = product_types

    async def start_batch(
        self, din: str, product_type: str, operator: str, meta: Meta
    ) -> Outcome[Batch]:
        validate_din(din)
        donor_id = await self.read_model.collection_donor(din, self.site_id)
        command = StartBatch(batch_id_for(din), din, donor_id, product_type, operator)
        return await self.handle(command.batch_id, command, meta, expected_version=None)

    async def release(
        self, batch_id: str, command: ReleaseBatch, meta: Meta, expected_version: int | None
    ) -> Outcome[Batch]:
        """The donor's current eligibility comes from the donor read model at release time."""
        state, _ = await load(self.store, BATCH, batch_id)
        if not state.batch_id:
            raise NotFound(f"batch {batch_id} not started")
        eligibility = await self.read_model.donor_eligibility(state.donor_id)
        decided = dataclasses.replace(command, donor_eligibility=eligibility)
        return await self.handle(batch_id, decided, meta, expected_version)

    async def handle(
        self, batch_id: str, command: batch.Command, meta: Meta, expected_version: int | None
    ) -> Outcome[Batch]:
        return await execute(
            self.store,
            BATCH,
            batch_id,
            lambda s: batch.decide(s, command, self.product_types),
            meta,
            expected_version=expected_version,
        )
