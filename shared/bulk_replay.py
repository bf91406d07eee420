"""Bulk replay: read models rebuilt into empty databases, rows folded in memory and COPYed in.

A projection opts in with a `fold` beside its live `apply` (BulkProjection): the same event
changes the same rows, but of an in-memory model of its tables (`Table`: rows by primary key,
the statement shapes its applies use — insert, upsert, update). A replay reads each topic once
and fans every verified record out to the read models that read it; per batch, the rows written
since the last one are COPYed in (binary COPY: new rows straight into the table, rows written
before through a temporary table and one UPDATE), with the bookkeeping the live runner keeps
(checkpoints, processed event ids, refused and parked records) in the same transaction, so a
live ProjectionRunner continues from the rebuilt state. Only into empty tables: the in-memory
model must hold every row.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import operator
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import asyncpg
from aiokafka import ConsumerRecord, TopicPartition

from shared import kafka_clients
from shared.events import StoredEvent
from shared.gc_pause import cyclic_gc_paused
from shared.parking import ParkingLot, Poison
from shared.projections import Projection
from shared.trust import TrustList
from shared.untrusted import Refused, count, judge, record_refusal

# Columns the database sets itself (transaction ids): never COPYed, reset on every update.
VOLATILE_COLUMNS = ("changed_xid",)
FETCH_RECORDS = 10_000  # records a poll takes
FLUSH_RECORDS = 20_000  # records folded between two writes (one transaction each)

Row = dict[str, Any]


class NotNullViolation(ValueError):
    """A fold left a NOT NULL column empty: the live apply's statement would fail the same way."""


class Table:
    """One read-model table rebuilt in memory: its rows by primary key, and which of them were
    written since the last flush (new ones, and earlier ones changed)."""

    __slots__ = ("changed", "columns", "defaults", "key", "name", "new", "required", "rows")

    def __init__(
        self, name: str, key: str, defaults: Mapping[str, Any], required: frozenset[str]
    ) -> None:
        self.name = name
        self.key = key
        self.columns = tuple(defaults)  # what is COPYed (not the volatile ones)
        self.defaults = dict(defaults)
        self.required = required  # NOT NULL columns
        self.rows: dict[Hashable, Row] = {}
        self.new: set[Hashable] = set()
        self.changed: set[Hashable] = set()

    def get(self, key: Hashable) -> Row | None:
        """The row (read only: write through insert, upsert, update)."""
        return self.rows.get(key)

    def insert(self, **values: Any) -> bool:
        """INSERT … ON CONFLICT DO NOTHING; True when the row is new."""
        key = values[self.key]
        if key in self.rows:
            return False
        row = {**self.defaults, **values}
        self._check(row)
        self.rows[key] = row
        self.new.add(key)
        return True

    def upsert(self, **values: Any) -> None:
        """INSERT … ON CONFLICT (key) DO UPDATE SET the other columns given."""
        if not self.insert(**values):
            self.update(values[self.key], **values)

    def update(self, key: Hashable, **values: Any) -> None:
        """UPDATE … SET the columns given WHERE key = key (no such row: nothing)."""
        row = self.rows.get(key)
        if row is None:
            return
        self._check(values)
        row.update(values)
        if key not in self.new:
            self.changed.add(key)

    def _check(self, values: Mapping[str, Any]) -> None:
        for column in self.required:
            if column in values and values[column] is None:
                raise NotNullViolation(f'null value in column "{column}" of relation "{self.name}"')

    def take(self) -> TableWrite:
        """The rows written since the last take, as COPY records."""
        columns, rows = self.columns, self.rows
        values = _row_values(columns)
        write = TableWrite(
            self.name, self.key, columns,
            [values(rows[k]) for k in self.new], [values(rows[k]) for k in self.changed],
        )  # fmt: skip
        self.new, self.changed = set(), set()
        return write


Tables = Mapping[str, Table]


def _row_values(columns: tuple[str, ...]) -> Callable[[Row], tuple[Any, ...]]:
    """A row's values in `columns` order, as a tuple (itemgetter: no generator per row)."""
    if len(columns) == 1:
        (only,) = columns
        return lambda row: (row[only],)
    return operator.itemgetter(*columns)


@runtime_checkable
class BulkProjection(Projection, Protocol):
    """A projection a replay can fold in memory: `fold` must leave the rows its `apply` would
    (held equal by tests/integration/test_batched_projections.py) in its `bulk_tables`, and
    raise — before changing anything — where apply's statements would fail."""

    @property
    def bulk_tables(self) -> Sequence[str]: ...

    def fold(self, tables: Tables, event: StoredEvent) -> None: ...


@dataclass(frozen=True, slots=True)
class TableWrite:
    table: str
    key: str
    columns: tuple[str, ...]
    new: list[tuple[Any, ...]]
    changed: list[tuple[Any, ...]]


