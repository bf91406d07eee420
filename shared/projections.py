"""Projection runner: Kafka records → read-model rows, checkpoint in the same transaction."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import asyncpg
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, ConsumerRecord
from aiokafka.structs import TopicPartition

from shared import metrics
from shared.envelope_codec import decode
from shared.events import StoredEvent
from shared.kafka_admin import end_offsets
from shared.kafka_clients import reliable_producer
from shared.topics import DEADLETTER

log = logging.getLogger(__name__)


class Projection(Protocol):
    """A read model: apply one event inside the runner's transaction (no commit of its own)."""

    @property
    def name(self) -> str: ...

    @property
    def topics(self) -> Sequence[str]: ...

    async def apply(self, conn: asyncpg.Connection, event: StoredEvent) -> None: ...


@runtime_checkable
class BatchProjection(Projection, Protocol):
    """A projection that can also apply many events at once (e.g. one executemany).

    Must be equivalent to calling apply for each event in order; the runner uses it on the
    fast path and falls back to apply, one savepoint per record, when a batch fails.
    """

    async def apply_batch(
        self, conn: asyncpg.Connection, events: Sequence[StoredEvent]
    ) -> None: ...


@dataclass(frozen=True, slots=True)
class _Poison:
    record: ConsumerRecord
    aggregate_id: str
    error: str


class _RetryCarefully(Exception):
    """The fast path hit a failing record: redo the batch with a savepoint per record."""


