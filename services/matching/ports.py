"""What matching's service layer needs from outside, as protocols: the owning sites' storage,
its read model and the search index's feed (adapters: cellbank.storage.v1.client, read_model)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from shared.events import StoredEvent


class StorageSites(Protocol):
    """Every site's storage service: the owner of a unit decides on it.

    Errors (one contract for both calls): `shared.errors.SiteRefused` — the owner answered no
    (unit taken, stale version, quarantined, unknown): asking again will not help;
    `shared.errors.SiteUnavailable` — the owner could not be asked (unreachable, timed out, no
    endpoint, no access token): nothing is known of its decision."""

    async def reserve(
        self,
        site_id: str,
        unit_id: str,
        order_id: str,
        hold_until: datetime,
        expected_version: int | None,
        reason: str,
    ) -> int:
        """Hold the unit for the order until `hold_until`; the unit's version after."""
        ...

    async def release(self, site_id: str, unit_id: str, order_id: str, reason: str) -> None:
        """Returns once the owner no longer holds the unit for the order (idempotent)."""
        ...


@dataclass(frozen=True, slots=True)
class Hold:
    """A unit as the network inventory last saw it, for the orders that hold it."""

    unit_id: str
    site_id: str
    status: str
    reserved_for: str
    hold_until: datetime | None
    version: int


class ReadModel(Protocol):
    """This site's orders and notifications (its event store) and the network inventory's holds."""

    async def order_ids_of(self, hospital_id: str, limit: int = 500) -> list[str]: ...

    async def events_of(self, order_ids: list[str]) -> dict[str, list[StoredEvent]]: ...

    async def aggregates_of_type(self, aggregate_type: str) -> list[str]: ...

    async def orders_whose_latest_event_is(self, *event_types: str) -> list[str]: ...

    async def holds(self, order_prefix: str, unit_ids: list[str]) -> list[Hold]: ...


class IndexSource(Protocol):
    """Brings the search index up to date with the network inventory."""

    @property
    def refreshed_at(self) -> float:
        """time.monotonic() of the last refresh."""
        ...

    async def refresh(self) -> int:
        """Apply every change since the last refresh; returns the units read."""
        ...
