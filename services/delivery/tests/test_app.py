"""Delivery's service layer against fakes: the in-memory event store, in-memory records and a
fake storage of every site (cosmicpython's handler tests are the model)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest

from services.delivery.app import Delivery
from services.delivery.domain.model import Recall, RecallNotice, ShipmentStatus, Shipper, Trigger
from services.delivery.ports import OrderFacts
from services.delivery.read_model import SHIPMENT_CREATED
from shared.commands import Meta
from shared.errors import (
    PreconditionFailed,
    SiteRefused,
    SiteUnavailable,
    StoreBusy,
    UnknownAtSite,
)
from shared.eventstore import InMemoryEventStore

NOW = datetime(2026, 6, 1, 9, 0, tzinfo=UTC)
SITE = "LON"
SHIPPER = Shipper("LON-DS-04", 10.0, 3)  # holds 600 min: covers 300 min × 2
META = Meta("bank:lon-operator", "test", NOW)


@dataclass
class FakeRecords:
    """DeliveryRecords in memory: orders and unit owners as the lookback model would hold
    them, this site's own events from the store."""

    store: InMemoryEventStore
    orders: dict[str, OrderFacts] = field(default_factory=dict)
    unit_sites: dict[str, str] = field(default_factory=dict)
    unit_dins: dict[str, str] = field(default_factory=dict)
    held_by_hospitals: list[RecallNotice] = field(default_factory=list)

    async def order(self, order_id: str) -> OrderFacts | None:
        return self.orders.get(order_id)

    async def aggregate_ids(self, aggregate_type: str) -> list[str]:
        events = await self.store.read_all(0, 10**6)
        return list(
            dict.fromkeys(e.aggregate_id for e in events if e.aggregate_type == aggregate_type)
        )

    async def shipments_created(self) -> list[tuple[str, str, bytes]]:
        events = await self.store.read_all(0, 10**6)
        return [
            (e.aggregate_id, e.event_type, e.payload)
            for e in events
            if e.event_type == SHIPMENT_CREATED
        ]

    async def units_of(self, dins: list[str], unit_ids: list[str]) -> dict[str, str]:
        return {
            unit: site
            for unit, site in sorted(self.unit_sites.items())
            if unit in unit_ids or self.unit_dins.get(unit) in dins
        }

    async def notices(self, unit_ids: list[str]) -> list[RecallNotice]:
        return [n for n in self.held_by_hospitals if set(n.unit_ids) & set(unit_ids)]


