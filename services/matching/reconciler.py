"""Keeps this site's orders and the owners' holds in agreement: resumes orders awaiting
allocation, gives back holds no live order owns, notices units their site took back, and
renews the holds of live orders before they lapse."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import datetime, timedelta
from functools import partial

from services.matching.adapters.codec import ORDER
from services.matching.dependencies import Dependencies
from services.matching.domain.model import AllocatedUnit, LoseAllocation
from services.matching.domain.order import decide
from services.matching.ports import Hold
from services.matching.saga import Allocation, release
from services.matching.views import OrderChanges, order_view
from shared.commands import Meta, execute
from shared.errors import SiteRefused, SiteUnavailable

log = logging.getLogger(__name__)

ALLOCATED = "cellbank.matching.v1.OrderAllocated"
PLACED, LOST = "cellbank.matching.v1.OrderPlaced", "cellbank.matching.v1.AllocationLost"


class Reconciler:
    def __init__(self, deps: Dependencies, allocation: Allocation, changes: OrderChanges) -> None:
        self.deps = deps
        self.allocation = allocation
        self.changes = changes
        self._suspects: dict[tuple[str, str], datetime] = {}  # (unit, order) → first seen orphaned

    async def run(self, stop: asyncio.Event) -> None:
        """Reconcile every `reconcile_every` seconds until stopped; then stop the sagas."""
        while not stop.is_set():
            try:
                await self.reconcile()
            except Exception as exc:
                log.warning("reconciliation failed; retrying", extra={"error": repr(exc)})
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.deps.config.reconcile_every)
        await self.allocation.stop()

    async def reconcile(self) -> None:
        """Resume orders awaiting allocation; give back holds no live order owns; notice
        units their site took back; renew holds of live orders before they lapse."""
        deps, read_model = self.deps, self.deps.read_model
        for order_id in await read_model.orders_whose_latest_event_is(PLACED, LOST):
            self.allocation.start(order_id)
        allocated = await read_model.orders_whose_latest_event_is(ALLOCATED)
        prefix = f"ORD-{deps.site_id}-"
        streams = await read_model.events_of(allocated)
        held: dict[str, tuple[str, AllocatedUnit]] = {}
        for order_id, events in streams.items():
            for unit in order_view(order_id, events).state.units:
                held[unit.unit_id] = (order_id, unit)
        now = deps.clock()
        holds = await read_model.holds(prefix, list(held))
        others = sorted({h.reserved_for for h in holds if h.reserved_for.startswith(prefix)})
        states = {
            i: order_view(i, e).state for i, e in (await read_model.events_of(others)).items()
        }
        for h in holds:
            if h.reserved_for.startswith(prefix) and not self.allocation.running(h.reserved_for):
                state = states.get(h.reserved_for)
                if state is None or not state.holds(h.unit_id):
                    if await self._orphaned(h, now) and await release(
                        deps, h.site_id, h.unit_id, h.reserved_for, "no live order holds it"
                    ):
                        self._suspects.pop((h.unit_id, h.reserved_for), None)
                    continue
            if h.unit_id not in held:
                continue
            order_id, unit = held[h.unit_id]
            if h.version < unit.unit_version:
                continue  # the inventory has not seen the reservation yet
            if h.status not in ("STORED", "PICKED") or (
                h.status == "STORED" and h.reserved_for != order_id
            ):
                why = h.status.lower() if h.status != "STORED" else "reservation released"
                await self._lose(order_id, h.unit_id, why)
            elif h.hold_until is not None and h.hold_until - now < deps.config.renew_below:
                await self._renew(h, order_id, now)

    async def _renew(self, hold: Hold, order_id: str, now: datetime) -> None:
        """Extend a live order's hold; a refusal shows later as the unit taken back."""
        with contextlib.suppress(SiteRefused, SiteUnavailable):
            await self.deps.sites.reserve(
                hold.site_id, hold.unit_id, order_id, now + self.deps.config.hold, None,
                reason=f"hold renewed for live order {order_id}",
            )  # fmt: skip

    async def _orphaned(self, hold: Hold, now: datetime) -> bool:
        """A hold of one of this site's orders that the order does not (or no longer) own:
        left by a crash between reserving and recording, or a release that failed. Judged on
        the order as it is now, and only once it has looked orphaned for a grace period (a
        saga elsewhere may be between its reservation and its record)."""
        key = (hold.unit_id, hold.reserved_for)
        first_seen = self._suspects.setdefault(key, now)
        grace = timedelta(seconds=max(5.0, 3 * self.deps.config.reconcile_every))
        if now - first_seen < grace or self.allocation.running(hold.reserved_for):
            return False
        events = await self.deps.store.load(hold.reserved_for)
        if ORDER.fold(events).holds(hold.unit_id):
            self._suspects.pop(key, None)
            return False
        return True

    async def _lose(self, order_id: str, unit_id: str, why: str) -> None:
        meta = Meta(
            actor=self.deps.actor,
            reason=f"unit {unit_id} of order {order_id} taken back by its site: {why}",
            at=self.deps.clock(),
            correlation_id=order_id,
        )
        command = LoseAllocation(unit_id, why)
        outcome = await execute(
            self.deps.store, ORDER, order_id, partial(decide, command=command), meta
        )
        if outcome.events:
            self.changes.notify(order_id)
            log.warning("allocated unit lost; allocating again", extra={"order_id": order_id,
                        "unit_id": unit_id, "why": why})  # fmt: skip
            self.allocation.start(order_id)
