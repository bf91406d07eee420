"""A test read model: one row per applied event, refusing out-of-order versions."""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg

from shared.digest import rows_digest, table_digest
from shared.events import StoredEvent

SCHEMA = """
CREATE TABLE IF NOT EXISTS thing_rows (
    aggregate_id text NOT NULL, version bigint NOT NULL, event_id text NOT NULL, payload bytea
);
CREATE TABLE IF NOT EXISTS thing_heads (aggregate_id text PRIMARY KEY, version bigint NOT NULL);
"""
DIGEST_QUERY = "SELECT aggregate_id, version, event_id, payload FROM thing_rows ORDER BY aggregate_id, version, event_id"


class OutOfOrder(Exception):
    pass


class ThingProjection:
    """No unique constraint on purpose: a duplicate row would show that dedupe failed."""

    def __init__(
        self, topics: Sequence[str], *, name: str = "things", poison_payload: bytes | None = None
    ) -> None:
        self.name = name
        self.topics = tuple(topics)
        self.poison_payload = poison_payload

    async def apply(self, conn: asyncpg.Connection, event: StoredEvent) -> None:
        if self.poison_payload is not None and event.payload == self.poison_payload:
            raise ValueError(f"cannot project payload {event.payload!r}")
        head = await conn.fetchval(
            "SELECT version FROM thing_heads WHERE aggregate_id = $1", event.aggregate_id
        )
        if (head or 0) + 1 != event.aggregate_version:
            raise OutOfOrder(f"{event.aggregate_id}: have v{head}, got v{event.aggregate_version}")
        await conn.execute(
            "INSERT INTO thing_heads VALUES ($1, $2) ON CONFLICT (aggregate_id) DO UPDATE SET version = $2",
            event.aggregate_id,
            event.aggregate_version,
        )
        await conn.execute(
            "INSERT INTO thing_rows VALUES ($1, $2, $3, $4)",
            event.aggregate_id,
            event.aggregate_version,
            event.event_id,
            event.payload,
        )


async def create_schema(pool: asyncpg.Pool) -> None:
    await pool.execute(SCHEMA)


def expected_digest(events: Sequence[StoredEvent]) -> str:
    rows = sorted((e.aggregate_id, e.aggregate_version, e.event_id, e.payload) for e in events)
    return rows_digest(rows)


async def projected_digest(pool: asyncpg.Pool) -> str:
    return await table_digest(pool, DIGEST_QUERY)


class BatchThingProjection(ThingProjection):
    """The same read model with the runner's batch hook (BatchProjection)."""

    def __init__(self, topics: Sequence[str], *, poison_payload: bytes | None = None) -> None:
        super().__init__(topics, poison_payload=poison_payload)
        self.batch_calls = 0

    async def apply_batch(self, conn: asyncpg.Connection, events: Sequence[StoredEvent]) -> None:
        self.batch_calls += 1
        for event in events:
            await self.apply(conn, event)
