"""Projection runner: Kafka records → read-model rows, checkpoint in the same transaction."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import asyncpg
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, ConsumerRecord
from aiokafka.structs import TopicPartition

from shared import kafka_clients, metrics, tracing
from shared.batched_apply import apply_in_waves
from shared.db import TRANSIENT_DB_ERRORS
from shared.events import StoredEvent
from shared.kafka_admin import end_offsets
from shared.kafka_clients import reliable_producer
from shared.parking import ParkingLot, Poison
from shared.trust import TrustList
from shared.untrusted import Refused, Verdicts, count, judge, record_refusal

log = logging.getLogger(__name__)

KAFKA_COMMIT_INTERVAL_S = 1.0
# Below this many records a partition's batch is verified on the event loop; above, in a worker
# thread, while the event loop writes the poll before (the verification is mostly Python: a
# second thread would not run beside it, only race it to verify the same batch signatures).
VERIFY_IN_THREADS_FROM = 64


class Projection(Protocol):
    """A read model: apply one event inside the runner's transaction (no commit of its own).

    A projection whose statements for an event touch only its aggregate's rows (or commute with
    other aggregates') may say `rows_keyed_by_aggregate = True`: the runner then applies a batch
    in waves of executemany (shared.batched_apply) instead of a round trip per statement.
    """

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
class _Judged:
    """A poll's records (per partition, assigned when fetched) and the verdicts on them."""

    polled: dict[TopicPartition, list[ConsumerRecord]]
    verdicts: dict[TopicPartition, Verdicts]


class _RetryCarefully(Exception):
    """The fast path hit a failing record: redo the batch with a savepoint per record."""


