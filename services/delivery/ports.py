"""What delivery's service layer needs from outside it: the storage of every site (picks and
recall holds) and the records it reads (the lookback model and this site's own events)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from services.delivery.domain.model import RecallNotice


class StorageSites(Protocol):
    """The storage service of each site, asked by the unit's owning site id. One error
    contract (shared.errors): `SiteRefused` when the owning site answered no, `SiteUnavailable`
    when it could not be asked (unreachable, timed out, no endpoint, no access token)."""

    async def pick(self, site_id: str, unit_id: str, order_id: str, reason: str) -> int:
        """Take the unit out of its position for the order's shipment; its version after."""
        ...

    async def recall(self, site_id: str, unit_id: str, recall_id: str, reason: str) -> str:
        """Hold the unit back for the recall; its status after (RECALLED, or PICKED/… if it
        had already left stock). Refused if the site never stored the unit."""
        ...


@dataclass(frozen=True, slots=True)
class OrderFacts:
    order_id: str
    site_id: str
    hospital_id: str
    status: str
    unit_ids: tuple[str, ...]
    placed_at: datetime | None
    unit_sites: dict[str, str]


class DeliveryRecords(Protocol):
    """The reads of the service layer: the network's lookback model (orders, units, who holds
    them) and this site's own event store."""

    async def order(self, order_id: str) -> OrderFacts | None:
        """The order with the owning site of each of its units known here; None if unknown."""
        ...

    async def aggregate_ids(self, aggregate_type: str) -> list[str]:
        """This site's aggregates of a type, oldest first."""
        ...

    async def shipments_created(self) -> list[tuple[str, str, bytes]]:
        """(shipment id, event type, payload) of every ShipmentCreated of this site."""
        ...

    async def units_of(self, dins: list[str], unit_ids: list[str]) -> dict[str, str]:
        """Every unit of the DINs (and the named units) → the site that owns it."""
        ...

    async def notices(self, unit_ids: list[str]) -> list[RecallNotice]:
        """Hospitals holding or having infused any of the units, one notice per order."""
        ...
