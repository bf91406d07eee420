"""Deadlines as events: reservations whose hold passed and units past expiry, on time."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Coroutine
from datetime import datetime
from typing import Any

from services.storage.app import Storage
from services.storage.domain.model import ExpireUnit
from services.storage.read_model import StorageReadModel
from shared.commands import Meta
from shared.eventstore import Clock

log = logging.getLogger(__name__)
ACTOR = "service:storage-scheduler"
MAX_NAP_S = 1.0


class DeadlineScheduler:
    """Turns passed deadlines into commands: ExpireReservation, ExpireUnit. The read model says
    which units have a deadline; the unit's own stream decides (a re-reserved unit stays)."""

    def __init__(
        self, app: Storage, read_model: StorageReadModel, site_id: str, clock: Clock
    ) -> None:
        self.app = app
        self.read_model = read_model
        self.site_id = site_id
        self.clock = clock

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            nap = MAX_NAP_S
            try:
                await self.tick(self.clock())
                nap = await self._nap()
            except Exception as exc:  # keep the scheduler alive; the next tick retries
                log.warning("deadline scheduler tick failed", extra={"error": repr(exc)})
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), nap)

    async def tick(self, now: datetime) -> None:
        """Each due unit on its own: one that fails never holds back the others."""
        for unit_id in await self.read_model.due_holds(self.site_id, now):
            meta = Meta(ACTOR, "reservation hold expired", now)
            await self._each(unit_id, self.app.expire_reservation(unit_id, now, meta))
        for unit_id in await self.read_model.expiring(self.site_id, now.date()):
            meta = Meta(ACTOR, "stability limit reached", now)
            await self._each(unit_id, self.app.retrying(unit_id, ExpireUnit(now.date()), meta))

    async def _each(self, unit_id: str, work: Coroutine[Any, Any, object]) -> None:
        try:
            await work
        except Exception as exc:
            log.warning(
                "deadline not applied; retried next tick",
                extra={"unit_id": unit_id, "error": repr(exc)},
            )

    async def _nap(self) -> float:
        """Until the next hold ends, at most a second (new reservations arrive meanwhile)."""
        nearest = await self.read_model.next_hold(self.site_id)
        if nearest is None:
            return MAX_NAP_S
        return max(0.05, min(MAX_NAP_S, (nearest - self.clock()).total_seconds()))
