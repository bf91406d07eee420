"""EventStore on PostgreSQL: optimistic concurrency, commit-ordered positions, hash chain."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import fields, replace

import asyncpg

from shared import metrics
from shared.errors import ConcurrencyConflict, InvalidArgument
from shared.events import NewEvent, StoredEvent
from shared.eventstore import AppendResult, Clock, seal, utc_now, validate_append
from shared.hashchain import GENESIS, ChainReport, verify_chain

EVENTS_CHANNEL = "cellbank_events"  # a wake-up hint for tailers; never a source of order

# Selected in StoredEvent's field order, so a row maps onto it positionally.
_COLUMNS = ", ".join(
    "event_id::text" if f.name == "event_id" else f.name for f in fields(StoredEvent)
)

# EXCLUSIVE mode blocks other appenders (ROW EXCLUSIVE) but not readers (ACCESS SHARE), so
# positions are taken and committed one transaction at a time: a tailer never sees N+1 before N.
_LOCK = (
    "SET LOCAL lock_timeout = '{timeout_ms}ms';"
    " LOCK TABLE events IN EXCLUSIVE MODE;"
    f" NOTIFY {EVENTS_CHANNEL}"
)

_STATE = """
SELECT
  (SELECT coalesce(max(aggregate_version), 0) FROM events WHERE aggregate_id = $1) AS version,
  (SELECT hash FROM events ORDER BY position DESC LIMIT 1) AS last_hash,
  (SELECT array_agg(event_id::text) FROM events WHERE event_id = ANY($2::uuid[])) AS known_ids
"""

_INSERT = """
INSERT INTO events (event_id, aggregate_id, aggregate_version, aggregate_type, event_type,
    schema_version, site_id, occurred_at, recorded_at, actor, reason, correlation_id,
    causation_id, payload, prev_hash, hash)
SELECT * FROM unnest($1::uuid[], $2::text[], $3::bigint[], $4::text[], $5::text[], $6::int[],
    $7::text[], $8::timestamptz[], $9::timestamptz[], $10::text[], $11::text[], $12::text[],
    $13::text[], $14::bytea[], $15::bytea[], $16::bytea[])
RETURNING position
"""


def row_to_event(row: asyncpg.Record) -> StoredEvent:
    return StoredEvent(*row.values())


class PostgresEventStore:
    """EventStore backed by the `events` table of one service database at one site."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        site_id: str,
        *,
        service: str = "",
        clock: Clock = utc_now,
        lock_timeout_ms: int = 5000,
    ) -> None:
        self.pool = pool
        self.site_id = site_id
        self.service = service
        self._clock = clock
        self._lock_sql = _LOCK.format(timeout_ms=int(lock_timeout_ms))

    async def append(
        self, aggregate_id: str, expected_version: int, events: Sequence[NewEvent]
    ) -> AppendResult:
        validate_append(aggregate_id, expected_version, events)
        ids = [e.event_id for e in events]
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute(self._lock_sql)
            state = await conn.fetchrow(_STATE, aggregate_id, ids)
            if state["known_ids"]:
                return await self._replayed_append(conn, aggregate_id, ids, state["known_ids"])
            if state["version"] != expected_version:
                metrics.APPEND_CONFLICTS.labels(self.site_id, self.service).inc()
                raise ConcurrencyConflict(aggregate_id, expected_version, state["version"])
            prev = state["last_hash"] or GENESIS
            now = self._clock()
            sealed = []
            for offset, new in enumerate(events, start=1):
                event = seal(
                    new,
                    position=0,
                    aggregate_id=aggregate_id,
                    version=expected_version + offset,
                    site_id=self.site_id,
                    recorded_at=now,
                    prev_hash=prev,
                )
                sealed.append(event)
                prev = event.hash
            columns = list(zip(*(_insert_row(e) for e in sealed), strict=True))
            positions = [r["position"] for r in await conn.fetch(_INSERT, *columns)]
        metrics.EVENTS_APPENDED.labels(self.site_id, self.service).inc(len(sealed))
        stored = (replace(e, position=p) for e, p in zip(sealed, positions, strict=True))
        return AppendResult(tuple(stored))

    async def _replayed_append(
        self, conn: asyncpg.Connection, aggregate_id: str, ids: list[str], known: list[str]
    ) -> AppendResult:
        rows = await conn.fetch(
            f"SELECT {_COLUMNS} FROM events WHERE event_id = ANY($1::uuid[]) ORDER BY position",
            ids,
        )
        stored = tuple(row_to_event(r) for r in rows)
        if len(known) != len(ids) or any(e.aggregate_id != aggregate_id for e in stored):
            raise InvalidArgument(
                "events.event_id", "already used by a different append; event ids are never reused"
            )
        return AppendResult(stored, duplicate=True)

    async def load(self, aggregate_id: str, up_to_version: int | None = None) -> list[StoredEvent]:
        rows = await self.pool.fetch(
            f"SELECT {_COLUMNS} FROM events WHERE aggregate_id = $1"
            " AND ($2::bigint IS NULL OR aggregate_version <= $2) ORDER BY aggregate_version",
            aggregate_id,
            up_to_version,
        )
        return [row_to_event(r) for r in rows]

    async def read_all(self, from_position: int = 0, limit: int = 1000) -> list[StoredEvent]:
        rows = await self.pool.fetch(
            f"SELECT {_COLUMNS} FROM events WHERE position > $1 ORDER BY position LIMIT $2",
            from_position,
            limit,
        )
        return [row_to_event(r) for r in rows]

    async def head_position(self) -> int:
        return int(await self.pool.fetchval("SELECT coalesce(max(position), 0) FROM events"))

    async def count(self) -> int:
        return int(await self.pool.fetchval("SELECT count(*) FROM events"))

    async def verify_chain(self, from_position: int = 0) -> ChainReport:
        # From the start the first link must be genesis; from a later position the link into
        # the range is taken as given (the range's own links and hashes are still checked).
        prev = GENESIS if from_position == 0 else None
        checked, position = 0, from_position
        while batch := await self.read_all(position, 5000):
            report = verify_chain(batch, batch[0].prev_hash if prev is None else prev)
            if not report.intact:
                return replace(report, events_checked=checked + report.events_checked)
            checked += report.events_checked
            prev, position = batch[-1].hash, batch[-1].position
        return ChainReport(True, checked)


def _insert_row(e: StoredEvent) -> tuple[object, ...]:
    return (
        e.event_id,
        e.aggregate_id,
        e.aggregate_version,
        e.aggregate_type,
        e.event_type,
        e.schema_version,
        e.site_id,
        e.occurred_at,
        e.recorded_at,
        e.actor,
        e.reason,
        e.correlation_id,
        e.causation_id,
        e.payload,
        e.prev_hash,
        e.hash,
    )
