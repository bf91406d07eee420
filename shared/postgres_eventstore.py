"""EventStore on PostgreSQL: optimistic concurrency, commit-ordered positions, hash chain."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from dataclasses import dataclass, fields, replace

import asyncpg

from shared import metrics
from shared.bounds import MAX_ENVELOPE_BYTES
from shared.chain_key import ChainKey, MissingChainKey
from shared.errors import ConcurrencyConflict, StoreBusy
from shared.events import NewEvent, StoredEvent
from shared.eventstore import (
    AggregateAppend,
    AppendResult,
    AppendState,
    Clock,
    decide_appends,
    utc_now,
    validate_appends,
)
from shared.hashchain import GENESIS, ChainReport, verify_chain
from shared.tracing import current_traceparent

EVENTS_CHANNEL = "cellbank_events"  # a wake-up hint for tailers; never a source of order

# Selected in StoredEvent's field order, so a row maps onto it positionally.
_COLUMNS = ", ".join(
    "event_id::text" if f.name == "event_id" else f.name for f in fields(StoredEvent)
)

# EXCLUSIVE mode blocks other appenders (ROW EXCLUSIVE) but not readers (ACCESS SHARE), so
# positions are taken and committed one transaction at a time: a tailer never sees N+1 before N.
# plan_cache_mode: asyncpg's cached statements would otherwise switch to a generic plan that,
# on a young (never analysed) table, scans every event for the event_id = ANY(...) check.
_LOCK = (
    "SET LOCAL lock_timeout = '{timeout_ms}ms';"
    " SET LOCAL plan_cache_mode = force_custom_plan;"
    " LOCK TABLE events IN EXCLUSIVE MODE;"
    f" NOTIFY {EVENTS_CHANNEL}"
)

# The state a group of appends is decided against, in one round trip.
_STATE = """
SELECT
  (SELECT hash FROM events ORDER BY position DESC LIMIT 1) AS last_hash,
  (SELECT json_object_agg(aggregate_id, v) FROM (
      SELECT aggregate_id, max(aggregate_version) AS v FROM events
      WHERE aggregate_id = ANY($1::text[]) GROUP BY aggregate_id) heads) AS versions,
  (SELECT array_agg(event_id::text) FROM events WHERE event_id = ANY($2::uuid[])) AS known_ids
"""

_INSERT = """
INSERT INTO events (event_id, aggregate_id, aggregate_version, aggregate_type, event_type,
    schema_version, site_id, occurred_at, recorded_at, actor, reason, correlation_id,
    causation_id, payload, prev_hash, hash, traceparent)
SELECT * FROM unnest($1::uuid[], $2::text[], $3::bigint[], $4::text[], $5::text[], $6::int[],
    $7::text[], $8::timestamptz[], $9::timestamptz[], $10::text[], $11::text[], $12::text[],
    $13::text[], $14::bytea[], $15::bytea[], $16::bytea[], $17::text[])
