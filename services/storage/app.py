"""Storage command handling: positions on the tank, lifecycle on the unit; the domain decides."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime
from typing import Any, Protocol

from services.storage.adapters.codec import TANK, UNIT
from services.storage.domain import model, tank, unit
from services.storage.domain.model import StoredUnit, Tank, UnitFacts
from shared.commands import Decision, Meta, Outcome, commit, execute, load, prepare
from shared.errors import CellBankError, ConcurrencyConflict, InvalidArgument, NotFound
from shared.eventstore import EventStore

log = logging.getLogger(__name__)
LEAVES_POSITION = (model.UnitPicked, model.UnitDiscarded)
_TANK_RETRIES = 5


class ReleasedUnits(Protocol):
    """What storage knows of units manufacturing released (its read model, or a fake)."""

    async def released_unit(self, unit_id: str, site_id: str) -> UnitFacts | None: ...


class Storage:
    """The storage application service of one site."""

    def __init__(self, store: EventStore, released_units: ReleasedUnits, site_id: str) -> None:
        self.store = store
        self.released_units = released_units
        self.site_id = site_id
        self._tank_locks: dict[str, asyncio.Lock] = {}

    async def register_tank(self, command: model.RegisterTank, meta: Meta) -> Outcome[Tank]:
        if not command.tank_id.startswith(f"{self.site_id}-"):
            raise InvalidArgument("tank_id", f"tanks of this site are named {self.site_id}-…")
        return await execute(
            self.store, TANK, command.tank_id, lambda s: tank.decide(s, command), meta
        )

    async def store_unit(self, unit_id: str, address: str, meta: Meta) -> Outcome[StoredUnit]:
        """Take the position (tank) and record the unit, in one append."""
        tank_id = self._own_tank(address)
        facts = await self.released_units.released_unit(unit_id, self.site_id)
        command = model.StoreUnit(unit_id, address, facts, meta.at.date())
        occupy = model.OccupyPosition(address, unit_id, facts.segregated if facts else False)

        async def attempt() -> Outcome[StoredUnit]:
            stored = await self._unit(unit_id, command, meta, expected_version=None)
            _, outcome = await commit(self.store, await self._tank(tank_id, occupy, meta), stored)
            return outcome

        async with self._tank_locks_of({tank_id}):
            return await _deciding_again(unit_id, attempt)

    async def move(
        self, unit_id: str, to_address: str, meta: Meta, expected_version: int | None
    ) -> Outcome[StoredUnit]:
        """Take the new position, move the unit and leave the old position, in one append."""
        to_tank = self._own_tank(to_address)
        command = model.MoveUnit(to_address)

        async def attempt() -> Outcome[StoredUnit]:
            moved = await self._unit(unit_id, command, meta, expected_version=expected_version)
            if not moved.new:
                return Outcome(moved.state, moved.version, ())
            (event,) = moved.decided
            assert isinstance(event, model.UnitMoved)
            segregated = bool(moved.state.facts and moved.state.facts.segregated)
            from_tank = tank.tank_of(event.from_address)
            same_tank = from_tank == to_tank
            # Within one tank the occupy leaves the old position in the same decision.
            moving_from = event.from_address if same_tank else ""
            occupy = model.OccupyPosition(to_address, unit_id, segregated, moving_from)
            parts: list[Decision[Any]] = [await self._tank(to_tank, occupy, meta), moved]
            if not same_tank:
                vacate = model.VacatePosition(event.from_address, unit_id)
                parts.append(await self._tank(from_tank, vacate, meta))
            return (await commit(self.store, *parts))[1]

        state, _ = await load(self.store, UNIT, unit_id)
        tanks = {to_tank, *([tank.tank_of(state.address)] if state.address else [])}
        async with self._tank_locks_of(tanks):
            return await _deciding_again(unit_id, attempt)

    async def handle(
        self, unit_id: str, command: unit.Command, meta: Meta, expected_version: int | None
    ) -> Outcome[StoredUnit]:
        """A lifecycle command; a unit that leaves (picked, discarded) frees the position its
        own event names (not one read earlier, which a concurrent move may have changed), in
        the same append."""

        async def attempt() -> Outcome[StoredUnit]:
            decided = await self._unit(unit_id, command, meta, expected_version=expected_version)
            parts: list[Decision[Any]] = [decided]
            for event in decided.decided:
                if isinstance(event, LEAVES_POSITION) and event.from_address:
                    vacate = model.VacatePosition(event.from_address, unit_id)
                    tank_id = tank.tank_of(event.from_address)
                    parts.append(await self._tank(tank_id, vacate, meta))
            return (await commit(self.store, *parts))[0]

        return await _deciding_again(unit_id, attempt)

    async def quarantine_tank(self, tank_id: str, cause: str, meta: Meta) -> list[str]:
        """Every unit in the tank, each in its own stream; the same cause twice is a no-op."""
        state, _ = await load(self.store, TANK, tank_id)
        if not state.registered:
            raise NotFound(f"tank {tank_id} is not registered here")
        quarantined = []
        for unit_id in state.units():
            command = model.QuarantineUnit(cause, f"every unit of {tank_id}")
            try:
                outcome = await self.retrying(unit_id, command, meta)
            except CellBankError as exc:
                # One bad occupant (e.g. a position whose unit was never stored) must not
                # leave the rest of the tank unquarantined.
                log.error(
                    "unit of a quarantined tank could not be quarantined",
                    extra={"tank_id": tank_id, "unit_id": unit_id, "error": str(exc)},
                )
                continue
            if outcome.events:
                quarantined.append(unit_id)
        log.warning(
            "tank quarantined",
            extra={"tank_id": tank_id, "cause": cause, "units": len(quarantined)},
        )
        return quarantined

    async def expire_reservation(
        self, unit_id: str, now: datetime, meta: Meta
    ) -> Outcome[StoredUnit]:
        return await self.retrying(unit_id, model.ExpireReservation(now), meta)

    async def retrying(
        self, unit_id: str, command: unit.Command, meta: Meta
    ) -> Outcome[StoredUnit]:
        for _ in range(5):
            try:
                return await self.handle(unit_id, command, meta, expected_version=None)
            except ConcurrencyConflict:
                continue  # a human acted on the unit meanwhile: decide again on the new state
        return await self.handle(unit_id, command, meta, expected_version=None)

    def _own_tank(self, address: str) -> str:
        tank_id = tank.tank_of(address)
        if not tank_id.startswith(f"{self.site_id}-"):
            raise InvalidArgument("address", f"{address} is not a position of site {self.site_id}")
        return tank_id

    @contextlib.asynccontextmanager
    async def _tank_locks_of(self, tank_ids: set[str]) -> AsyncIterator[None]:
        # One tank stream takes every placement in it: writers of this process queue here
        # instead of racing (and retrying) on its version; other processes still retry.
        # Taken in one order, so two moves between the same tanks never wait on each other.
        async with contextlib.AsyncExitStack() as locks:
            for tank_id in sorted(tank_ids):
                await locks.enter_async_context(
                    self._tank_locks.setdefault(tank_id, asyncio.Lock())
                )
            yield

    async def _tank(self, tank_id: str, command: tank.Command, meta: Meta) -> Decision[Tank]:
        return await prepare(self.store, TANK, tank_id, lambda s: tank.decide(s, command), meta)

    async def _unit(
        self, unit_id: str, command: unit.Command, meta: Meta, *, expected_version: int | None
    ) -> Decision[StoredUnit]:
        return await prepare(
            self.store, UNIT, unit_id, lambda s: unit.decide(s, command), meta,
            expected_version=expected_version,
        )  # fmt: skip


async def _deciding_again(
    unit_id: str, attempt: Callable[[], Awaitable[Outcome[StoredUnit]]]
) -> Outcome[StoredUnit]:
    """Run a command; when a tank it touches moved on (another process placed a unit in it),
    decide it again on the tank's new state. A conflict on the unit itself is the caller's."""
    for _ in range(_TANK_RETRIES):
        try:
            return await attempt()
        except ConcurrencyConflict as exc:
            if exc.aggregate_id == unit_id:
                raise
    return await attempt()
