"""Delivery at one site: shipments of the units it owns (picked from its storage when they
leave), custody, compromise and QA disposition; recalls raised here, held back at every site."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections.abc import Callable, Sequence
from datetime import datetime

from services.delivery.adapters.codec import RECALL, SHIPMENT
from services.delivery.domain import recall as recall_rules
from services.delivery.domain import shipment as shipment_rules
from services.delivery.domain.model import (
    Compromise,
    CreateShipment,
    DeliveryRules,
    Dispatch,
    RaiseRecall,
    Recall,
    RecallCommand,
    RecallEvent,
    RecallRaised,
    RecordUnitHeld,
    Shipment,
    ShipmentCommand,
    ShipmentCreated,
    ShipmentEvent,
    ShipmentStatus,
    Shipper,
    Trigger,
)
from services.delivery.ports import DeliveryRecords, StorageSites
from shared.commands import Meta, Outcome, execute, load
from shared.errors import (
    InvalidArgument,
    NotFound,
    PreconditionFailed,
    SiteRefused,
    SiteUnavailable,
    StoreBusy,
    UnknownAtSite,
)
from shared.eventstore import Clock, EventStore

log = logging.getLogger(__name__)


def _short(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()[:12].upper()


class Delivery:
    def __init__(
        self,
        store: EventStore,
        records: DeliveryRecords,
        sites: StorageSites,
        site_id: str,
        clock: Clock,
        rules: DeliveryRules | None = None,
        recall_every: float = 5.0,
    ) -> None:
        self.store = store
        self.records = records
        self.sites = sites
        self.site_id = site_id
        self.clock = clock
        self.rules = rules or DeliveryRules()
        self.recall_every = recall_every

    # ---- shipments ------------------------------------------------------------------------

    def shipment_id_for(self, order_id: str) -> str:
        return f"SHP-{self.site_id}-{_short(order_id)}"

    async def create_shipment(
        self,
        order_id: str,
        shipper: Shipper,
        logger_id: str,
        courier: str,
        route: str,
        planned_transit_minutes: float,
        promised_at: datetime,
        meta: Meta,
    ) -> tuple[str, Outcome[Shipment]]:
        order = await self.records.order(order_id)
        if order is None:
            raise NotFound(f"order {order_id} is not known here (yet: orders arrive through Kafka)")
        if order.status != "ALLOCATED":
            raise PreconditionFailed("order not allocated", f"order {order_id} is {order.status}")
        if len(order.unit_sites) != len(order.unit_ids):
            raise NotFound(
                f"the units of order {order_id} are not known here yet (they arrive through Kafka)"
            )
        foreign = sorted({s for u, s in order.unit_sites.items() if s != self.site_id})
        if foreign:
            raise PreconditionFailed(
                "units owned by another site",
                f"ship order {order_id} from {', '.join(foreign) or 'the owning site'}",
            )
        created = ShipmentCreated(
            order_id, order.site_id, order.hospital_id, order.unit_ids, shipper, logger_id.strip(),
            courier.strip(), route.strip(), planned_transit_minutes, promised_at, order.placed_at,
        )  # fmt: skip
        shipment_id = self.shipment_id_for(order_id)
        command = CreateShipment(created, meta.at)
        outcome = await execute(
            self.store, SHIPMENT, shipment_id, _shipment(command), meta.correlated(order_id)
        )
        return shipment_id, outcome

    async def dispatch(
        self, shipment_id: str, meta: Meta, expected_version: int | None
    ) -> Outcome[Shipment]:
        """Refuse first (hold time, logger, requalification), then pick, then record."""
        state, version = await load(self.store, SHIPMENT, shipment_id)
        command = Dispatch(meta.at, f"bank:{self.site_id}", self.rules)
        if not shipment_rules.decide(state, command):
            return Outcome(state, version, ())
        assert state.created is not None
        for unit_id in state.created.unit_ids:
            await self._pick(unit_id, state.created.order_id, shipment_id)
        return await self.handle(shipment_id, command, meta, expected_version)

    async def _pick(self, unit_id: str, order_id: str, shipment_id: str) -> None:
        try:
            await self.sites.pick(
                self.site_id, unit_id, order_id, f"picked for shipment {shipment_id}"
            )
        except SiteUnavailable as err:
            raise StoreBusy(f"storage of {self.site_id} unreachable: {err.why}") from None
        except SiteRefused as err:
            raise PreconditionFailed("unit cannot be picked", f"{unit_id}: {err.why}") from None

    async def handle(
        self, shipment_id: str, command: ShipmentCommand, meta: Meta, expected_version: int | None
    ) -> Outcome[Shipment]:
        return await execute(
            self.store, SHIPMENT, shipment_id, _shipment(command), meta,
            expected_version=expected_version,
        )  # fmt: skip

    async def shipper_excursion(
        self, shipper_id: str, cause: str, detail: str, meta: Meta
    ) -> list[str]:
        """Every shipment on its way with this shipper is compromised (once per cause)."""
        compromised = []
        for shipment_id in await self.shipments_with(shipper_id):
            outcome = await execute(
                self.store, SHIPMENT, shipment_id, _shipment(Compromise(cause, detail)), meta
            )
            if outcome.events or outcome.state.compromised:
                compromised.append(shipment_id)
        return compromised

    async def shipments_with(self, shipper_id: str) -> list[str]:
        """This site's shipments in transit with the shipper, from its own event store (the
        authority: the lookback model may not have seen a dispatch of a second ago)."""
        rows = await self.records.shipments_created()
        out = []
        for shipment_id, event_type, payload in rows:
            created = SHIPMENT.codec.decode(event_type, payload)
            if created.shipper.shipper_id != shipper_id:
                continue
            state, _ = await load(self.store, SHIPMENT, shipment_id)
            if state.status is ShipmentStatus.IN_TRANSIT:
                out.append(shipment_id)
        return out

    async def shipment(self, shipment_id: str) -> tuple[Shipment, int]:
        state, version = await load(self.store, SHIPMENT, shipment_id)
        if state.created is None:
            raise NotFound(f"shipment {shipment_id} not found at {self.site_id}")
        return state, version

    # ---- recalls --------------------------------------------------------------------------

    async def raise_recall(
        self,
        trigger: Trigger,
        subject: str,
        reason: str,
        dins: Sequence[str],
        unit_ids: Sequence[str],
        source_event_id: str,
        meta: Meta,
    ) -> str:
        """Record the recall with every affected unit and every hospital to tell, then hold
        the units back at their sites (what fails now, the recall worker retries)."""
        units = await self.records.units_of(list(dins), list(unit_ids))
        if not units and not dins:
            raise InvalidArgument("subject", f"no units known for {subject}")
        notices = await self.records.notices(list(units))
        recall_id = f"RCL-{self.site_id}-{_short(source_event_id)}"
        raised = RecallRaised(
            trigger, subject, reason, tuple(dins), tuple(units), source_event_id, tuple(notices)
        )
        await execute(
            self.store, RECALL, recall_id,
            _recall(RaiseRecall(raised)), meta.correlated(recall_id),
        )  # fmt: skip
        log.warning(
            "recall raised",
            extra={"recall_id": recall_id, "trigger": trigger.value, "subject": subject,
                   "units": len(units), "hospitals": len(notices)},
        )  # fmt: skip
        await self.hold_units(recall_id)
        return recall_id

    async def hold_units(self, recall_id: str) -> Recall:
        state, _ = await load(self.store, RECALL, recall_id)
        if state.raised is None:
            raise NotFound(f"recall {recall_id} not found")
        sites = await self.records.units_of([], list(state.pending_units))
        meta = Meta(
            f"service:delivery-{self.site_id}", f"recall {recall_id}: {state.raised.reason}",
            self.clock(), correlation_id=recall_id,
        )  # fmt: skip
        for unit_id in state.pending_units:
            site = sites.get(unit_id)
            if site is None:
                continue  # not yet in the lookback model: the worker tries again
            status = await self._hold(site, unit_id, recall_id, meta.reason)
            if status is None:
                continue  # the site could not be asked: the worker tries again
            outcome = "RECALLED" if status == "RECALLED" else "NOT_IN_STOCK"
            command = RecordUnitHeld(unit_id, site, outcome)
            result = await execute(self.store, RECALL, recall_id, _recall(command), meta)
            state = result.state
        return state

    async def _hold(self, site: str, unit_id: str, recall_id: str, reason: str) -> str | None:
        """The unit's status at its site once held back for the recall (NOT_IN_STORAGE: the
        site does not know it, e.g. released but never stored); None if the site could not be
        asked or refused for another reason (a write racing ours there): asked again later."""
        try:
            return await self.sites.recall(site, unit_id, recall_id, reason)
        except UnknownAtSite:
            return "NOT_IN_STORAGE"
        except (SiteRefused, SiteUnavailable) as err:
            log.warning(
                "recall hold failed; will retry",
                extra={"recall_id": recall_id, "unit_id": unit_id, "site": site, "error": err.why},
            )
            return None

    async def recalls(self) -> list[tuple[str, Recall, datetime]]:
        ids = await self.records.aggregate_ids("recall")
        out = []
        for recall_id in ids:
            events = await self.store.load(recall_id)
            out.append((recall_id, RECALL.fold(events), events[0].occurred_at))
        return out

    async def run_recalls(self, stop: asyncio.Event) -> None:
        """Retry holding back units of open recalls (a site was down, or not yet known)."""
        while not stop.is_set():
            try:
                for recall_id, state, _ in await self.recalls():
                    if state.pending_units:
                        await self.hold_units(recall_id)
            except Exception as exc:
                log.warning("recall worker round failed", extra={"error": repr(exc)})
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.recall_every)


def _shipment(command: ShipmentCommand) -> Callable[[Shipment], Sequence[ShipmentEvent]]:
    return lambda state: shipment_rules.decide(state, command)


def _recall(command: RecallCommand) -> Callable[[Recall], Sequence[RecallEvent]]:
    return lambda state: recall_rules.decide(state, command)