class ProjectionRunner:
    """Consumes the projection's topics in group `<site>.<service>.<projection>`.

    Guarantees: rows and checkpoint commit together; redelivered events (same event_id) are
    skipped; every record is verified against the trust list first: one it does not vouch for
    (or that is no envelope at all) is dead-lettered, counted and kept in untrusted_records,
    and changes nothing — its aggregate is NOT parked (a forger could otherwise hold back any
    genuine aggregate). A verified record that cannot be applied goes to the dead-letter topic
    and its aggregate is parked (later records of it wait in parked_records) while others
    flow on.
    A failure of the database itself is not poison: the batch is retried after a pause.

    A poll (every partition in it) is one transaction of few round trips: one statement locks,
    reads and moves the checkpoints and claims the new events' ids (the dedupe), then the
    projection's writes (one executemany, or waves of them), then the commit.
    """

    def __init__(
        self,
        pool: asyncpg.Pool,
        projection: Projection,
        *,
        trust: TrustList,
        bootstrap: str,
        group_id: str,
        max_records: int = 2000,
        dead_letter_untrusted: bool = True,
    ) -> None:
        # dead_letter_untrusted=False (a replay): nothing is published — refused and poison
        # records are recorded in the rebuilt database only (the live site dead-lettered them),
        # so a replay can run as a read-only Kafka principal (the operator).
        self.pool = pool
        self.trust = trust
        self.dead_letter_untrusted = dead_letter_untrusted  # a replay only records them
        self.projection = projection
        self.bootstrap = bootstrap
        self.group_id = group_id
        self.max_records = max_records
        self.name = projection.name
        self.parking = ParkingLot(pool, projection.name, group_id, trust)
        self._lock = asyncio.Lock()
        self._consumer: AIOKafkaConsumer | None = None
        self._dlq: AIOKafkaProducer | None = None
        self._uncommitted: dict[TopicPartition, int] = {}
        self._committed_at = 0.0
        self._must_seek = False  # positions untrusted until sought back to the checkpoints

    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Consume until stop is set or the task is cancelled."""
        stop = stop or asyncio.Event()
        await self.parking.load()
        async with contextlib.AsyncExitStack() as stack:
            if self.dead_letter_untrusted:
                self._dlq = reliable_producer(self.bootstrap)
                await self._dlq.start()
                stack.push_async_callback(self._dlq.stop)
            consumer = kafka_clients.consumer(
                bootstrap=self.bootstrap,
                group_id=self.group_id,
                enable_auto_commit=False,
                auto_offset_reset="earliest",
                max_poll_records=self.max_records,
            )
            consumer.subscribe(list(self.projection.topics), listener=_SeekToCheckpoint(self))
            self._consumer = consumer
            await consumer.start()
            stack.push_async_callback(consumer.stop)
            backoff = 0.2
            ready: _Judged | None = None  # a poll judged while the one before was written
            while not stop.is_set():
                if self._must_seek:
                    ready = None  # fetched before the positions were reset: fetched again
                    # The positions are not to be trusted (a batch failed, or an assignment
                    # came while the database was down): nothing is fetched until the consumer
                    # is back at the stored checkpoints — a record is never skipped.
                    try:
                        await self._seek_to_checkpoints(consumer, consumer.assignment())
                    except TRANSIENT_DB_ERRORS:
                        with contextlib.suppress(TimeoutError):
                            await asyncio.wait_for(stop.wait(), backoff)
                        backoff = min(backoff * 2, 5.0)
                        continue
                    self._must_seek = False
                    consumer.resume(*consumer.assignment())
                # A pipeline of two: the next poll is judged (worker threads) while the judged
                # one is written. With one waiting, only records already fetched are taken, so
                # it is written without delay.
                batches = await consumer.getmany(
                    timeout_ms=0 if ready else 200, max_records=self.max_records
                )
                judging = asyncio.ensure_future(self._judge_poll(consumer, batches))
                try:
                    if ready is not None:
                        await self._write(consumer, ready)
                    backoff = 0.2
                except TRANSIENT_DB_ERRORS as exc:
                    log.warning(
                        "database unavailable; retrying from the stored checkpoints",
                        extra={"projection": self.name, "error": repr(exc), "backoff_s": backoff},
                    )
                    self.hold_until_seek(consumer)
                    await judging  # its records are fetched again after the seek
                    ready = None
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), backoff)
                    backoff = min(backoff * 2, 5.0)
                    continue
                except BaseException:
                    judging.cancel()
                    raise
                await self._commit_to_kafka(consumer)
                ready = await judging
        self._consumer = None

    async def _judge_poll(
        self, consumer: AIOKafkaConsumer, batches: dict[TopicPartition, list[ConsumerRecord]]
    ) -> _Judged | None:
        polled = {tp: rs for tp, rs in batches.items() if rs and tp in consumer.assignment()}
        if not polled:
            return None
        # One partition after another: the envelopes of one signed batch are spread over the
        # partitions, and judged at once they raced to verify its signature (the trust list
        # remembers it only once verified).
        return _Judged(polled, {tp: await self._judge(records) for tp, records in polled.items()})

    async def _write(self, consumer: AIOKafkaConsumer, judged: _Judged) -> None:
        async with self._lock:
            # Revoked meanwhile: its new owner resumes from the checkpoint.
            polled = {tp: rs for tp, rs in judged.polled.items() if tp in consumer.assignment()}
            if polled:
                await self._process(polled, judged.verdicts)
        for tp, records in polled.items():
            self._uncommitted[tp] = records[-1].offset + 1
            highwater = consumer.highwater(tp)
            if highwater is not None:
                metrics.PROJECTION_LAG.labels(
                    self.projection.name, tp.topic, str(tp.partition)
                ).set(max(0, highwater - records[-1].offset - 1))

    async def _commit_to_kafka(self, consumer: AIOKafkaConsumer) -> None:
        if self._uncommitted and time.monotonic() - self._committed_at > KAFKA_COMMIT_INTERVAL_S:
            # Kafka's copy is informational (lag tools), so at most once a second; the
            # database checkpoint is the one the runner resumes from.
            offsets = {tp: o for tp, o in self._uncommitted.items() if tp in consumer.assignment()}
            self._uncommitted, self._committed_at = {}, time.monotonic()
            with contextlib.suppress(Exception):
                await consumer.commit(offsets)

    def hold_until_seek(self, consumer: AIOKafkaConsumer) -> None:
        """Stop fetching until the consumer is repositioned at the database checkpoints."""
        self._must_seek = True
        consumer.pause(*consumer.assignment())

    async def _seek_to_checkpoints(
        self, consumer: AIOKafkaConsumer, partitions: Sequence[TopicPartition] | set[TopicPartition]
    ) -> None:
        positions = await next_offsets(self.pool, self.name)
        for tp in partitions:
            if tp in positions:
                consumer.seek(tp, positions[tp])
            else:
                await consumer.seek_to_beginning(tp)

    def parked_aggregates(self) -> frozenset[str]:
        return frozenset(self.parking.aggregates)

    async def resolve(self, aggregate_id: str, *, skip_poison: bool = False) -> bool:
        """Re-apply an aggregate's parked records in order once the cause is fixed.

        skip_poison drops the poison record(s) (they stay in the dead-letter topic) and applies
        the rest. All or nothing: True when the aggregate flows again, False if a record failed
        again (then it stays parked and nothing was applied).
        """
        async with self._lock:
            return await self.parking.resolve(
                self.projection, aggregate_id, skip_poison=skip_poison
            )

    async def _process(
        self,
        polled: dict[TopicPartition, list[ConsumerRecord]],
        verdicts: dict[TopicPartition, Verdicts],
    ) -> None:
        # Fast path: one transaction, no savepoints. A failing apply rolls it back and the
        # batch is redone with a savepoint per record, so only the poison record is refused.
        if not tracing.enabled():  # nothing built for spans when tracing is off
            await self._apply_poll(polled, verdicts)
            return
        topics = ",".join(sorted({tp.topic for tp in polled}))
        # The poll's own partitions (a judged poll may hold more): one span per event it brings.
        events = (e for tp in polled for e in verdicts[tp].trusted.values())
        with tracing.consuming(self.group_id, topics, events):
            await self._apply_poll(polled, verdicts)

    async def _apply_poll(
        self,
        polled: dict[TopicPartition, list[ConsumerRecord]],
        verdicts: dict[TopicPartition, Verdicts],
    ) -> None:
        try:
            await self._process_batch(polled, verdicts, careful=False)
        except _RetryCarefully:
            await self._process_batch(polled, verdicts, careful=True)

    async def _judge(self, records: list[ConsumerRecord]) -> Verdicts:
        if len(records) < VERIFY_IN_THREADS_FROM:
            return judge(self.trust, records)
        return await asyncio.to_thread(judge, self.trust, records)

    async def _process_batch(
        self,
        polled: dict[TopicPartition, list[ConsumerRecord]],
        verdicts: dict[TopicPartition, Verdicts],
        *,
        careful: bool,
    ) -> None:
        held = frozenset(self.parking.aggregates)  # parked before this batch
        parked = set(held)
        async with self.pool.acquire() as conn, conn.transaction():
            claim = await claim_batch(conn, self.name, polled, verdicts, held)
            applied: list[str] = []
            unmark: list[str] = []  # claimed, then parked in this batch: not applied after all
            refusals: list[tuple[ConsumerRecord, Refused]] = []
            batch: list[StoredEvent] = []  # fast path: applied together after the loop
            duplicates = 0
            for tp, records in polled.items():
                done_upto = claim.done_upto.get(tp)
                decoded, refused_here = verdicts[tp].trusted, verdicts[tp].refused
                for record in records:
                    if done_upto is not None and record.offset <= done_upto:
                        continue  # handled already (a rebalance or a retry delivered it again)
                    refused = refused_here.get(record.offset)
                    if refused is not None:  # never applied, never parks (see the class)
                        refusals.append((record, refused))
                        continue
                    event = decoded[record.offset]
                    key = _key(record)
                    if not claim.take(event.event_id):  # applied before: a redelivered copy
                        duplicates += 1
                        continue
                    if key in parked:
                        await self.parking.park(conn, record, key)
                        if key not in held:
                            unmark.append(event.event_id)
                        continue
                    if not careful:
                        batch.append(event)
                        continue
                    try:
                        async with conn.transaction():
                            await self.projection.apply(conn, event)
                    except TRANSIENT_DB_ERRORS:
                        raise
                    except Exception as exc:
                        await self.parking.deadletter(
                            conn, self._dlq, Poison(record, key, f"{type(exc).__name__}: {exc}")
                        )
                        parked.add(key)
                        unmark.append(event.event_id)
                        continue
                    applied.append(event.event_id)
            if batch:
                try:
                    await self._apply_fast(conn, batch)
                except TRANSIENT_DB_ERRORS:
                    raise
                except Exception as exc:
                    raise _RetryCarefully from exc
                applied.extend(e.event_id for e in batch)
            if unmark:  # parked, not applied: resolving applies them later
                await conn.execute(
                    "DELETE FROM processed_events WHERE projection = $1 AND event_id = ANY($2)",
                    self.name,
                    unmark,
                )
            # Dead letters of the refused once the batch holds (a fast path that falls back
            # sends none), before the commit: a crash may repeat one, never lose one.
            for record, refused in refusals:
                await record_refusal(
                    conn, self._dlq, record, refused,
                    consumer=self.name, group_id=self.group_id,
                )  # fmt: skip
        self.parking.aggregates |= parked
        for _, refused in refusals:
            count(self.name, refused)
        metrics.PROJECTION_APPLIED.labels(self.name).inc(len(applied))
        metrics.PROJECTION_DUPLICATES.labels(self.name).inc(duplicates)

    async def _apply_fast(self, conn: asyncpg.Connection, events: list[StoredEvent]) -> None:
        """Apply the batch in as few round trips as the projection allows."""
        if isinstance(self.projection, BatchProjection):
            await self.projection.apply_batch(conn, events)
        elif getattr(self.projection, "rows_keyed_by_aggregate", False):
            await apply_in_waves(conn, self.projection.apply, events)
        else:
            for event in events:
                await self.projection.apply(conn, event)


# One round trip opens a batch's bookkeeping: it locks and reads the checkpoints of the polled
# partitions (the row lock serialises two owners of one partition), claims the ids of the
# events past them (the dedupe: an id claimed before is a redelivered copy), reads which
# events of parked aggregates were applied already, and moves the checkpoints to the batch's
# last offsets — never backwards (a stale owner after a rebalance cannot rewind them). All in
# the batch's transaction: rows, claims and checkpoints commit together or not at all.
# `done` is materialised before `moved` reads it, so the checkpoints are read before they move.
# Every event handled is claimed, whether or not its apply writes a row (claiming first is what
# saves the round trip); only events parked in the batch are unclaimed again (the runner).
# $6/$7 (ids, offsets) list the events partition by partition; $5[k] is the index of partition
# k's last one.
_CLAIM_BATCH = """
WITH done AS MATERIALIZED (
    SELECT topic, partition, "offset" FROM projection_checkpoints
    WHERE projection = $1 AND (topic, partition) IN (SELECT * FROM unnest($2::text[], $3::int[]))
    FOR UPDATE
), fresh AS (
    INSERT INTO processed_events (projection, event_id)
    SELECT $1, c.event_id
    FROM unnest($2::text[], $3::int[], $5::int[]) WITH ORDINALITY AS p(topic, partition, upto, k)
    JOIN unnest($6::text[], $7::bigint[]) WITH ORDINALITY AS c(event_id, off, i)
        ON c.i > coalesce($5[p.k - 1], 0) AND c.i <= p.upto
    LEFT JOIN done d ON d.topic = p.topic AND d.partition = p.partition
    WHERE d."offset" IS NULL OR c.off > d."offset"
    ON CONFLICT DO NOTHING RETURNING event_id
), moved AS (
    INSERT INTO projection_checkpoints (projection, topic, partition, "offset")
    SELECT $1, n.topic, n.partition, n.off
    FROM unnest($2::text[], $3::int[], $4::bigint[]) AS n(topic, partition, off)
    LEFT JOIN done d ON d.topic = n.topic AND d.partition = n.partition
    WHERE d."offset" IS NULL OR n.off > d."offset"
    ON CONFLICT (projection, topic, partition) DO UPDATE SET "offset" = excluded."offset"
    WHERE projection_checkpoints."offset" < excluded."offset"
)
SELECT 'done' AS kind, topic, partition, "offset", NULL AS event_id FROM done
UNION ALL SELECT 'fresh', NULL, NULL, NULL, event_id FROM fresh
UNION ALL SELECT 'fresh', NULL, NULL, NULL, h.event_id FROM unnest($8::text[]) AS h(event_id)
    WHERE NOT EXISTS (
        SELECT FROM processed_events p WHERE p.projection = $1 AND p.event_id = h.event_id
    )
