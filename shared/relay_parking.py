"""Records the outbox relay cannot publish: parked with the reason, their aggregate's later ones
held behind them, until an operator resolves the aggregate."""

from __future__ import annotations

import logging

import asyncpg

from shared import metrics
from shared.events import StoredEvent

log = logging.getLogger(__name__)


class RelayParking:
    """The parked aggregates of one relay, kept in its store's database (relay_parked)."""

    def __init__(self, pool: asyncpg.Pool, relay_name: str) -> None:
        self.pool = pool
        self.relay_name = relay_name
        self.aggregates: set[str] = set()

    async def load(self) -> None:
        rows = await self.pool.fetch(
            "SELECT DISTINCT aggregate_id FROM relay_parked WHERE relay_name = $1",
            self.relay_name,
        )
        self.aggregates = {r["aggregate_id"] for r in rows}

    async def park(self, event: StoredEvent, error: str) -> None:
        """The record cannot be published: keep it back with why, and hold its aggregate."""
        if await self._insert(event, error) and error:
            metrics.RELAY_PARKED.labels(self.relay_name).inc()
            log.error(
                "relay cannot publish a record; its aggregate is parked until an operator"
                " resolves it",
                extra={
                    "relay": self.relay_name, "position": event.position,
                    "event_id": event.event_id, "event_type": event.event_type,
                    "aggregate_id": event.aggregate_id, "error": error,
                },
            )  # fmt: skip
        self.aggregates.add(event.aggregate_id)

    async def hold(self, event: StoredEvent) -> None:
        """A later record of a parked aggregate: it waits behind the parked one."""
        await self.park(event, "")

    async def _insert(self, event: StoredEvent, error: str) -> bool:
        status = await self.pool.execute(
            "INSERT INTO relay_parked"
            " (relay_name, position, aggregate_id, event_id, is_poison, error)"
            " VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
            self.relay_name, event.position, event.aggregate_id, event.event_id, bool(error),
            error,
        )  # fmt: skip
        return bool(status.endswith(" 1"))

    async def parked(self) -> list[asyncpg.Record]:
        """What is parked now, in position order: position, aggregate, event id, poison?, why."""
        return list(
            await self.pool.fetch(
                "SELECT position, aggregate_id, event_id, is_poison, error, parked_at"
                " FROM relay_parked WHERE relay_name = $1 ORDER BY position",
                self.relay_name,
            )
        )

    async def held_positions(self, aggregate_id: str) -> list[int]:
        """The aggregate's records held behind its parked one(s), in position order."""
        rows = await self.pool.fetch(
            "SELECT position FROM relay_parked WHERE relay_name = $1 AND aggregate_id = $2"
            " AND NOT is_poison ORDER BY position",
            self.relay_name,
            aggregate_id,
        )
        return [r["position"] for r in rows]

    async def forget(self, aggregate_id: str) -> None:
        """The aggregate is resolved: its rows go, it flows again."""
        await self.pool.execute(
            "DELETE FROM relay_parked WHERE relay_name = $1 AND aggregate_id = $2",
            self.relay_name,
            aggregate_id,
        )
        self.aggregates.discard(aggregate_id)