class ProjectionRunner:
    """Consumes the projection's topics in group `<site>.<service>.<projection>`.

    Guarantees: rows and checkpoint commit together; redelivered events (same event_id) are
    skipped; a record that cannot be decoded or applied goes to the dead-letter topic and its
    aggregate is parked (later records of it wait in parked_records) while others flow on.
    """

    def __init__(
        self,
        pool: asyncpg.Pool,
        projection: Projection,
        *,
        bootstrap: str,
        group_id: str,
        max_records: int = 2000,
    ) -> None:
        self.pool = pool
        self.projection = projection
        self.bootstrap = bootstrap
        self.group_id = group_id
        self.max_records = max_records
        self.name = projection.name
        self._parked: set[str] = set()
        self._lock = asyncio.Lock()
        self._consumer: AIOKafkaConsumer | None = None
        self._dlq = reliable_producer(bootstrap)

    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Consume until stop is set or the task is cancelled."""
        stop = stop or asyncio.Event()
        await self._load_parked()
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap,
            group_id=self.group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_records=self.max_records,
        )
        consumer.subscribe(list(self.projection.topics), listener=_SeekToCheckpoint(self))
        self._consumer = consumer
        await self._dlq.start()
        await consumer.start()
        try:
            while not stop.is_set():
                batches = await consumer.getmany(timeout_ms=200, max_records=self.max_records)
                for tp, records in batches.items():
                    if records:
                        async with self._lock:
                            await self._process(tp, records)
                        with contextlib.suppress(Exception):
                            # Kafka's copy is informational (lag tools); the database rules.
                            await consumer.commit({tp: records[-1].offset + 1})
        finally:
            self._consumer = None
            await consumer.stop()
            await self._dlq.stop()

    async def checkpoints(self) -> dict[TopicPartition, int]:
        rows = await self.pool.fetch(
            'SELECT topic, partition, "offset" FROM projection_checkpoints WHERE projection = $1',
            self.name,
        )
        return {TopicPartition(r["topic"], r["partition"]): r["offset"] for r in rows}

    async def _load_parked(self) -> None:
        rows = await self.pool.fetch(
            "SELECT DISTINCT aggregate_id FROM parked_records WHERE projection = $1", self.name
        )
        self._parked = {r["aggregate_id"] for r in rows}

    async def _process(self, tp: TopicPartition, records: list[ConsumerRecord]) -> None:
        decoded, poison = _decode_all(records)
        # Fast path: one transaction, no savepoints. A failing apply rolls it back and the
        # batch is redone with a savepoint per record, so only the poison record is refused.
        try:
            await self._process_batch(tp, records, decoded, poison, careful=bool(poison))
        except _RetryCarefully:
            await self._process_batch(tp, records, decoded, poison, careful=True)

    async def _process_batch(
        self,
        tp: TopicPartition,
        records: list[ConsumerRecord],
        decoded: dict[int, StoredEvent],
        poison: dict[int, _Poison],
        *,
        careful: bool,
    ) -> None:
        parked_now: set[str] = set()
        async with self.pool.acquire() as conn, conn.transaction():
            ids = [e.event_id for e in decoded.values()]
            seen = {
                r["event_id"]
                for r in await conn.fetch(
                    "SELECT event_id FROM processed_events"
                    " WHERE projection = $1 AND event_id = ANY($2::text[])",
                    self.name,
                    ids,
                )
            }
            applied: list[str] = []
            batch: list[StoredEvent] = []  # fast path: applied together after the loop
            duplicates = 0
            for record in records:
                key = _key(record)
                bad = poison.get(record.offset)
                if key in self._parked or key in parked_now:
                    await self._park(conn, record, key, is_poison=False, error="")
                    continue
                if bad is not None:
                    await self._deadletter(conn, bad)
                    parked_now.add(key)
                    continue
                event = decoded[record.offset]
                if event.event_id in seen:
                    duplicates += 1
                    continue
                if not careful:
                    seen.add(event.event_id)
                    batch.append(event)
                    continue
                try:
                    async with conn.transaction():
                        await self.projection.apply(conn, event)
                except Exception as exc:
                    await self._deadletter(
                        conn, _Poison(record, key, f"{type(exc).__name__}: {exc}")
                    )
                    parked_now.add(key)
                    continue
                seen.add(event.event_id)
                applied.append(event.event_id)
            if batch:
                try:
                    await self._apply_fast(conn, batch)
                except Exception as exc:
                    raise _RetryCarefully from exc
                applied.extend(e.event_id for e in batch)
            await conn.execute(
                "INSERT INTO processed_events (projection, event_id)"
                " SELECT $1, unnest($2::text[]) ON CONFLICT DO NOTHING",
                self.name,
                applied,
            )
            await conn.execute(
                'INSERT INTO projection_checkpoints (projection, topic, partition, "offset")'
                " VALUES ($1, $2, $3, $4) ON CONFLICT (projection, topic, partition)"
                ' DO UPDATE SET "offset" = excluded."offset"',
                self.name,
                tp.topic,
                tp.partition,
                records[-1].offset,
            )
        self._parked |= parked_now
        metrics.PROJECTION_APPLIED.labels(self.name).inc(len(applied))
        metrics.PROJECTION_DUPLICATES.labels(self.name).inc(duplicates)

    async def _apply_fast(self, conn: asyncpg.Connection, events: list[StoredEvent]) -> None:
        if isinstance(self.projection, BatchProjection):
            await self.projection.apply_batch(conn, events)
            return
        for event in events:
            await self.projection.apply(conn, event)

    async def _park(
        self,
        conn: asyncpg.Connection,
        record: ConsumerRecord,
        key: str,
        *,
        is_poison: bool,
        error: str,
    ) -> None:
        await conn.execute(
            "INSERT INTO parked_records"
            ' (projection, aggregate_id, topic, partition, "offset", value, is_poison, error)'
            " VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT DO NOTHING",
            self.name,
            key,
            record.topic,
            record.partition,
            record.offset,
            record.value or b"",
            is_poison,
            error,
        )
        metrics.PROJECTION_PARKED.labels(self.name).inc()

    async def _deadletter(self, conn: asyncpg.Connection, bad: _Poison) -> None:
        # Sent before the transaction commits: a crash can duplicate a dead letter, never lose one.
        record = bad.record
        await self._park(conn, record, bad.aggregate_id, is_poison=True, error=bad.error)
        await self._dlq.send_and_wait(
            DEADLETTER,
            value=record.value,
            key=record.key,
            headers=[
                ("error", bad.error.encode()),
                ("projection", self.name.encode()),
                ("consumer_group", self.group_id.encode()),
                ("original_topic", record.topic.encode()),
                ("original_partition", str(record.partition).encode()),
                ("original_offset", str(record.offset).encode()),
            ],
        )
        metrics.DEADLETTERED.labels(self.name).inc()
        log.error(
            "poison record dead-lettered; aggregate parked",
            extra={
                "projection": self.name,
                "aggregate_id": bad.aggregate_id,
                "topic": record.topic,
                "partition": record.partition,
                "offset": record.offset,
                "error": bad.error,
            },
        )

    def parked_aggregates(self) -> frozenset[str]:
        return frozenset(self._parked)

    async def resolve(self, aggregate_id: str, *, skip_poison: bool = False) -> bool:
        """Re-apply an aggregate's parked records in order once the cause is fixed.

        skip_poison drops the poison record itself (it stays in the dead-letter topic) and
        applies the rest. Returns True when the aggregate flows again, False if it failed again
        (then it stays parked, nothing applied).
        """
        async with self._lock, self.pool.acquire() as conn:
            rows = await conn.fetch(
                "SELECT seq, value, is_poison FROM parked_records"
                " WHERE projection = $1 AND aggregate_id = $2 ORDER BY seq",
                self.name,
                aggregate_id,
            )
            try:
                async with conn.transaction():
                    applied = []
                    for row in rows:
                        if row["is_poison"] and skip_poison:
                            continue
                        event = decode(row["value"])
                        done = await conn.fetchval(
                            "SELECT 1 FROM processed_events WHERE projection = $1 AND event_id = $2",
                            self.name,
                            event.event_id,
                        )
                        if not done:
                            await self.projection.apply(conn, event)
                            applied.append(event.event_id)
                    await conn.execute(
                        "INSERT INTO processed_events (projection, event_id)"
                        " SELECT $1, unnest($2::text[]) ON CONFLICT DO NOTHING",
                        self.name,
                        applied,
                    )
                    await conn.execute(
                        "DELETE FROM parked_records WHERE projection = $1 AND aggregate_id = $2",
                        self.name,
                        aggregate_id,
                    )
            except Exception as exc:
                log.error(
                    "parked aggregate failed again; still parked",
                    extra={
                        "projection": self.name,
                        "aggregate_id": aggregate_id,
                        "error": repr(exc),
                    },
                )
                return False
            self._parked.discard(aggregate_id)
            log.info(
                "parked aggregate resolved",
                extra={
                    "projection": self.name,
                    "aggregate_id": aggregate_id,
                    "skipped_poison": skip_poison,
                },
            )
            return True


class _SeekToCheckpoint(ConsumerRebalanceListener):
    """On assignment, resume each partition right after the offset stored in the database."""

    def __init__(self, runner: ProjectionRunner) -> None:
        self.runner = runner

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        return None

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        consumer = self.runner._consumer
        if consumer is None:
            return
        stored = await self.runner.checkpoints()
        for tp in assigned:
            if tp in stored:
                consumer.seek(tp, stored[tp] + 1)
            else:
                await consumer.seek_to_beginning(tp)


def _key(record: ConsumerRecord) -> str:
    return (record.key or b"").decode("utf-8", errors="replace")


def _decode_all(
    records: list[ConsumerRecord],
) -> tuple[dict[int, StoredEvent], dict[int, _Poison]]:
    decoded: dict[int, StoredEvent] = {}
    poison: dict[int, _Poison] = {}
    for record in records:
        try:
            event = decode(record.value or b"")
            if event.aggregate_id != _key(record):
                raise ValueError(
                    f"key {_key(record)!r} differs from aggregate_id {event.aggregate_id!r}"
                )
            decoded[record.offset] = event
        except ValueError as exc:
            poison[record.offset] = _Poison(record, _key(record), f"undecodable: {exc}")
    return decoded, poison


async def wait_caught_up(
    pool: asyncpg.Pool,
    projection: str,
    *,
    bootstrap: str,
    topics: Sequence[str],
    timeout: float = 30.0,
    targets: dict[TopicPartition, int] | None = None,
) -> None:
    """Wait until the projection's checkpoints reach the topics' current ends (or targets).

    targets maps partitions to the next offset to reach (as end_offsets returns); without it,
    the ends at the time of the call. TimeoutError names the partitions still behind.
    """
    goal = targets if targets is not None else await end_offsets(bootstrap, topics)
    deadline = time.monotonic() + timeout
    while True:
        rows = await pool.fetch(
            'SELECT topic, partition, "offset" FROM projection_checkpoints WHERE projection = $1',
            projection,
        )
        done = {TopicPartition(r["topic"], r["partition"]): r["offset"] + 1 for r in rows}
        behind = {tp: (done.get(tp, 0), end) for tp, end in goal.items() if done.get(tp, 0) < end}
        if not behind:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"projection {projection} still behind after {timeout}s: {behind}")
        await asyncio.sleep(0.05)