RETURNING event_id::text, position
"""


EVENT_COLUMNS = _COLUMNS  # for read models that query their own store's events


def row_to_event(row: asyncpg.Record) -> StoredEvent:
    return StoredEvent(*row.values())


class PostgresEventStore:
    """EventStore backed by the `events` table of one service database at one site. Appending
    and verifying need the store's chain key (MissingChainKey otherwise); reading does not."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        site_id: str,
        *,
        chain_key: ChainKey | None = None,
        service: str = "",
        clock: Clock = utc_now,
        lock_timeout_ms: int = 5000,
        max_envelope_bytes: int = MAX_ENVELOPE_BYTES,
    ) -> None:
        self.pool = pool
        self.max_envelope_bytes = max_envelope_bytes
        self.site_id = site_id
        self.service = service
        self.chain_key = chain_key
        self._clock = clock
        self._lock_timeout_ms = int(lock_timeout_ms)
        self._lock_sql = _LOCK.format(timeout_ms=self._lock_timeout_ms)
        self._queue: list[_Request] = []
        self._committer = asyncio.Lock()

    async def append(
        self, aggregate_id: str, expected_version: int, events: Sequence[NewEvent]
    ) -> AppendResult:
        (result,) = await self.append_all([AggregateAppend(aggregate_id, expected_version, events)])
        return result

    async def append_all(self, appends: Sequence[AggregateAppend]) -> tuple[AppendResult, ...]:
        key = self._key()
        validate_appends(appends, site_id=self.site_id, max_envelope_bytes=self.max_envelope_bytes)
        # The caller's span (a gRPC call, a consumer's record) is current here, not in the
        # group's transaction, which may run in another caller's task.
        request = _Request(tuple(appends), key, _future(), current_traceparent())
        self._queue.append(request)
        # Group commit: appends that arrive while a transaction runs are written together in
        # the next one, decided in arrival order exactly as if they ran one by one. The table
        # lock serialises transactions; this lets one commit (one WAL flush) carry many appends.
        async with self._committer:
            if not request.result.done():
                group, self._queue = self._queue, []
                # Shielded: a cancelled caller must not leave the others' outcomes unknown.
                await asyncio.shield(self._commit_group(group))
        return request.result.result()

    async def _commit_group(self, group: list[_Request]) -> None:
        try:
            outcomes = await self._write_group(group)
        except asyncpg.LockNotAvailableError:
            busy = StoreBusy(f"event store lock not acquired within {self._lock_timeout_ms} ms")
            outcomes = [busy for _ in group]
        except Exception as exc:
            # Isolate the failure: one request must not sink the others written with it.
            outcomes = [exc] if len(group) == 1 else [await self._write_alone(r) for r in group]
        for request, outcome in zip(group, outcomes, strict=True):
            if isinstance(outcome, BaseException):
                request.result.set_exception(outcome)
            else:
                request.result.set_result(outcome)

    async def _write_alone(self, request: _Request) -> tuple[AppendResult, ...] | Exception:
        try:
            return (await self._write_group([request]))[0]
        except Exception as exc:
            return exc

    async def _write_group(
        self, group: list[_Request]
    ) -> list[tuple[AppendResult, ...] | Exception]:
        aggregates = list({p.aggregate_id for r in group for p in r.parts})
        ids = [e.event_id for r in group for p in r.parts for e in p.events]
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute(self._lock_sql)
            row = await conn.fetchrow(_STATE, aggregates, ids)
            state = AppendState(
                versions=json.loads(row["versions"] or "{}"),
                stored=await self._stored_by_id(conn, row["known_ids"] or []),
                prev_hash=row["last_hash"] or GENESIS,
                recorded_at=self._clock(),
            )
            decided = [
                decide_appends(
                    r.parts, state, key=r.key, site_id=self.site_id, traceparent=r.traceparent
                )
                for r in group
            ]
            if state.new:
                columns = list(zip(*(_insert_row(e) for e in state.new.values()), strict=True))
                for r in await conn.fetch(_INSERT, *columns):
                    event = state.new[r["event_id"]]
                    state.stored[event.event_id] = replace(event, position=r["position"])
        metrics.EVENTS_APPENDED.labels(self.site_id, self.service).inc(len(state.new))
        conflicts = sum(isinstance(d, ConcurrencyConflict) for d in decided)
        if conflicts:
            metrics.APPEND_CONFLICTS.labels(self.site_id, self.service).inc(conflicts)
        return [
            d
            if isinstance(d, Exception)
            else tuple(AppendResult(tuple(state.stored[i] for i in ids), dup) for ids, dup in d)
            for d in decided
        ]

    async def _stored_by_id(
        self, conn: asyncpg.Connection, ids: list[str]
    ) -> dict[str, StoredEvent]:
        if not ids:
            return {}
        rows = await conn.fetch(
            f"SELECT {_COLUMNS} FROM events WHERE event_id = ANY($1::uuid[])", ids
        )
        return {e.event_id: e for e in map(row_to_event, rows)}

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

    def _key(self) -> ChainKey:
        if self.chain_key is None:
            raise MissingChainKey()
        return self.chain_key

    async def head(self) -> tuple[int, bytes]:
        """(position, hash) of the newest event: (0, genesis) when the store is empty."""
        row = await self.pool.fetchrow(
            "SELECT position, hash FROM events ORDER BY position DESC LIMIT 1"
        )
        return (0, GENESIS) if row is None else (int(row["position"]), bytes(row["hash"]))

    async def hashes_at(self, positions: Sequence[int]) -> dict[int, bytes]:
        """The stored hash at each of the positions that exist (absent ones are left out)."""
        rows = await self.pool.fetch(
            "SELECT position, hash FROM events WHERE position = ANY($1::bigint[])", list(positions)
        )
        return {int(r["position"]): bytes(r["hash"]) for r in rows}

    async def verify_chain(
        self, from_position: int = 0, expected_prev: bytes | None = None
    ) -> ChainReport:
        key = self._key()
        # From the start the first link must be genesis; from a later position the link into
        # the range is taken as given unless expected (the range's own links and hashes are
        # still checked).
        prev = GENESIS if from_position == 0 else expected_prev
        checked, position = 0, from_position
        while batch := await self.read_all(position, 5000):
            report = verify_chain(batch, key, batch[0].prev_hash if prev is None else prev)
            if not report.intact:
                return replace(report, events_checked=checked + report.events_checked)
            checked += report.events_checked
            prev, position = batch[-1].hash, batch[-1].position
        return ChainReport(True, checked)


@dataclass(slots=True)
class _Request:
    parts: tuple[AggregateAppend, ...]
    key: ChainKey
    result: asyncio.Future[tuple[AppendResult, ...]]
    traceparent: str


def _future() -> asyncio.Future[tuple[AppendResult, ...]]:
    return asyncio.get_running_loop().create_future()


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
        e.traceparent,
    )