class FakeStorageSites:
    """StorageSites in memory: records every call; a site can be made unavailable, a unit
    refused (a number of times); a recall answers the unit's configured status."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, str, str]] = []  # (call, site, unit, order or recall)
        self.unavailable: set[str] = set()
        self.refusals: dict[str, int] = {}  # unit → how many calls refuse it still
        self.unknown: set[str] = set()  # units the site answers it does not know
        self.status_after_recall: dict[str, str] = {}
        self.recalled = asyncio.Event()

    def _answer(self, call: str, site_id: str, unit_id: str, subject: str) -> None:
        self.calls.append((call, site_id, unit_id, subject))
        if site_id in self.unavailable:
            raise SiteUnavailable(site_id, "UNAVAILABLE: connection refused")
        if unit_id in self.unknown:
            raise UnknownAtSite(site_id, f"NOT_FOUND: {unit_id} is not in storage here")
        if self.refusals.get(unit_id, 0) > 0:
            self.refusals[unit_id] -= 1
            raise SiteRefused(site_id, f"ABORTED: {unit_id} moved on meanwhile")

    async def pick(self, site_id: str, unit_id: str, order_id: str, reason: str) -> int:
        self._answer("pick", site_id, unit_id, order_id)
        return 7

    async def recall(self, site_id: str, unit_id: str, recall_id: str, reason: str) -> str:
        self._answer("recall", site_id, unit_id, recall_id)
        self.recalled.set()
        return self.status_after_recall.get(unit_id, "RECALLED")


@pytest.fixture
def store() -> InMemoryEventStore:
    return InMemoryEventStore(SITE, lambda: NOW)


@pytest.fixture
def records(store: InMemoryEventStore) -> FakeRecords:
    return FakeRecords(store)


@pytest.fixture
def sites() -> FakeStorageSites:
    return FakeStorageSites()


@pytest.fixture
def app(store: InMemoryEventStore, records: FakeRecords, sites: FakeStorageSites) -> Delivery:
    return Delivery(store, records, sites, SITE, lambda: NOW, recall_every=0.01)


def allocated(records: FakeRecords, order_id: str, owners: dict[str, str]) -> None:
    records.unit_sites.update(owners)
    records.orders[order_id] = OrderFacts(
        order_id, SITE, "H1", "ALLOCATED", tuple(owners), NOW - timedelta(hours=2), dict(owners)
    )


async def created(app: Delivery, order_id: str) -> str:
    shipment_id, _ = await app.create_shipment(
        order_id, SHIPPER, "LOG-7", "BioCourier", "LON→H1", 300.0, NOW + timedelta(hours=6), META
    )
    return shipment_id


# ---- shipments ------------------------------------------------------------------------------


async def test_dispatch_picks_each_unit_at_its_own_site_then_records_the_dispatch(
    app, records, sites, store
):
    allocated(records, "O-1", {"U-1": SITE, "U-2": SITE})
    shipment_id = await created(app, "O-1")
    outcome = await app.dispatch(shipment_id, META, expected_version=None)
    assert outcome.state.status is ShipmentStatus.IN_TRANSIT
    assert sites.calls == [("pick", SITE, "U-1", "O-1"), ("pick", SITE, "U-2", "O-1")]
    assert [e.event_type for e in await store.load(shipment_id)] == [
        "cellbank.delivery.v1.ShipmentCreated",
        "cellbank.delivery.v1.ShipmentDispatched",
    ]


async def test_a_refused_pick_appends_nothing(app, records, sites, store):
    allocated(records, "O-2", {"U-3": SITE})
    shipment_id = await created(app, "O-2")
    sites.refusals["U-3"] = 1
    with pytest.raises(PreconditionFailed) as refused:
        await app.dispatch(shipment_id, META, expected_version=None)
    assert not isinstance(refused.value, SiteRefused)  # the service layer's own refusal
    assert "U-3" in str(refused.value)
    assert len(await store.load(shipment_id)) == 1  # created only


async def test_an_unreachable_storage_makes_dispatch_retryable_and_appends_nothing(
    app, records, sites, store
):
    allocated(records, "O-3", {"U-4": SITE})
    shipment_id = await created(app, "O-3")
    sites.unavailable.add(SITE)
    with pytest.raises(StoreBusy):
        await app.dispatch(shipment_id, META, expected_version=None)
    assert len(await store.load(shipment_id)) == 1
    sites.unavailable.clear()
    assert (await app.dispatch(shipment_id, META, None)).state.status is ShipmentStatus.IN_TRANSIT


async def test_units_owned_by_another_site_are_not_shipped_from_here(app, records, sites, store):
    allocated(records, "O-4", {"U-5": SITE, "U-6": "PAR"})
    with pytest.raises(PreconditionFailed, match="units owned by another site"):
        await created(app, "O-4")
    assert sites.calls == []
    assert await store.read_all() == []


async def test_a_shipper_excursion_compromises_only_its_shipments_in_transit(app, records):
    allocated(records, "O-5", {"U-7": SITE})
    allocated(records, "O-6", {"U-8": SITE})
    moving = await created(app, "O-5")
    await created(app, "O-6")  # not dispatched: not on its way
    await app.dispatch(moving, META, None)
    assert await app.shipper_excursion(SHIPPER.shipper_id, "excursion:1", "-60 °C", META) == [
        moving
    ]
    state, _ = await app.shipment(moving)
    assert state.compromised


# ---- recalls --------------------------------------------------------------------------------


def recall_units(records: FakeRecords, owners: dict[str, str], din: str) -> None:
    records.unit_sites.update(owners)
    records.unit_dins.update(dict.fromkeys(owners, din))


async def raise_recall(app: Delivery, din: str, source: str) -> str:
    return await app.raise_recall(
        Trigger.DONOR_POSITIVE, "D-1", "donor D-1 positive", (din,), (), source, META
    )


async def test_a_recall_holds_every_unit_back_at_its_owning_site(app, records, sites):
    recall_units(records, {"U-1": SITE, "U-2": "PAR", "U-3": "MAD"}, "A1")
    sites.status_after_recall["U-3"] = "PICKED"  # already left stock
    records.held_by_hospitals.append(RecallNotice("O-9", SITE, "H1", ("U-3",), "P-1"))
    recall_id = await raise_recall(app, "A1", "event-1")
    assert sites.calls == [
        ("recall", SITE, "U-1", recall_id),
        ("recall", "PAR", "U-2", recall_id),
        ("recall", "MAD", "U-3", recall_id),
    ]
    recall = next(state for rid, state, _ in await app.recalls() if rid == recall_id)
    assert not recall.pending_units
    assert {(h.unit_id, h.site_id, h.outcome) for h in recall.held} == {
        ("U-1", SITE, "RECALLED"), ("U-2", "PAR", "RECALLED"), ("U-3", "MAD", "NOT_IN_STOCK")
    }  # fmt: skip
    assert recall.raised is not None and recall.raised.notices[0].hospital_id == "H1"


async def test_an_unavailable_site_keeps_the_recall_pending_until_a_later_run(app, records, sites):
    recall_units(records, {"U-1": SITE, "U-2": "PAR"}, "A2")
    sites.unavailable.add("PAR")
    recall_id = await raise_recall(app, "A2", "event-2")
    state = await app.hold_units(recall_id)
    assert state.pending_units == ("U-2",)
    sites.unavailable.clear()
    assert (await app.hold_units(recall_id)).pending_units == ()
    assert [h.outcome for h in (await app.hold_units(recall_id)).held] == ["RECALLED"] * 2


async def recall_worker_until_a_site_recalls(app: Delivery, sites: FakeStorageSites) -> None:
    """The recall worker runs until a site recalls a unit, then stops."""
    sites.recalled.clear()
    stop = asyncio.Event()
    worker = asyncio.create_task(app.run_recalls(stop))
    await asyncio.wait_for(sites.recalled.wait(), 5)
    stop.set()
    await asyncio.wait_for(worker, 5)


async def recall_state(app: Delivery, recall_id: str) -> Recall:
    return next(s for rid, s, _ in await app.recalls() if rid == recall_id)


async def test_the_recall_worker_completes_what_an_unavailable_site_left_pending(
    app, records, sites
):
    recall_units(records, {"U-5": "PAR"}, "A3")
    sites.unavailable.add("PAR")
    recall_id = await raise_recall(app, "A3", "event-3")
    sites.unavailable.clear()
    await recall_worker_until_a_site_recalls(app, sites)
    state = await recall_state(app, recall_id)
    assert [(h.unit_id, h.outcome) for h in state.held] == [("U-5", "RECALLED")]


async def test_a_unit_the_site_never_stored_is_recorded_not_in_stock(app, records, sites):
    recall_units(records, {"U-6": "PAR"}, "A4")
    sites.unknown.add("U-6")
    recall_id = await raise_recall(app, "A4", "event-4")
    state = await recall_state(app, recall_id)
    assert [(h.unit_id, h.outcome) for h in state.held] == [("U-6", "NOT_IN_STOCK")]


async def test_one_refusal_then_a_hold_is_recorded_recalled(app, records, sites):
    recall_units(records, {"U-7": "PAR"}, "A5")
    sites.refusals["U-7"] = 1  # e.g. a write racing the recall at the owner
    recall_id = await raise_recall(app, "A5", "event-5")
    state = await recall_state(app, recall_id)
    # Refused for another reason than "unknown here": not taken for "never stored"; pending.
    assert state.held == () or list(state.held) == []
    assert "U-7" in state.pending_units
    await recall_worker_until_a_site_recalls(app, sites)
    state = await recall_state(app, recall_id)
    assert [(h.unit_id, h.outcome) for h in state.held] == [("U-7", "RECALLED")]
    assert [c[0] for c in sites.calls] == ["recall", "recall"]


async def test_the_same_trigger_twice_raises_one_recall(app, records, sites):
    recall_units(records, {"U-8": SITE}, "A6")
    first = await raise_recall(app, "A6", "event-6")
    assert await raise_recall(app, "A6", "event-6") == first
    assert [rid for rid, _, _ in await app.recalls()] == [first]
    assert sites.calls == [("recall", SITE, "U-8", first)]