_COLUMNS = """
SELECT a.attname AS name, a.attnotnull AS not_null, format_type(a.atttypid, a.atttypmod) AS type,
       pg_get_expr(d.adbin, d.adrelid) AS default_expr,
       coalesce(a.attnum = ANY(i.indkey), false) AS is_key
FROM pg_attribute a
LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
LEFT JOIN pg_index i ON i.indrelid = a.attrelid AND i.indisprimary
WHERE a.attrelid = $1::regclass AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY a.attnum
"""


async def load_tables(conn: asyncpg.Connection, names: Sequence[str]) -> dict[str, Table]:
    """Empty in-memory models of the tables, their columns and defaults read from the database."""
    tables: dict[str, Table] = {}
    for name in names:
        columns = [c for c in await conn.fetch(_COLUMNS, name) if c["name"] not in VOLATILE_COLUMNS]
        keys = [c["name"] for c in columns if c["is_key"]]
        if len(keys) != 1:
            raise ValueError(f"bulk replay needs a one-column primary key on {name}, not {keys}")
        exprs = [
            f"({c['default_expr']})::{c['type']}" if c["default_expr"] else "NULL" for c in columns
        ]
        defaults = await conn.fetchrow("SELECT " + ", ".join(exprs))
        tables[name] = Table(
            name, keys[0], {c["name"]: defaults[i] for i, c in enumerate(columns)},
            frozenset(c["name"] for c in columns if c["not_null"]),
        )  # fmt: skip
    return tables


async def write_tables(conn: asyncpg.Connection, writes: Sequence[TableWrite]) -> None:
    """COPY the new rows in; update the changed ones from a temporary table (one statement)."""
    for w in writes:
        if w.new:
            await conn.copy_records_to_table(w.table, records=w.new, columns=w.columns)
        if not w.changed:
            continue
        staged = f"bulk_{w.table}"
        await conn.execute(
            f'CREATE TEMP TABLE "{staged}" (LIKE "{w.table}" INCLUDING DEFAULTS) ON COMMIT DROP'
        )
        await conn.copy_records_to_table(staged, records=w.changed, columns=w.columns)
        sets = [f'"{c}" = s."{c}"' for c in w.columns if c != w.key]
        volatile = await conn.fetch(
            "SELECT attname FROM pg_attribute WHERE attrelid = $1::regclass AND attnum > 0"
            " AND NOT attisdropped AND attname = ANY($2::text[])",
            w.table, list(VOLATILE_COLUMNS),
        )  # fmt: skip
        sets += [f'"{r["attname"]}" = DEFAULT' for r in volatile]
        await conn.execute(
            f'UPDATE "{w.table}" t SET {", ".join(sets)} FROM "{staged}" s'
            f' WHERE t."{w.key}" = s."{w.key}"'
        )
        await conn.execute(f'DROP TABLE "{staged}"')


async def tables_empty(pool: asyncpg.Pool, projections: Sequence[BulkProjection]) -> bool:
    """Whether nothing of these read models exists yet: no row, no checkpoint."""
    async with pool.acquire() as conn:
        if await conn.fetchval(
            "SELECT count(*) FROM projection_checkpoints WHERE projection = ANY($1::text[])",
            [p.name for p in projections],
        ):
            return False
        for p in projections:
            for table in p.bulk_tables:
                if await conn.fetchval(f'SELECT EXISTS (SELECT 1 FROM "{table}")'):
                    return False
    return True


# ---- the replay ----------------------------------------------------------------------------


@dataclass
class _Flush:
    """What one read model wrote since the last flush."""

    tables: list[TableWrite]
    applied: list[str]
    offsets: dict[TopicPartition, int]
    refusals: list[tuple[ConsumerRecord, Refused]]
    poison: list[Poison]
    parked: list[tuple[ConsumerRecord, str]]


@dataclass
class _Target:
    """One read model being rebuilt."""

    projection: BulkProjection
    tables: dict[str, Table]
    goal: Mapping[TopicPartition, int]
    parking: ParkingLot
    parked_keys: set[str] = field(default_factory=set)
    applied: list[str] = field(default_factory=list)
    offsets: dict[TopicPartition, int] = field(default_factory=dict)
    refusals: list[tuple[ConsumerRecord, Refused]] = field(default_factory=list)
    poison: list[Poison] = field(default_factory=list)
    parked: list[tuple[ConsumerRecord, str]] = field(default_factory=list)

    def take(self) -> _Flush:
        flush = _Flush(
            [t.take() for t in self.tables.values()], self.applied, self.offsets,
            self.refusals, self.poison, self.parked,
        )  # fmt: skip
        self.applied, self.offsets, self.refusals, self.poison, self.parked = [], {}, [], [], []
        return flush


