"""Storage's service layer against the in-memory event store and a fake of released units."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from datetime import timedelta

import pytest

from services.storage.adapters.codec import CODEC, TANK, UNIT
from services.storage.app import Storage
from services.storage.domain import model
from services.storage.domain.model import PositionOccupied, PositionVacated, UnitFacts
from services.storage.tests.test_unit_domain import FACTS, NOW
from shared.commands import Meta, load
from shared.errors import ConcurrencyConflict, NotFound, PreconditionFailed
from shared.events import NewEvent
from shared.eventstore import InMemoryEventStore
from tests.factories import InterleavedEventStore

META = Meta(actor="operator:alice", reason="test", at=NOW)
HOLD = NOW + timedelta(hours=4)


class FakeReleasedUnits:
    def __init__(self, facts: dict[str, UnitFacts]) -> None:
        self.facts = facts

    async def released_unit(self, unit_id: str, site_id: str) -> UnitFacts | None:
        return self.facts.get(unit_id)


@pytest.fixture
def store() -> InterleavedEventStore:
    return InterleavedEventStore()


@pytest.fixture
async def storage(store: InterleavedEventStore) -> Storage:
    released = {f"unit-{n}": FACTS for n in range(1, 4)}
    released["unit-urgent"] = dataclasses.replace(FACTS, segregated=True)
    app = Storage(store, FakeReleasedUnits(released), "LON")
    for tank_id in ("LON-T1", "LON-T2"):
        await app.register_tank(model.RegisterTank(tank_id, 1, 1, 4), META)
    return app


def decoded(events: Sequence[object]) -> list[tuple[str, object]]:
    return [(e.aggregate_id, CODEC.decode(e.event_type, e.payload)) for e in events]  # type: ignore[attr-defined]


async def written_since(store: InMemoryEventStore, position: int) -> list[tuple[str, object]]:
    return decoded(await store.read_all(position))


async def occupant(store: InMemoryEventStore, address: str) -> str | None:
    state, _ = await load(store, TANK, address.split("/")[0])
    return state.occupant.get(address)


async def test_store_takes_the_position_and_records_the_unit_in_one_append(
    storage: Storage, store: InterleavedEventStore
):
    head = await store.head_position()
    outcome = await storage.store_unit("unit-1", "LON-T1/R1/B1/P01", META)
    assert outcome.state.address == "LON-T1/R1/B1/P01" and outcome.version == 1
    assert await written_since(store, head) == [
        ("LON-T1", PositionOccupied("LON-T1/R1/B1/P01", "unit-1")),
        ("unit-1", model.UnitStored("LON-T1/R1/B1/P01", FACTS)),
    ]
    assert (await store.verify_chain()).intact


async def test_store_into_an_occupied_position_is_refused_and_appends_nothing(
    storage: Storage, store: InterleavedEventStore
):
    await storage.store_unit("unit-1", "LON-T1/R1/B1/P01", META)
    head = await store.head_position()
    with pytest.raises(PreconditionFailed, match="position occupied"):
        await storage.store_unit("unit-2", "LON-T1/R1/B1/P01", META)
    assert await store.head_position() == head
    assert await store.load("unit-2") == []


async def test_store_of_an_unreleased_unit_is_refused_before_the_tank_is_touched(
    storage: Storage, store: InterleavedEventStore
):
    head = await store.head_position()
    with pytest.raises(PreconditionFailed, match="RELEASED"):
        await storage.store_unit("unit-unknown", "LON-T1/R1/B1/P01", META)
    assert await store.head_position() == head


async def test_store_decides_again_when_another_process_changed_the_tank(
    storage: Storage, store: InterleavedEventStore
):
    other = PositionOccupied("LON-T1/R1/B1/P02", "unit-elsewhere")
    store.before_next_append = ("LON-T1", tank_event(other))
    await storage.store_unit("unit-1", "LON-T1/R1/B1/P01", META)
    assert await occupant(store, "LON-T1/R1/B1/P01") == "unit-1"
    assert await occupant(store, "LON-T1/R1/B1/P02") == "unit-elsewhere"


async def test_store_refused_when_another_process_took_the_same_position_writes_no_unit(
    storage: Storage, store: InterleavedEventStore
):
    taken = PositionOccupied("LON-T1/R1/B1/P01", "unit-elsewhere")
    store.before_next_append = ("LON-T1", tank_event(taken))
    with pytest.raises(PreconditionFailed, match="position occupied"):
        await storage.store_unit("unit-1", "LON-T1/R1/B1/P01", META)
    assert await store.load("unit-1") == []


async def test_store_when_another_process_stored_the_unit_meanwhile_is_a_conflict_on_the_unit(
    storage: Storage, store: InterleavedEventStore
):
    stored = model.UnitStored("LON-T2/R1/B1/P01", FACTS)
    store.before_next_append = ("unit-1", unit_event(stored))
    head = await store.head_position()
    with pytest.raises(ConcurrencyConflict) as err:
        await storage.store_unit("unit-1", "LON-T1/R1/B1/P01", META)
    assert err.value.aggregate_id == "unit-1"
    assert await store.head_position() == head + 1  # only the other process's event
    assert await occupant(store, "LON-T1/R1/B1/P01") is None


async def test_urgent_unit_is_refused_an_ordinary_position(
    storage: Storage, store: InterleavedEventStore
):
    head = await store.head_position()
    with pytest.raises(PreconditionFailed, match="segregated"):
        await storage.store_unit("unit-urgent", "LON-T1/R1/B1/P01", META)
    assert await store.head_position() == head


async def test_move_to_another_tank_occupies_moves_and_vacates_in_one_append(
    storage: Storage, store: InterleavedEventStore
):
    await storage.store_unit("unit-1", "LON-T1/R1/B1/P01", META)
    head = await store.head_position()
    outcome = await storage.move("unit-1", "LON-T2/R1/B1/P03", META, expected_version=1)
    assert outcome.state.address == "LON-T2/R1/B1/P03"
    written = await store.read_all(head)
    assert [e.position for e in written] == [head + 1, head + 2, head + 3]
    assert decoded(written) == [
        ("LON-T2", PositionOccupied("LON-T2/R1/B1/P03", "unit-1")),
        ("unit-1", model.UnitMoved("LON-T1/R1/B1/P01", "LON-T2/R1/B1/P03")),
        ("LON-T1", PositionVacated("LON-T1/R1/B1/P01", "unit-1")),
    ]


async def test_move_within_a_tank_leaves_the_old_position_in_the_same_decision(
    storage: Storage, store: InterleavedEventStore
):
    await storage.store_unit("unit-1", "LON-T1/R1/B1/P01", META)
    head = await store.head_position()
    await storage.move("unit-1", "LON-T1/R1/B1/P02", META, expected_version=None)
    assert await written_since(store, head) == [
        ("LON-T1", PositionVacated("LON-T1/R1/B1/P01", "unit-1")),
        ("LON-T1", PositionOccupied("LON-T1/R1/B1/P02", "unit-1")),
        ("unit-1", model.UnitMoved("LON-T1/R1/B1/P01", "LON-T1/R1/B1/P02")),
    ]


async def test_move_with_a_stale_version_is_refused_and_appends_nothing(
    storage: Storage, store: InterleavedEventStore
):
    await storage.store_unit("unit-1", "LON-T1/R1/B1/P01", META)
    head = await store.head_position()
    with pytest.raises(ConcurrencyConflict):
        await storage.move("unit-1", "LON-T2/R1/B1/P01", META, expected_version=0)
    assert await store.head_position() == head


async def test_move_into_an_occupied_position_leaves_everything_where_it_was(
    storage: Storage, store: InterleavedEventStore
):
    await storage.store_unit("unit-1", "LON-T1/R1/B1/P01", META)
    await storage.store_unit("unit-2", "LON-T2/R1/B1/P01", META)
    head = await store.head_position()
    with pytest.raises(PreconditionFailed, match="position occupied"):
        await storage.move("unit-1", "LON-T2/R1/B1/P01", META, expected_version=None)
    assert await store.head_position() == head
    assert await occupant(store, "LON-T1/R1/B1/P01") == "unit-1"


async def test_reserve_release_reserve_and_pick_frees_the_position_in_the_same_append(
    storage: Storage, store: InterleavedEventStore
):
    await storage.store_unit("unit-1", "LON-T1/R1/B1/P01", META)
    await storage.handle("unit-1", model.ReserveUnit("order-1", HOLD, NOW), META, 1)
    with pytest.raises(PreconditionFailed, match="already reserved"):
        await storage.handle("unit-1", model.ReserveUnit("order-2", HOLD, NOW), META, None)
    await storage.handle("unit-1", model.ReleaseReservation("order-1"), META, None)
    await storage.handle("unit-1", model.ReserveUnit("order-2", HOLD, NOW), META, None)
    head = await store.head_position()
    outcome = await storage.handle("unit-1", model.PickUnit("order-2", NOW), META, None)
    assert outcome.state.status is model.UnitStatus.PICKED
    assert await written_since(store, head) == [
        ("unit-1", model.UnitPicked("order-2", "LON-T1/R1/B1/P01")),
        ("LON-T1", PositionVacated("LON-T1/R1/B1/P01", "unit-1")),
    ]


async def test_discard_frees_the_position(storage: Storage, store: InterleavedEventStore):
    await storage.store_unit("unit-1", "LON-T1/R1/B1/P01", META)
    await storage.handle("unit-1", model.DiscardUnit("bag damaged"), META, None)
    assert await occupant(store, "LON-T1/R1/B1/P01") is None
    await storage.store_unit("unit-2", "LON-T1/R1/B1/P01", META)


async def test_quarantining_a_tank_quarantines_each_unit_in_it(storage: Storage):
    await storage.store_unit("unit-1", "LON-T1/R1/B1/P01", META)
    await storage.store_unit("unit-2", "LON-T1/R1/B1/P02", META)
    await storage.store_unit("unit-3", "LON-T2/R1/B1/P01", META)
    assert sorted(await storage.quarantine_tank("LON-T1", "excursion", META)) == [
        "unit-1",
        "unit-2",
    ]
    assert await storage.quarantine_tank("LON-T1", "excursion", META) == []
    with pytest.raises(NotFound):
        await storage.quarantine_tank("LON-T9", "excursion", META)


def tank_event(event: object) -> NewEvent:
    return new_event(TANK.aggregate_type, event)


def unit_event(event: object) -> NewEvent:
    return new_event(UNIT.aggregate_type, event)


def new_event(aggregate_type: str, event: object) -> NewEvent:
    event_type, payload = CODEC.encode(event)
    return NewEvent(event_type, aggregate_type, payload, NOW, "operator:bob", "elsewhere")