"""


@dataclass(slots=True)
class _Claim:
    """What the batch's opening statement found: the checkpoints, the events not seen before."""

    done_upto: dict[TopicPartition, int]
    fresh: set[str]

    def take(self, event_id: str) -> bool:
        """True the first time for an event not applied before (False for every copy)."""
        if event_id in self.fresh:
            self.fresh.discard(event_id)
            return True
        return False


async def claim_batch(
    conn: asyncpg.Connection,
    projection: str,
    polled: Mapping[TopicPartition, Sequence[ConsumerRecord]],
    verdicts: Mapping[TopicPartition, Verdicts],
    parked: frozenset[str],
) -> _Claim:
    """Lock and move the checkpoints, claim the new events' ids (see _CLAIM_BATCH)."""
    # Per event only its id and offset (every array element costs asyncpg type checks); the
    # events are listed partition by partition, `upto` says where each partition's end.
    ids: list[str] = []
    offsets: list[int] = []
    upto: list[int] = []
    held: list[str] = []  # events of parked aggregates: only read, they are not applied now
    for tp in polled:
        for offset, event in verdicts[tp].trusted.items():
            if event.aggregate_id in parked:
                held.append(event.event_id)
            else:
                ids.append(event.event_id)
                offsets.append(offset)
        upto.append(len(ids))
    rows = await conn.fetch(
        _CLAIM_BATCH,
        projection,
        [tp.topic for tp in polled],
        [tp.partition for tp in polled],
        [records[-1].offset for records in polled.values()],
        upto,
        ids,
        offsets,
        held,
    )
    done_upto: dict[TopicPartition, int] = {}
    fresh: set[str] = set()
    for row in rows:
        if row["kind"] == "done":
            done_upto[TopicPartition(row["topic"], row["partition"])] = row["offset"]
        else:
            fresh.add(row["event_id"])
    return _Claim(done_upto, fresh)