class BulkReplay:
    """Rebuild read models (empty) from offset 0 to their goals: one consumer for all their
    topics, each record verified once and folded into every read model that reads it."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        projections: Sequence[BulkProjection],
        goals: Mapping[str, Mapping[TopicPartition, int]],
        *,
        trust: TrustList,
        bootstrap: str,
        group_id: str,
    ) -> None:
        self.pool = pool
        self.projections = projections
        self.goals = goals
        self.trust = trust
        self.bootstrap = bootstrap
        self.group_id = group_id  # named in the refusals kept (nothing is committed to Kafka)
        self._targets: list[_Target] = []
        self._seen: set[str] = set()  # event ids applied: a later copy is a redelivery

    async def run(self) -> None:
        """Replay to the goals; returns once everything is written."""
        async with self.pool.acquire() as conn:
            for p in self.projections:
                tables = await load_tables(conn, p.bulk_tables)
                parking = ParkingLot(self.pool, p.name, self.group_id, self.trust)
                self._targets.append(_Target(p, tables, self.goals[p.name], parking))
        ends: dict[TopicPartition, int] = {}
        for t in self._targets:
            for tp, end in t.goal.items():
                ends[tp] = max(ends.get(tp, 0), end)
        remaining = {tp: end for tp, end in ends.items() if end > 0}
        if not remaining:
            return
        consumer = kafka_clients.consumer(
            bootstrap=self.bootstrap, enable_auto_commit=False, auto_offset_reset="earliest",
            max_poll_records=FETCH_RECORDS,
        )  # fmt: skip
        await consumer.start()
        writing: asyncio.Task[None] | None = None
        try:
            consumer.assign(list(remaining))
            await consumer.seek_to_beginning(*remaining)
            folded = 0
            while remaining:
                batch = await consumer.getmany(
                    *remaining, timeout_ms=500, max_records=FETCH_RECORDS
                )
                for tp, records in batch.items():
                    stop = remaining.get(tp)
                    if stop is None:
                        continue
                    records = [r for r in records if r.offset < stop]
                    self._fold(tp, records)
                    folded += len(records)
                    if (records and records[-1].offset + 1 >= stop) or (
                        await consumer.position(tp) >= stop
                    ):
                        del remaining[tp]
                if folded >= FLUSH_RECORDS or not remaining:
                    flushes = [t.take() for t in self._targets]
                    folded = 0
                    if writing is not None:
                        await writing
                    # Written while the next records are folded (the rows were copied out).
                    writing = asyncio.create_task(self._write(flushes))
            if writing is not None:
                await writing
                writing = None
        finally:
            if writing is not None:
                writing.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await writing
            await consumer.stop()

    def _fold(self, tp: TopicPartition, records: list[ConsumerRecord]) -> None:
        if not records:
            return
        with cyclic_gc_paused():  # synchronous: the rows it builds are kept (shared.gc_pause)
            self._fold_records(tp, records)

    def _fold_records(self, tp: TopicPartition, records: list[ConsumerRecord]) -> None:
        targets = [t for t in self._targets if tp in t.goal]
        verdicts = judge(self.trust, records)
        seen = self._seen
        for record in records:
            offset = record.offset
            within = [t for t in targets if offset < t.goal[tp]]
            for t in within:
                t.offsets[tp] = offset
            refused = verdicts.refused.get(offset)
            if refused is not None:  # never applied, never parks (as the live runner)
                for t in within:
                    t.refusals.append((record, refused))
                continue
            event = verdicts.trusted[offset]
            if event.event_id in seen:  # a redelivered copy
                continue
            seen.add(event.event_id)
            key = event.aggregate_id  # the record's key (judge refused any other)
            for t in within:
                if key in t.parked_keys:
                    t.parked.append((record, key))
                    continue
                try:
                    t.projection.fold(t.tables, event)
                except Exception as exc:
                    t.poison.append(Poison(record, key, f"{type(exc).__name__}: {exc}"))
                    t.parked_keys.add(key)
                    continue
                t.applied.append(event.event_id)

    async def _write(self, flushes: list[_Flush]) -> None:
        async with self.pool.acquire() as conn, conn.transaction():
            for target, flush in zip(self._targets, flushes, strict=True):
                name = target.projection.name
                await write_tables(conn, flush.tables)
                for record, refused in flush.refusals:
                    await record_refusal(
                        conn, None, record, refused, consumer=name, group_id=self.group_id
                    )
                for poison in flush.poison:
                    await target.parking.deadletter(conn, None, poison)
                for record, key in flush.parked:
                    await target.parking.park(conn, record, key)
                if flush.applied:
                    await conn.copy_records_to_table(
                        "processed_events",
                        records=zip(itertools.repeat(name), flush.applied),
                        columns=["projection", "event_id"],
                    )
                await conn.executemany(
                    'INSERT INTO projection_checkpoints (projection, topic, partition, "offset")'
                    " VALUES ($1, $2, $3, $4) ON CONFLICT (projection, topic, partition)"
                    ' DO UPDATE SET "offset" = excluded."offset"',
                    [(name, tp.topic, tp.partition, o) for tp, o in flush.offsets.items()],
                )
        for target, flush in zip(self._targets, flushes, strict=True):
            for _, refused in flush.refusals:
                count(target.projection.name, refused)
