"""In-memory stand-ins for matching's ports (services.matching.ports), for service-layer tests:
every site's storage (the owners), the network inventory the index is fed from, and the read
model over an InMemoryEventStore."""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from datetime import datetime, timedelta

from services.matching.app import Matching
from services.matching.dependencies import Dependencies, MatchingConfig
from services.matching.domain.ranking import UnitProfile
from services.matching.index import Availability, CandidateIndex
from services.matching.ports import Hold
from services.matching.search import CandidateSearch
from services.matching.tests.builders import NOW, TABLE, TRANSIT
from shared.chain_key import ChainKey
from shared.errors import SiteRefused, SiteUnavailable
from shared.events import StoredEvent
from shared.eventstore import InMemoryEventStore


@dataclass(slots=True)
class OwnedUnit:
    """A unit as its owning site's storage holds it (the owner decides)."""

    profile: UnitProfile
    version: int = 1
    status: str = "STORED"
    reserved_for: str = ""
    hold_until: datetime | None = None


@dataclass(frozen=True, slots=True)
class Call:
    name: str  # reserve | release
    site_id: str
    unit_id: str
    order_id: str
    expected_version: int | None = None


class FakeStorageSites:
    """Every site's storage in memory: records each call; a unit can be refused and a site
    made unavailable. Reserving checks the version and an existing hold as the owner does."""

    def __init__(self) -> None:
        self.units: dict[str, OwnedUnit] = {}
        self.calls: list[Call] = []
        self.refusing: set[str] = set()  # units whose owner says no
        self.unavailable: set[str] = set()  # sites that cannot be asked

    def stock(self, *profiles: UnitProfile) -> None:
        for p in profiles:
            self.units[p.unit_id] = OwnedUnit(p, version=p.version)

    def held_for(self, unit_id: str) -> str:
        return self.units[unit_id].reserved_for

    def asked(self, name: str) -> list[str]:
        """The units of every `name` call, in order."""
        return [c.unit_id for c in self.calls if c.name == name]

    async def reserve(
        self,
        site_id: str,
        unit_id: str,
        order_id: str,
        hold_until: datetime,
        expected_version: int | None,
        reason: str,
    ) -> int:
        self.calls.append(Call("reserve", site_id, unit_id, order_id, expected_version))
        if site_id in self.unavailable:
            raise SiteUnavailable(site_id, "UNAVAILABLE: connection refused")
        unit = self.units.get(unit_id)
        if unit is None:
            raise SiteRefused(site_id, f"NOT_FOUND: no unit {unit_id}")
        if unit_id in self.refusing or unit.status != "STORED":
            raise SiteRefused(site_id, f"FAILED_PRECONDITION: unit {unit_id} is not available")
        if expected_version is not None and expected_version != unit.version:
            raise SiteRefused(site_id, f"ABORTED: unit {unit_id} is at {unit.version}")
        if unit.reserved_for not in ("", order_id):
            raise SiteRefused(site_id, f"FAILED_PRECONDITION: unit {unit_id} is reserved")
        unit.reserved_for, unit.hold_until = order_id, hold_until
        unit.version += 1
        return unit.version

    async def release(self, site_id: str, unit_id: str, order_id: str, reason: str) -> None:
        self.calls.append(Call("release", site_id, unit_id, order_id))
        if site_id in self.unavailable:
            raise SiteUnavailable(site_id, "UNAVAILABLE: connection refused")
        unit = self.units[unit_id]
        if unit.reserved_for == order_id:
            unit.reserved_for, unit.hold_until = "", None
            unit.version += 1

    def holds(self, order_prefix: str, unit_ids: list[str]) -> list[Hold]:
        return [
            Hold(u.profile.unit_id, u.profile.site_id, u.status, u.reserved_for, u.hold_until,
                 u.version)
            for u in self.units.values()
            if u.reserved_for.startswith(order_prefix) or u.profile.unit_id in unit_ids
        ]  # fmt: skip


class FakeIndexSource:
    """The network inventory as the owners hold it now (no propagation delay)."""

    def __init__(self, index: CandidateIndex, sites: FakeStorageSites) -> None:
        self.index = index
        self.sites = sites
        self.refreshed_at = 0.0

    async def refresh(self) -> int:
        for u in self.sites.units.values():
            profile = dataclasses.replace(u.profile, version=u.version)
            self.index.upsert(profile, Availability(u.status, u.reserved_for, u.hold_until))
        self.refreshed_at = time.monotonic()
        return len(self.sites.units)


class FakeReadModel:
    """This site's orders and notifications from the in-memory store; holds from the owners."""

    def __init__(self, store: InMemoryEventStore, sites: FakeStorageSites) -> None:
        self.store = store
        self.sites = sites

    async def _all(self) -> list[StoredEvent]:
        return await self.store.read_all(0, limit=1_000_000)

    async def order_ids_of(self, hospital_id: str, limit: int = 500) -> list[str]:
        placed = [
            e.aggregate_id
            for e in await self._all()
            if e.event_type == "cellbank.matching.v1.OrderPlaced"
            and (e.actor == f"hospital:{hospital_id}" or e.actor.endswith(f"@{hospital_id}"))
        ]
        return placed[::-1][:limit]

    async def events_of(self, order_ids: list[str]) -> dict[str, list[StoredEvent]]:
        return {i: await self.store.load(i) for i in order_ids}

    async def aggregates_of_type(self, aggregate_type: str) -> list[str]:
        return sorted(
            {e.aggregate_id for e in await self._all() if e.aggregate_type == aggregate_type}
        )

    async def orders_whose_latest_event_is(self, *event_types: str) -> list[str]:
        latest: dict[str, str] = {}
        for e in await self._all():
            if e.aggregate_type == "order":
                latest[e.aggregate_id] = e.event_type
        return [i for i, t in latest.items() if t in event_types]

    async def holds(self, order_prefix: str, unit_ids: list[str]) -> list[Hold]:
        return self.sites.holds(order_prefix, unit_ids)


class FakeClock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, by: timedelta) -> None:
        self.now += by


@dataclass(frozen=True, slots=True)
class World:
    """Matching at one site over fakes: the app and what its tests look at."""

    app: Matching
    sites: FakeStorageSites
    store: InMemoryEventStore
    clock: FakeClock


def matching_at(site_id: str = "LON", config: MatchingConfig | None = None) -> World:
    clock = FakeClock(NOW)
    store = InMemoryEventStore(site_id, clock, chain_key=ChainKey.generate())
    sites = FakeStorageSites()
    index = CandidateIndex(TABLE, TRANSIT)
    search = CandidateSearch(index, FakeIndexSource(index, sites), clock)
    deps = Dependencies(
        store, FakeReadModel(store, sites), sites, site_id, clock, config or MatchingConfig()
    )
    return World(Matching(deps, search), sites, store, clock)
