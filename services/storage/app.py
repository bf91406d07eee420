"""Storage command handling: positions on the tank, lifecycle on the unit; the domain decides."""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime

from services.storage.adapters.codec import TANK, UNIT
from services.storage.domain import model, tank, unit
from services.storage.domain.model import StoredUnit, Tank
from services.storage.read_model import StorageReadModel
from shared.commands import Meta, Outcome, execute, load
from shared.errors import CellBankError, ConcurrencyConflict, InvalidArgument, NotFound
from shared.eventstore import EventStore

log = logging.getLogger(__name__)
LEAVES_POSITION = (model.UnitPicked, model.UnitDiscarded)


class Storage:
    """The storage application service of one site."""

    def __init__(self, store: EventStore, read_model: StorageReadModel, site_id: str) -> None:
        self.store = store
        self.read_model = read_model
        self.site_id = site_id
        self._tank_locks: dict[str, asyncio.Lock] = {}

    async def register_tank(self, command: model.RegisterTank, meta: Meta) -> Outcome[Tank]:
        if not command.tank_id.startswith(f"{self.site_id}-"):
            raise InvalidArgument("tank_id", f"tanks of this site are named {self.site_id}-…")
        return await execute(
            self.store, TANK, command.tank_id, lambda s: tank.decide(s, command), meta
        )

    async def store_unit(self, unit_id: str, address: str, meta: Meta) -> Outcome[StoredUnit]:
        """Check the unit first, then take the position (tank), then record the unit."""
        tank_id = self._own_tank(address)
        facts = await self.read_model.released_unit(unit_id, self.site_id)
        command = model.StoreUnit(unit_id, address, facts, meta.at.date())
        state, version = await load(self.store, UNIT, unit_id)
        unit.decide(state, command)  # refuse before touching the tank
        segregated = facts.segregated if facts else False
        await self._tank(tank_id, model.OccupyPosition(address, unit_id, segregated), meta)
        try:
            return await self._unit(unit_id, command, meta, expected_version=version)
        except Exception:
            await self._tank(tank_id, model.VacatePosition(address, unit_id), meta)
            raise

    async def move(
        self, unit_id: str, to_address: str, meta: Meta, expected_version: int | None
    ) -> Outcome[StoredUnit]:
        to_tank = self._own_tank(to_address)
        state, version = await load(self.store, UNIT, unit_id)
        if expected_version is not None and expected_version != version:
            raise ConcurrencyConflict(unit_id, expected_version, version)
        command = model.MoveUnit(to_address)
        if not unit.decide(state, command):
            return Outcome(state, version, ())
        segregated = bool(state.facts and state.facts.segregated)
        same_tank = tank.tank_of(state.address) == to_tank
        moving_from = state.address if same_tank else ""
        await self._tank(
            to_tank, model.OccupyPosition(to_address, unit_id, segregated, moving_from), meta
        )
        try:
            outcome = await self._unit(unit_id, command, meta, expected_version=version)
        except Exception:
            # Give the position back: within one tank the occupy already left the old one.
            undo: tank.Command = (
                model.OccupyPosition(state.address, unit_id, segregated, moving_from=to_address)
                if same_tank
                else model.VacatePosition(to_address, unit_id)
            )
            await self._undo(to_tank, undo, meta)
            raise
        if not same_tank:
            old_tank = tank.tank_of(state.address)
            await self._tank(old_tank, model.VacatePosition(state.address, unit_id), meta)
        return outcome

    async def handle(
        self, unit_id: str, command: unit.Command, meta: Meta, expected_version: int | None
    ) -> Outcome[StoredUnit]:
        """A lifecycle command; a unit that leaves (picked, discarded) frees the position its
        own event names (not one read earlier, which a concurrent move may have changed)."""
        outcome = await self._unit(unit_id, command, meta, expected_version=expected_version)
        for event in _decoded(outcome):
            if isinstance(event, LEAVES_POSITION) and event.from_address:
                vacate = model.VacatePosition(event.from_address, unit_id)
                await self._tank(tank.tank_of(event.from_address), vacate, meta)
        return outcome

    async def _undo(self, tank_id: str, command: tank.Command, meta: Meta) -> None:
        """Best-effort compensation; never hides the error being handled."""
        try:
            await self._tank(tank_id, command, meta)
        except Exception as exc:
            log.error(
                "could not give back a position; reconcile the tank",
                extra={"tank_id": tank_id, "command": repr(command), "error": repr(exc)},
            )

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

    async def _tank(self, tank_id: str, command: tank.Command, meta: Meta) -> Outcome[Tank]:
        # One tank stream takes every placement in it: writers of this process queue here
        # instead of racing (and retrying) on its version; other processes still retry.
        lock = self._tank_locks.setdefault(tank_id, asyncio.Lock())
        async with lock:
            for _ in range(5):
                try:
                    return await execute(
                        self.store, TANK, tank_id, lambda s: tank.decide(s, command), meta
                    )
                except ConcurrencyConflict:
                    continue  # another process changed the tank: decide again
            return await execute(self.store, TANK, tank_id, lambda s: tank.decide(s, command), meta)

    async def _unit(
        self, unit_id: str, command: unit.Command, meta: Meta, *, expected_version: int | None
    ) -> Outcome[StoredUnit]:
        return await execute(
            self.store, UNIT, unit_id, lambda s: unit.decide(s, command), meta,
            expected_version=expected_version,
        )  # fmt: skip


def _decoded(outcome: Outcome[StoredUnit]) -> list[object]:
    return [UNIT.codec.decode(e.event_type, e.payload) for e in outcome.events]