class _SeekToCheckpoint(ConsumerRebalanceListener):
    """Revocation waits for the batch in flight; assignment resumes after the DB checkpoint."""

    def __init__(self, runner: ProjectionRunner) -> None:
        self.runner = runner

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        async with self.runner._lock:
            return None

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        consumer = self.runner._consumer
        if consumer is None:
            return
        try:
            await self.runner._seek_to_checkpoints(consumer, assigned)
        except TRANSIENT_DB_ERRORS:
            # The database is down: hold the partitions (never fetch from Kafka's committed
            # offsets, which may be past records the database has not got) and seek later.
            self.runner.hold_until_seek(consumer)


def _key(record: ConsumerRecord) -> str:
    return (record.key or b"").decode("utf-8", errors="replace")


async def next_offsets(pool: asyncpg.Pool, projection: str) -> dict[TopicPartition, int]:
    """The offset the projection reads next, per partition it has a checkpoint for (the
    checkpoint is the last offset handled, so this is checkpoint + 1; like end_offsets)."""
    rows = await pool.fetch(
        'SELECT topic, partition, "offset" FROM projection_checkpoints WHERE projection = $1',
        projection,
    )
    return {TopicPartition(r["topic"], r["partition"]): r["offset"] + 1 for r in rows}


def consumed(positions: Mapping[TopicPartition, int], goal: Mapping[TopicPartition, int]) -> int:
    """How many of the goal's records (next offsets to reach, per partition) are behind the
    positions."""
    return sum(min(positions.get(tp, 0), end) for tp, end in goal.items())


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
        done = await next_offsets(pool, projection)
        behind = {tp: (done.get(tp, 0), end) for tp, end in goal.items() if done.get(tp, 0) < end}
        if not behind:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"projection {projection} still behind after {timeout}s: {behind}")
        await asyncio.sleep(0.05)
