"""Manufacturing's service layer against the in-memory event store and a fake of donor facts."""

from __future__ import annotations

import pytest

from services.manufacturing.app import Manufacturing, batch_id_for
from services.manufacturing.domain.batch import Command
from services.manufacturing.domain.model import Step
from services.manufacturing.tests.test_batch_domain import (
    CRYOPRESERVED_AT,
    DIN,
    PASSING_QC,
    PRODUCTS,
    T0,
    qc,
    release,
    step,
)
from shared.chain_key import ChainKey
from shared.commands import Meta
from shared.errors import NotFound, PreconditionFailed
from shared.eventstore import InMemoryEventStore

META = Meta(actor="operator:olga", reason="test", at=T0)


class FakeDonorFacts:
    def __init__(self, collections: dict[str, str], eligibility: dict[str, str]) -> None:
        self.collections = collections
        self.eligibility = eligibility

    async def collection_donor(self, din: str, site_id: str) -> str:
        if din not in self.collections:
            raise NotFound(f"collection {din} is not known here")
        return self.collections[din]

    async def donor_eligibility(self, donor_id: str) -> str:
        return self.eligibility.get(donor_id, "PENDING")


@pytest.fixture
def store() -> InMemoryEventStore:
    return InMemoryEventStore("LON", chain_key=ChainKey.generate())


@pytest.fixture
def donors() -> FakeDonorFacts:
    return FakeDonorFacts({DIN: "donor-1"}, {"donor-1": "ELIGIBLE"})


@pytest.fixture
def manufacturing(store: InMemoryEventStore, donors: FakeDonorFacts) -> Manufacturing:
    return Manufacturing(store, donors, PRODUCTS, "LON")


async def processed_batch(manufacturing: Manufacturing) -> str:
    batch_id = (await manufacturing.start_batch(DIN, "NK-ALLO", "olga", META)).state.batch_id
    commands: list[Command] = [
        step(Step.EXPANSION_DAY, by="pavel", day=14),
        step(Step.CRYOPRESERVATION, by="pavel", at=CRYOPRESERVED_AT),
        *(qc(test, value, text) for test, (value, text) in PASSING_QC.items()),
    ]
    for command in commands:
        await manufacturing.handle(batch_id, command, META, expected_version=None)
    return batch_id


async def test_a_batch_starts_from_a_known_collection_of_the_site(
    manufacturing: Manufacturing, store: InMemoryEventStore
):
    outcome = await manufacturing.start_batch(DIN, "NK-ALLO", "olga", META)
    (started,) = outcome.events
    assert started.aggregate_id == batch_id_for(DIN) and outcome.version == 1
    assert outcome.state.donor_id == "donor-1"
    assert started.event_type == "cellbank.manufacturing.v1.BatchStarted"


async def test_an_unknown_collection_starts_nothing(
    manufacturing: Manufacturing, store: InMemoryEventStore
):
    with pytest.raises(NotFound):
        await manufacturing.start_batch("G123426999999", "NK-ALLO", "olga", META)
    assert await store.head_position() == 0


async def test_a_collection_makes_one_batch(
    manufacturing: Manufacturing, store: InMemoryEventStore
):
    await manufacturing.start_batch(DIN, "NK-ALLO", "olga", META)
    with pytest.raises(PreconditionFailed):
        await manufacturing.start_batch(DIN, "NK-ALLO", "olga", META)
    assert await store.head_position() == 1


async def test_release_decides_on_the_donors_current_eligibility(
    manufacturing: Manufacturing, store: InMemoryEventStore, donors: FakeDonorFacts
):
    batch_id = await processed_batch(manufacturing)
    donors.eligibility["donor-1"] = "INELIGIBLE"
    head = await store.head_position()
    with pytest.raises(PreconditionFailed, match="eligib"):
        await manufacturing.release(batch_id, release(eligibility="ignored"), META, None)
    assert await store.head_position() == head
    donors.eligibility["donor-1"] = "ELIGIBLE"
    outcome = await manufacturing.release(batch_id, release(eligibility="ignored"), META, None)
    (released,) = outcome.events
    assert released.event_type == "cellbank.manufacturing.v1.BatchReleased"
    assert len(outcome.state.units) == 3


async def test_release_of_a_batch_never_started_is_not_found(manufacturing: Manufacturing):
    with pytest.raises(NotFound):
        await manufacturing.release("batch-nothing", release(), META, None)
