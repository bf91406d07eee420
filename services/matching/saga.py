"""The allocation saga of an order: reserve the best candidate (or, where the order allows,
the fewest units making the dose together) at its owning site — the owner decides — then
record the allocation; give back what was held when the order is rejected or changed."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import partial

from services.matching.adapters.codec import ORDER
from services.matching.dependencies import Dependencies
from services.matching.domain.dose_plan import DoseLimits, plan_dose
from services.matching.domain.model import (
    AllocatedUnit,
    OrderStatus,
    RecordAllocation,
    RejectOrder,
)
from services.matching.domain.order import decide
from services.matching.domain.ranking import (
    Assessment,
    Criteria,
    UnitProfile,
    needed_on,
    rejection_reason,
)
from services.matching.index import SearchResult
from services.matching.metrics import ALLOCATION_SECONDS, ORDERS, RESERVATION_ATTEMPTS
from services.matching.search import CandidateSearch
from services.matching.views import OrderChanges, OrderViews
from shared.commands import Meta, execute
from shared.errors import ConcurrencyConflict, PreconditionFailed, SiteRefused, SiteUnavailable

log = logging.getLogger(__name__)


@dataclass(slots=True)
class _Attempt:
    """One run of an order's allocation saga: what it saw and what it tried."""

    order_id: str
    version: int  # the order's version when the saga read it (every append expects it)
    hospital_id: str
    meta: Meta
    started: float
    kept: dict[str, AllocatedUnit]  # still held after losing one of several units
    tried: list[str]  # units lost, given back or refused: not candidates again
    refused: int = 0
    given_back: set[str] = dataclasses.field(default_factory=set)  # released by compensation


