"""Matching at one site: search the network inventory, and the order saga — reserve the best
candidate (or, where the order allows, the fewest units making the dose together) at its owning
site (the owner decides), record the allocation, or reject."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from prometheus_client import Counter, Histogram

from services.matching.adapters.codec import NOTIFICATION, ORDER
from services.matching.domain import order as order_rules
from services.matching.domain.dose_plan import MAX_UNITS_PER_DOSE, DoseLimits, plan_dose
from services.matching.domain.model import (
    AcknowledgeNotification,
    AllocatedUnit,
    CancelOrder,
    IssueNotification,
    LoseAllocation,
    Notification,
    NotificationIssued,
    Order,
    OrderCommand,
    OrderEvent,
    OrderPlaced,
    OrderStatus,
    PlaceOrder,
    RecordAllocation,
    RecordShipment,
    RejectOrder,
)
from services.matching.domain.ranking import (
    Assessment,
    Classification,
    Criteria,
    Transit,
    UnitProfile,
    needed_on,
    rejection_reason,
)
from services.matching.index import CandidateIndex, SearchResult
from services.matching.read_model import Hold, IndexFeed, MatchingReadModel
from services.storage.client import StorageGateway
from shared.commands import Meta, execute
from shared.errors import ConcurrencyConflict, NotFound, PreconditionFailed
from shared.events import StoredEvent
from shared.eventstore import Clock, EventStore

log = logging.getLogger(__name__)

ORDERS = Counter("cellbank_orders_total", "Orders by outcome", ["outcome"])
ALLOCATION_SECONDS = Histogram(
    "cellbank_allocation_seconds", "Order placed → allocated or rejected",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)  # fmt: skip
RESERVATION_ATTEMPTS = Counter(
    "cellbank_reservation_attempts_total", "Reservations asked of owning sites", ["result"]
)
ALLOCATED, REJECTED = "cellbank.matching.v1.OrderAllocated", "cellbank.matching.v1.OrderRejected"
PLACED, LOST = "cellbank.matching.v1.OrderPlaced", "cellbank.matching.v1.AllocationLost"


@dataclass(frozen=True, slots=True)
class MatchingConfig:
    hold: timedelta = timedelta(hours=24)  # a live order's reservation, renewed at half-life

    @property
    def renew_below(self) -> timedelta:
        return self.hold / 2

    candidates_per_round: int = 20
    # Rounds until no untried candidate is left (each refreshes the index); the cap only
    # bounds a pathological loop — the network's suitable units are tried, every one.
    max_rounds: int = 1000
    # Several units for one dose (orders that allow it): at most this many, chosen among the
    # best this many available units of the category.
    max_units_per_dose: int = MAX_UNITS_PER_DOSE
    dose_plan_pool: int = 50
    place_wait: float = 10.0  # PlaceOrder waits this long for the outcome, then answers PLACED
    reconcile_every: float = 10.0
    index_max_age: float = 0.25  # seconds a search may use the index without refreshing it


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


@dataclass(frozen=True, slots=True)
class NotificationView:
    notification_id: str
    state: Notification
    created_at: datetime
    acknowledged_at: datetime | None


@dataclass(frozen=True, slots=True)
class OrderView:
    order_id: str
    state: Order
    version: int
    placed_at: datetime | None
    updated_at: datetime | None


class Matching:
    def __init__(
        self,
        store: EventStore,
        read_model: MatchingReadModel,
        index: CandidateIndex,
        feed: IndexFeed,
        storage: StorageGateway,
        table: Classification,
        transit: Transit,
        site_id: str,
        clock: Clock,
        config: MatchingConfig = MatchingConfig(),
    ) -> None:
        self.store = store
        self.read_model = read_model
        self.index = index
        self.feed = feed
        self.storage = storage
        self.table = table
        self.transit = transit
        self.site_id = site_id
        self.clock = clock
        self.config = config
        self._refresh_lock = asyncio.Lock()
        self._order_locks: dict[str, asyncio.Lock] = {}
        self._sagas: dict[str, asyncio.Task[None]] = {}
        self._changed: dict[str, asyncio.Event] = {}
        self._suspects: dict[tuple[str, str], datetime] = {}  # (unit, order) → first seen orphaned

    def use_table(self, table: Classification) -> None:
        """Rank with another table from now on (a newly approved HLA reference release)."""
        self.table = table
        self.index.use_table(table)

    # ---- search ---------------------------------------------------------------------------

    async def fresh_index(self, max_age: float | None = None) -> None:
        limit = self.config.index_max_age if max_age is None else max_age
        if time.monotonic() - self.feed.refreshed_at <= limit:
            return
        async with self._refresh_lock:
            if time.monotonic() - self.feed.refreshed_at <= limit:
                return
            await self.feed.refresh()

    async def search(self, criteria: Criteria, limit: int) -> SearchResult:
        await self.fresh_index()
        return self.index.search(criteria, now=self.clock(), limit=limit)

    # ---- orders ---------------------------------------------------------------------------

    def order_id_for(self, hospital_id: str, request_id: str) -> str:
        """Deterministic: the same request of the same hospital is the same order."""
        digest = hashlib.sha256(f"{hospital_id}\0{request_id}".encode()).hexdigest()[:20].upper()
        return f"ORD-{self.site_id}-{digest}"

    async def place(self, placed: OrderPlaced, meta: Meta) -> OrderView:
        order_id = self.order_id_for(placed.hospital_id, placed.request_id)
        command = PlaceOrder(placed, meta.at)
        for attempt in range(3):
            try:
                outcome = await execute(
                    self.store, ORDER, order_id, _decider(command),
                    meta.correlated(order_id),
                )  # fmt: skip
                break
            except ConcurrencyConflict:
                if attempt == 2:
                    raise
                continue  # the same request arrived twice at once: decide on the winner's order
        if outcome.events:
            self._notify(order_id)
            ORDERS.labels("placed").inc()
        if outcome.state.status is OrderStatus.PLACED:
            saga = self.start_allocation(order_id)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(saga), self.config.place_wait)
        return await self.view(order_id)

    def start_allocation(self, order_id: str) -> asyncio.Task[None]:
        """The allocation saga of an order, at most one per order in this process."""
        running = self._sagas.get(order_id)
        if running is not None and not running.done():
            return running
        task = asyncio.create_task(self._allocate_safely(order_id), name=f"allocate {order_id}")
        self._sagas[order_id] = task
        task.add_done_callback(lambda t: self._sagas.pop(order_id, None))
        return task

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
        view = await self.view(order_id)
        state = view.state
        if state.status is not OrderStatus.PLACED or state.placed is None:
            return
        placed = state.placed
        criteria = Criteria(
            placed.hospital_id, placed.patient, placed.product_type, placed.dose_min,
            placed.dose_max, needed_on(placed.needed_by, self.clock()),
        )  # fmt: skip
        meta = Meta(
            actor=f"service:matching-{self.site_id}",
            reason=f"allocation of order {order_id} for hospital {placed.hospital_id}",
            at=self.clock(),
            correlation_id=order_id,
        )
        saga = _Attempt(order_id, view.version, placed.hospital_id, meta, started,
                        kept={u.unit_id: u for u in state.units},
                        tried=[u.unit_id for u in state.released])  # fmt: skip
        first: SearchResult | None = None
        for _ in range(self.config.max_rounds):
            await self.fresh_index(max_age=0)
            now = self.clock()
            result = self.index.search(
                criteria, now=now, limit=self.config.candidates_per_round,
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
                f"; several units were allowed, but no {self.config.max_units_per_dose} or fewer"
                f" of the {self.config.dose_plan_pool} best-ranked available units, all of one"
                " site, make the dose within the CD3+ limit"
            )
        reason = rejection_reason(criteria, first.excluded, saga.refused) + several
        command_r = RejectOrder(reason, self.table.version)
        try:
            await execute(
                self.store, ORDER, order_id, _decider(command_r),
                meta, expected_version=saga.version,
            )  # fmt: skip
        except (ConcurrencyConflict, PreconditionFailed):
            return  # cancelled meanwhile
        finally:
            self._notify(order_id)
        await self._give_back(saga, saga.kept.values(), f"order {order_id} rejected", kept=False)
        ORDERS.labels("rejected").inc()
        ALLOCATION_SECONDS.observe(time.perf_counter() - started)

    async def _allocate_several(self, saga: _Attempt, criteria: Criteria) -> bool:
        """No single unit reaches the dose: reserve the fewest that do together (dose_plan),
        all or none; a refused unit sends the saga to the next plan. True once recorded."""
        # Units below the minimum are candidates here: only their sum must reach it.
        relaxed = dataclasses.replace(criteria, dose_min=0.0)
        limits = DoseLimits(
            criteria.dose_min, criteria.dose_max,
            self.table.cd3_limit_per_kg.get(criteria.category), criteria.patient.weight_kg,
        )  # fmt: skip
        for _ in range(self.config.max_rounds):
            await self.fresh_index(max_age=0)
            now = self.clock()
            result = self.index.search(
                relaxed, now=now, limit=self.config.dose_plan_pool,
                for_order=saga.order_id, exclude=saga.tried,
            )  # fmt: skip
            plan = plan_dose(result.ranked, limits, self.config.max_units_per_dose)
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
        """Reserve every unit at its owning site, all or none: on a refusal give back what
        this attempt took and remember the refused unit. The units' versions after, or None."""
        versions: dict[str, int] = {}
        # One order of reservation everywhere: rival sagas collide on their first shared unit
        # (before either holds the rest) instead of each holding part of the other's plan.
        for candidate in sorted(parts, key=lambda a: a.unit.unit_id):
            unit = candidate.unit
            # The index's version guards against a unit changed since it was seen; a unit this
            # order holds, or held a moment ago in this saga, has moved on by our own doing
            # (and the owner still refuses one taken, quarantined or gone meanwhile).
            ours = unit.unit_id in saga.kept or unit.unit_id in saga.given_back
            reserved = await self.storage.reserve(
                unit.site_id, unit.unit_id, saga.order_id, now + self.config.hold,
                expected_version=None if ours else unit.version,
                reason=f"allocated to order {saga.order_id} of hospital {saga.hospital_id}",
            )  # fmt: skip
            RESERVATION_ATTEMPTS.labels("reserved" if reserved.ok else "refused").inc()
            if reserved.ok:
                versions[unit.unit_id] = reserved.version
                continue
            saga.tried.append(unit.unit_id)
            saga.refused += 1
            log.info(
                "candidate not reserved; trying the next",
                extra={"order_id": saga.order_id, "unit_id": unit.unit_id, "why": reserved.why},
            )
            taken = [p.unit for p in parts if p.unit.unit_id in versions]
            await self._give_back(
                saga, taken, f"unit {unit.unit_id} of the same dose was not reserved"
            )
            return None
        return versions

    async def _record(self, saga: _Attempt, units: tuple[AllocatedUnit, ...]) -> None:
        order_id = saga.order_id
        command = RecordAllocation(units, self.table.version)
        try:
            await execute(
                self.store, ORDER, order_id, _decider(command),
                saga.meta, expected_version=saga.version,
            )  # fmt: skip
        except (ConcurrencyConflict, PreconditionFailed) as exc:
            # The order changed meanwhile (cancelled): give the units back.
            log.info("order changed during allocation", extra={"order_id": order_id,
                     "error": str(exc)})  # fmt: skip
            await self._give_back(saga, units, f"order {order_id} changed")
            self._notify(order_id)
            return
        chosen = {u.unit_id for u in units}
        dropped = [u for u in saga.kept.values() if u.unit_id not in chosen]
        await self._give_back(saga, dropped, f"order {order_id} allocated other units", kept=False)
        self._notify(order_id)
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
            if await self.storage.release(u.site_id, u.unit_id, saga.order_id, why):
                saga.given_back.add(u.unit_id)

    async def cancel(self, order_id: str, hospital_id: str, reason: str, meta: Meta) -> OrderView:
        await self.view(order_id, hospital_id)  # NOT_FOUND for another hospital's order
        command = CancelOrder(reason, hospital_id)
        outcome = await execute(
            self.store, ORDER, order_id, _decider(command),
            meta.correlated(order_id),
        )  # fmt: skip
        if outcome.events:
            self._notify(order_id)
            ORDERS.labels("cancelled").inc()
            for unit in outcome.state.released:
                await self.storage.release(
                    unit.site_id, unit.unit_id, order_id, f"order {order_id} cancelled: {reason}"
                )  # a failure is retried by the reconciler
        return await self.view(order_id)

    # ---- delivery, receipt, infusion ------------------------------------------------------

    async def record_shipment(self, order_id: str, command: RecordShipment, meta: Meta) -> None:
        """A fact of the order's shipment (from the delivery events); recorded once."""
        outcome = await execute(self.store, ORDER, order_id, _decider(command), meta)
        if outcome.events:
            self._notify(order_id)

    async def hospital_step(
        self, order_id: str, hospital_id: str, command: OrderCommand, meta: Meta
    ) -> OrderView:
        """Receipt, infusion or an adverse-event report, e-signed by the hospital."""
        await self.view(order_id, hospital_id)
        outcome = await execute(
            self.store, ORDER, order_id, _decider(command), meta.correlated(order_id)
        )
        if outcome.events:
            self._notify(order_id)
        return await self.view(order_id)

    async def issue_notification(self, issued: NotificationIssued, meta: Meta) -> None:
        notification_id = f"NTF-{issued.recall_id}-{issued.order_id}"
        command = IssueNotification(issued)
        await execute(
            self.store, NOTIFICATION, notification_id,
            lambda s: order_rules.decide_notification(s, command), meta,
        )  # fmt: skip

    async def acknowledge(
        self, notification_id: str, hospital_id: str, meta: Meta
    ) -> NotificationView:
        command = AcknowledgeNotification(hospital_id, meta.actor)
        await execute(
            self.store, NOTIFICATION, notification_id,
            lambda s: order_rules.decide_notification(s, command), meta,
        )  # fmt: skip
        (view,) = [
            n for n in await self.notifications(hospital_id) if n.notification_id == notification_id
        ]
        return view

    async def notifications(self, hospital_id: str) -> list[NotificationView]:
        ids = await self.read_model.aggregates_of_type("notification")
        streams = await self.read_model.events_of(ids)
        out = []
        for notification_id, events in streams.items():
            state = NOTIFICATION.fold(events)
            if state.issued is None or state.issued.hospital_id != hospital_id:
                continue
            acknowledged = events[-1].occurred_at if state.acknowledged else None
            out.append(
                NotificationView(notification_id, state, events[0].occurred_at, acknowledged)
            )
        return sorted(out, key=lambda n: n.created_at, reverse=True)

    # ---- reading --------------------------------------------------------------------------

    async def view(self, order_id: str, hospital_id: str | None = None) -> OrderView:
        """The order; NOT_FOUND if it does not exist or belongs to another hospital."""
        events = await self.store.load(order_id)
        view = _view(order_id, events)
        if view.state.placed is None or (
            hospital_id is not None and view.state.placed.hospital_id != hospital_id
        ):
            raise NotFound(f"order {order_id} not found")
        return view

    async def orders_of(self, hospital_id: str) -> list[OrderView]:
        ids = await self.read_model.order_ids_of(hospital_id)
        streams = await self.read_model.events_of(ids)
        return [_view(i, streams[i]) for i in ids if streams[i]]

    async def watch(self, order_id: str, hospital_id: str) -> AsyncIterator[OrderView]:
        """The order now, then each new version; ends once it is settled (Order.settled)."""
        view = await self.view(order_id, hospital_id)
        yield view
        while not view.state.settled:
            changed = self._changed.setdefault(order_id, asyncio.Event())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), 0.5)  # other processes: poll
            latest = await self.view(order_id)
            if latest.version != view.version:
                view = latest
                yield view

    def _notify(self, order_id: str) -> None:
        event = self._changed.pop(order_id, None)
        if event is not None:
            event.set()

    # ---- background -----------------------------------------------------------------------

    async def run_index(self, stop: asyncio.Event) -> None:
        """Keep the search index fresh between searches (a search refreshes a stale one)."""
        while not stop.is_set():
            try:
                await self.fresh_index()
            except Exception as exc:  # the database is down: searches will say so
                log.warning("index refresh failed", extra={"error": repr(exc)})
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.config.index_max_age)

    async def run_reconciler(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await self.reconcile()
            except Exception as exc:
                log.warning("reconciliation failed; retrying", extra={"error": repr(exc)})
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.config.reconcile_every)
        for task in list(self._sagas.values()):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await self.storage.close()

    async def reconcile(self) -> None:
        """Resume orders awaiting allocation; give back holds no live order owns; notice
        units their site took back; renew holds of live orders before they lapse."""
        for order_id in await self.read_model.orders_whose_latest_event_is(PLACED, LOST):
            self.start_allocation(order_id)
        allocated = await self.read_model.orders_whose_latest_event_is(ALLOCATED)
        prefix = f"ORD-{self.site_id}-"
        streams = await self.read_model.events_of(allocated)
        held: dict[str, tuple[str, AllocatedUnit]] = {}
        for order_id, events in streams.items():
            for unit in _view(order_id, events).state.units:
                held[unit.unit_id] = (order_id, unit)
        now = self.clock()
        holds = await self.read_model.holds(prefix, list(held))
        others = sorted({h.reserved_for for h in holds if h.reserved_for.startswith(prefix)})
        states = {
            i: _view(i, e).state for i, e in (await self.read_model.events_of(others)).items()
        }
        for h in holds:
            if h.reserved_for.startswith(prefix) and h.reserved_for not in self._sagas:
                state = states.get(h.reserved_for)
                if state is None or not state.holds(h.unit_id):
                    if await self._orphaned(h, now) and await self.storage.release(
                        h.site_id, h.unit_id, h.reserved_for, "no live order holds it"
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
            elif h.hold_until is not None and h.hold_until - now < self.config.renew_below:
                await self.storage.reserve(
                    h.site_id, h.unit_id, order_id, now + self.config.hold, None,
                    reason=f"hold renewed for live order {order_id}",
                )  # fmt: skip

    async def _orphaned(self, hold: Hold, now: datetime) -> bool:
        """A hold of one of this site's orders that the order does not (or no longer) own:
        left by a crash between reserving and recording, or a release that failed. Judged on
        the order as it is now, and only once it has looked orphaned for a grace period (a
        saga elsewhere may be between its reservation and its record)."""
        key = (hold.unit_id, hold.reserved_for)
        first_seen = self._suspects.setdefault(key, now)
        grace = timedelta(seconds=max(5.0, 3 * self.config.reconcile_every))
        if now - first_seen < grace or hold.reserved_for in self._sagas:
            return False
        events = await self.store.load(hold.reserved_for)
        if ORDER.fold(events).holds(hold.unit_id):
            self._suspects.pop(key, None)
            return False
        return True

    async def _lose(self, order_id: str, unit_id: str, why: str) -> None:
        meta = Meta(
            actor=f"service:matching-{self.site_id}",
            reason=f"unit {unit_id} of order {order_id} taken back by its site: {why}",
            at=self.clock(),
            correlation_id=order_id,
        )
        command = LoseAllocation(unit_id, why)
        outcome = await execute(self.store, ORDER, order_id, _decider(command), meta)
        if outcome.events:
            self._notify(order_id)
            log.warning("allocated unit lost; allocating again", extra={"order_id": order_id,
                        "unit_id": unit_id, "why": why})  # fmt: skip
            self.start_allocation(order_id)


def _decider(command: OrderCommand) -> Callable[[Order], Sequence[OrderEvent]]:
    return lambda state: order_rules.decide(state, command)


def _view(order_id: str, events: Sequence[StoredEvent]) -> OrderView:
    state = ORDER.fold(events)
    placed_at = events[0].occurred_at if events else None
    updated_at = events[-1].occurred_at if events else None
    return OrderView(order_id, state, len(events), placed_at, updated_at)