class Allocation:
    """Runs the saga of each order awaiting allocation, at most one per order in this process."""

    def __init__(
        self,
        deps: Dependencies,
        search: CandidateSearch,
        views: OrderViews,
        changes: OrderChanges,
    ) -> None:
        self.deps = deps
        self.search = search
        self.views = views
        self.changes = changes
        self._order_locks: dict[str, asyncio.Lock] = {}
        self._sagas: dict[str, asyncio.Task[None]] = {}

    def start(self, order_id: str) -> asyncio.Task[None]:
        """The allocation saga of an order, at most one per order in this process."""
        running = self._sagas.get(order_id)
        if running is not None and not running.done():
            return running
        task = asyncio.create_task(self._allocate_safely(order_id), name=f"allocate {order_id}")
        self._sagas[order_id] = task
        task.add_done_callback(lambda t: self._sagas.pop(order_id, None))
        return task

    def running(self, order_id: str) -> bool:
        """Whether this process runs the order's saga now (its holds may not be recorded yet)."""
        return order_id in self._sagas

    async def stop(self) -> None:
        """Cancel the sagas still running (the reconciler resumes their orders)."""
        for task in list(self._sagas.values()):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    async def _allocate_safely(self, order_id: str) -> None:
        try:
            await self.allocate(order_id)
        except Exception:
            # The reconciler resumes orders left awaiting allocation.
            log.exception("allocation failed; will be resumed", extra={"order_id": order_id})

    async def allocate(self, order_id: str) -> None:
        lock = self._order_locks.setdefault(order_id, asyncio.Lock())
        async with lock:
            await self._allocate(order_id)
        if not lock.locked():
            self._order_locks.pop(order_id, None)  # expected versions guard any overlap

    async def _allocate(self, order_id: str) -> None:
        started = time.perf_counter()
        view = await self.views.view(order_id)
        state = view.state
        if state.status is not OrderStatus.PLACED or state.placed is None:
            return
        placed, clock, config = state.placed, self.deps.clock, self.deps.config
        criteria = Criteria(
            placed.hospital_id, placed.patient, placed.product_type, placed.dose_min,
            placed.dose_max, needed_on(placed.needed_by, clock()),
        )  # fmt: skip
        meta = Meta(
            actor=self.deps.actor,
            reason=f"allocation of order {order_id} for hospital {placed.hospital_id}",
            at=clock(),
            correlation_id=order_id,
        )
        saga = _Attempt(order_id, view.version, placed.hospital_id, meta, started,
                        kept={u.unit_id: u for u in state.units},
                        tried=[u.unit_id for u in state.released])  # fmt: skip
        first: SearchResult | None = None
        for _ in range(config.max_rounds):
            await self.search.fresh(max_age=0)
            now = clock()
            result = self.search.index.search(
                criteria, now=now, limit=config.candidates_per_round,
                for_order=order_id, exclude=saga.tried,
            )  # fmt: skip
            first = first or result
            if not result.ranked:
                break
            for candidate in result.ranked:
                versions = await self._reserve_all(saga, (candidate,), now)
                if versions is None:
                    continue
                unit = candidate.unit
                allocated = AllocatedUnit(
                    unit.unit_id, unit.din, unit.site_id, candidate.dose_per_kg,
                    versions[unit.unit_id], candidate.score, candidate.reasons,
                )  # fmt: skip
                await self._record(saga, (allocated,))
                return
        assert first is not None
        several = ""
        if placed.allow_multiple_units:
            if await self._allocate_several(saga, criteria):
                return
            several = (
                f"; several units were allowed, but no {config.max_units_per_dose} or fewer"
                f" of the {config.dose_plan_pool} best-ranked available units, all of one"
                " site, make the dose within the CD3+ limit"
            )
        reason = rejection_reason(criteria, first.excluded, saga.refused) + several
        command = RejectOrder(reason, self.search.table.version)
        try:
            await execute(
                self.deps.store, ORDER, order_id, partial(decide, command=command),
                meta, expected_version=saga.version,
            )  # fmt: skip
        except (ConcurrencyConflict, PreconditionFailed):
            return  # cancelled meanwhile
        finally:
            self.changes.notify(order_id)
        await self._give_back(saga, saga.kept.values(), f"order {order_id} rejected", kept=False)
        ORDERS.labels("rejected").inc()
        ALLOCATION_SECONDS.observe(time.perf_counter() - started)

    async def _allocate_several(self, saga: _Attempt, criteria: Criteria) -> bool:
        """No single unit reaches the dose: reserve the fewest that do together (dose_plan),
        all or none; a refused unit sends the saga to the next plan. True once recorded."""
        config = self.deps.config
        # Units below the minimum are candidates here: only their sum must reach it.
        relaxed = dataclasses.replace(criteria, dose_min=0.0)
        limits = DoseLimits(
            criteria.dose_min, criteria.dose_max,
            self.search.table.cd3_limit_per_kg.get(criteria.category), criteria.patient.weight_kg,
        )  # fmt: skip
        for _ in range(config.max_rounds):
            await self.search.fresh(max_age=0)
            now = self.deps.clock()
            result = self.search.index.search(
                relaxed, now=now, limit=config.dose_plan_pool,
                for_order=saga.order_id, exclude=saga.tried,
            )  # fmt: skip
            plan = plan_dose(result.ranked, limits, config.max_units_per_dose)
            if plan is None:
                return False
            versions = await self._reserve_all(saga, plan.parts, now)
            if versions is None:
                continue  # compensated: plan again without the refused unit
            units = tuple(
                AllocatedUnit(
                    a.unit.unit_id,
                    a.unit.din,
                    a.unit.site_id,
                    a.dose_per_kg,
                    versions[a.unit.unit_id],
                    a.score,
                    plan.reasons(a, limits),
                )
                for a in plan.parts
            )
            await self._record(saga, units)
            return True
        return False

    async def _reserve_all(
        self, saga: _Attempt, parts: Sequence[Assessment], now: datetime
    ) -> dict[str, int] | None:
        """Reserve every unit at its owning site, all or none: on a refusal (or a site that
        cannot be asked) give back what this attempt took and remember the unit. The units'
        versions after, or None."""
        versions: dict[str, int] = {}
        # One order of reservation everywhere: rival sagas collide on their first shared unit
        # (before either holds the rest) instead of each holding part of the other's plan.
        for candidate in sorted(parts, key=lambda a: a.unit.unit_id):
            unit = candidate.unit
            # The index's version guards against a unit changed since it was seen; a unit this
            # order holds, or held a moment ago in this saga, has moved on by our own doing
            # (and the owner still refuses one taken, quarantined or gone meanwhile).
            ours = unit.unit_id in saga.kept or unit.unit_id in saga.given_back
            try:
                versions[unit.unit_id] = await self.deps.sites.reserve(
                    unit.site_id, unit.unit_id, saga.order_id, now + self.deps.config.hold,
                    expected_version=None if ours else unit.version,
                    reason=f"allocated to order {saga.order_id} of hospital {saga.hospital_id}",
                )  # fmt: skip
            except (SiteRefused, SiteUnavailable) as exc:
                # An owner that cannot be asked is, for this order, one that said no: the next
                # candidate is tried (the unit may be offered again to a later order).
                why = exc.why
            else:
                RESERVATION_ATTEMPTS.labels("reserved").inc()
                continue
            RESERVATION_ATTEMPTS.labels("refused").inc()
            saga.tried.append(unit.unit_id)
            saga.refused += 1
            log.info(
                "candidate not reserved; trying the next",
                extra={"order_id": saga.order_id, "unit_id": unit.unit_id, "why": why},
            )
            taken = [p.unit for p in parts if p.unit.unit_id in versions]
            await self._give_back(
                saga, taken, f"unit {unit.unit_id} of the same dose was not reserved"
            )
            return None
        return versions

    async def _record(self, saga: _Attempt, units: tuple[AllocatedUnit, ...]) -> None:
        order_id = saga.order_id
        command = RecordAllocation(units, self.search.table.version)
        try:
            await execute(
                self.deps.store, ORDER, order_id, partial(decide, command=command),
                saga.meta, expected_version=saga.version,
            )  # fmt: skip
        except (ConcurrencyConflict, PreconditionFailed) as exc:
            # The order changed meanwhile (cancelled): give the units back.
            log.info("order changed during allocation", extra={"order_id": order_id,
                     "error": str(exc)})  # fmt: skip
            await self._give_back(saga, units, f"order {order_id} changed")
            self.changes.notify(order_id)
            return
        chosen = {u.unit_id for u in units}
        dropped = [u for u in saga.kept.values() if u.unit_id not in chosen]
        await self._give_back(saga, dropped, f"order {order_id} allocated other units", kept=False)
        self.changes.notify(order_id)
        ORDERS.labels("allocated").inc()
        ALLOCATION_SECONDS.observe(time.perf_counter() - saga.started)

    async def _give_back(
        self,
        saga: _Attempt,
        units: Iterable[AllocatedUnit | UnitProfile],
        why: str,
        *,
        kept: bool = True,
    ) -> None:
        """Release units this attempt reserved (and, with kept=False, those the order kept
        from before); a failed release is left to the reconciler, which finds the hold
        orphaned."""
        for u in units:
            if kept and u.unit_id in saga.kept:
                continue  # the order's own since before this attempt: not ours to give back
            if await release(self.deps, u.site_id, u.unit_id, saga.order_id, why):
                saga.given_back.add(u.unit_id)


async def release(deps: Dependencies, site_id: str, unit_id: str, order_id: str, why: str) -> bool:
    """Give a hold back at the unit's owner; False if the owner refused or could not be asked
    (the reconciler finds the hold orphaned and tries again)."""
    try:
        await deps.sites.release(site_id, unit_id, order_id, why)
    except (SiteRefused, SiteUnavailable) as exc:
        log.warning(
            "release failed; left to the reconciler",
            extra={"site": site_id, "unit_id": unit_id, "order_id": order_id, "error": str(exc)},
        )
        return False
    return True
