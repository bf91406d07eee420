"""`make bench`: one table (also written to .cellbank/bench-report.json) of every figure beside
the baseline measured in the same run, with the ratio.

`make bench` (or `python -m tests.bench [--quick]`) starts its own Kafka and PostgreSQL under
.cellbank/bench (or uses CELLBANK_KAFKA_BOOTSTRAP / CELLBANK_DATABASE_URL), measures, prints the
table on stdout (progress on stderr) and stops everything it started. CELLBANK_BENCH_SCALE
shrinks or grows the work (1.0 by default; --quick takes a tenth of it, in one round instead of
three). Benchmarks inform, they never fail on timing: the exit status is non-zero only when a
benchmark could not run or produced wrong results.

The rows, in order (each module's docstring says how):
- append, relay, projection throughput (this module), and the cost of signing (the relay with
  and without) and of verifying (the projection runner with and without; issue 15 keeps the
  relay's under 15 %); CELLBANK_BENCH_ONLY=streams runs only the relay and projection rows,
  CELLBANK_BENCH_ONLY=coldchain only the cold-chain rows, =as-of only the as-of row,
  =replay only the replay rows.
  Each figure the median of its rounds; the
  two sides alternate, each round on a fresh database and topic. Baselines: the same rows, batch
  shape and concurrency inserted into a plain table (no indexes, lock, hash chain or version
  check); a bare AIOKafkaProducer (acks=all, idempotence, the relay's batching) sending the
  relay's own envelopes, keys and headers; a bare AIOKafkaConsumer reading the same records;
- cold-chain readings/s and ReserveUnit latency (tests/bench_storage.py);
- SearchInventory at 100,000 units, PlaceOrder -> ALLOCATED, cross-site propagation
  (tests/bench_matching.py);
- replay of a site with >= 1,000,000 events (tests/bench_replay.py);
- a site's inventory as of a moment from a storage store of 1,000,000 events
  (tests/bench_as_of.py; CELLBANK_BENCH_ONLY=as-of runs it alone);
- memory per service, caught up on that log (tests/bench_memory.py).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import statistics
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import FrameType
from typing import Any, TypeVar

import asyncpg
from aiokafka import ConsumerRecord

from deploy.infra import DEFAULT_SITES, Endpoints, Infrastructure
from deploy.kafka_principals import ADMIN
from deploy.processes import REPO_ROOT
from shared import kafka_clients
from shared.chain_key import ChainKey
from shared.db import create_pool, drop_database, ensure_database, migrate, with_database
from shared.envelope_codec import decode, encode
from shared.events import NewEvent, StoredEvent
from shared.kafka_admin import end_offsets, ensure_topics
from shared.kafka_clients import reliable_producer
from shared.outbox_relay import OutboxRelay
from shared.postgres_eventstore import PostgresEventStore
from shared.projections import ProjectionRunner, wait_caught_up
from shared.topics import FOREVER, TopicSpec
from shared.trust import sign_event
from shared.untrusted import Verdicts
from shared.waits import eventually
from tests import bench_as_of, bench_matching, bench_memory, bench_replay, bench_storage
from tests.bench_report import Row, render
from tests.factories import new_event
from tests.support.trust import signer, trust_list

T = TypeVar("T")

ROOT = REPO_ROOT / ".cellbank" / "bench"
SITE = "LON"
PAYLOAD = bytes(range(256))  # a realistic event payload size (protobuf message of ~20 fields)
APPENDS_PER_AGGREGATE = 10  # a writer moves to a new aggregate after this many appends
WARMUP_APPENDS = 3  # per writer, untimed: connections, prepared statements, caches
PREFILL_BATCH = 50  # events per append when pre-filling the relay's store
APPEND_TARGET = 5_000.0  # events/s per site with concurrent writers (the target)
STREAM_TARGET = 20_000.0  # events/s for the relay and for a projection
# CELLBANK_BENCH_ONLY=streams: only the relay and projection rows (with and without signing);
# =coldchain: only the cold-chain rows (tests/bench_storage.py); =as-of: only the as-of row;
# =replay: only the replay rows (bulk replay and its baseline).
ONLY = os.environ.get("CELLBANK_BENCH_ONLY", "").strip()
STREAMS_ONLY = ONLY == "streams"
COLDCHAIN_ONLY = ONLY == "coldchain"
AS_OF_ONLY = ONLY == "as-of"
REPLAY_ONLY = ONLY == "replay"


def progress(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


@dataclass(frozen=True, slots=True)
class Sizes:
    appends_per_case: int  # per append case, shared among its writers
    stream_events: int  # N: events relayed, then projected

    @classmethod
    def scaled(cls, scale: float) -> Sizes:
        appends = max(8, round(2400 * scale / 8) * 8)  # divisible by every writer count
        return cls(appends_per_case=appends, stream_events=max(500, round(20_000 * scale)))


@dataclass(slots=True)
class Result:
    """One row of the table: every round's rate of both sides; the medians are reported."""

    benchmark: str
    target: float | None = None
    cellbank_runs: list[float] = field(default_factory=list)
    baseline_runs: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def cellbank(self) -> float | None:
        return statistics.median(self.cellbank_runs) if self.cellbank_runs else None

    @property
    def baseline(self) -> float | None:
        return statistics.median(self.baseline_runs) if self.baseline_runs else None


Measure = Callable[[], Awaitable[float]]  # one round of one side; returns events per second


async def compare(result: Result, rounds: int, cellbank: Measure, baseline: Measure) -> Result:
    """Alternate the two sides round by round, so drift on the machine hits both alike."""
    for n in range(1, rounds + 1):
        for side, measure, runs in (
            ("cellbank", cellbank, result.cellbank_runs),
            ("baseline", baseline, result.baseline_runs),
        ):
            where = f"{result.benchmark}: {side} round {n}/{rounds}"
            try:
                rate = await measure()
            except Exception as exc:
                result.errors.append(f"{side} round {n}: {exc!r}")
                progress(f"{where} FAILED: {exc!r}")
                continue
            runs.append(rate)
            progress(f"{where}: {rate:,.0f} events/s")
    return result


@dataclass(frozen=True, slots=True)
class Kafka:
    bootstrap: str
    partitions: int
    replication_factor: int
    created: list[str]  # topics to delete at the end (they matter on an external cluster)

    async def new_topic(self, label: str) -> str:
        name = f"bench.{label}.{uuid.uuid4().hex[:12]}"
        await ensure_topics(
            self.bootstrap,
            [TopicSpec(name, FOREVER, f"benchmark: {label}")],
            partitions=self.partitions,
            replication_factor=self.replication_factor,
        )
        self.created.append(name)
        return name

    async def delete_topics(self) -> None:
        if not self.created:
            return
        admin = kafka_clients.admin_client(self.bootstrap)
        await admin.start()
        try:
            await admin.delete_topics(self.created)
        finally:
            await admin.close()


@contextlib.asynccontextmanager
async def fresh_database(server_url: str, label: str) -> AsyncIterator[str]:
    """A new migrated database for one measurement; its URL. Dropped afterwards."""
    name = f"cellbank_bench_{label}_{uuid.uuid4().hex[:8]}"
    await ensure_database(server_url, name)
    try:
        url = with_database(server_url, name)
        pool = await create_pool(url, max_size=1)
        try:
            await migrate(pool)
        finally:
            await pool.close()
        yield url
    finally:
        await drop_database(server_url, name)


@contextlib.asynccontextmanager
async def pool_for(url: str, size: int) -> AsyncIterator[asyncpg.Pool]:
    pool = await create_pool(url, min_size=size, max_size=size)
    try:
        yield pool
    finally:
        await pool.close()


async def timed(work: Callable[[], Awaitable[None]]) -> float:
    start = time.perf_counter()
    await work()
    return time.perf_counter() - start


async def unless_task_dies(condition: Awaitable[T], task: asyncio.Task[None], what: str) -> T:
    """Await condition, but fail at once if the background task under test ends first."""
    waiter = asyncio.ensure_future(condition)
    try:
        await asyncio.wait({waiter, task}, return_when=asyncio.FIRST_COMPLETED)
        if not waiter.done():
            task.result()  # re-raises the task's own error, if it had one
            raise RuntimeError(f"{what} stopped before the condition held")
        return waiter.result()
    finally:
        waiter.cancel()


async def stop_task(stop: asyncio.Event, task: asyncio.Task[None], timeout: float = 30.0) -> None:
    stop.set()
    try:
        await asyncio.wait_for(task, timeout)
    except TimeoutError:
        progress(f"task did not stop within {timeout:.0f}s; cancelled")
    except Exception as exc:  # its failure is reported by whoever waited on it
        progress(f"task ended with {exc!r}")


# --- 1. append ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Append:
    aggregate_id: str
    expected_version: int
    events: list[NewEvent]


def writer_appends(writer: int, appends: int, batch: int) -> list[Append]:
    """One writer's appends, on aggregates no other writer touches."""
    prefix = f"w{writer}-{uuid.uuid4().hex[:8]}"
    return [
        Append(
            f"{prefix}-{i // APPENDS_PER_AGGREGATE}",
            (i % APPENDS_PER_AGGREGATE) * batch,
            [new_event(i, payload=PAYLOAD) for _ in range(batch)],
        )
        for i in range(appends)
    ]


async def append_cellbank(url: str, work: list[list[Append]], warmup: list[list[Append]]) -> float:
    async with pool_for(url, len(work)) as pool:
        store = PostgresEventStore(pool, SITE, chain_key=ChainKey.generate())

        async def write(appends: list[Append]) -> None:
            for a in appends:
                await store.append(a.aggregate_id, a.expected_version, a.events)

        await asyncio.gather(*(write(w) for w in warmup))
        elapsed = await timed(lambda: _gather(write(w) for w in work))
        expected = sum(len(a.events) for w in (*warmup, *work) for a in w)
        if (stored := await store.count()) != expected:
            raise AssertionError(f"event store holds {stored} events, expected {expected}")
    return elapsed


PLAIN_TABLE = """
CREATE TABLE plain_events (
    position bigserial, event_id uuid, aggregate_id text, aggregate_version bigint,
    aggregate_type text, event_type text, schema_version integer, site_id text,
    occurred_at timestamptz, recorded_at timestamptz, actor text, reason text,
    correlation_id text, causation_id text, payload bytea, prev_hash bytea, hash bytea)
"""

PLAIN_INSERT = """
INSERT INTO plain_events (event_id, aggregate_id, aggregate_version, aggregate_type, event_type,
    schema_version, site_id, occurred_at, recorded_at, actor, reason, correlation_id,
    causation_id, payload, prev_hash, hash)
SELECT * FROM unnest($1::uuid[], $2::text[], $3::bigint[], $4::text[], $5::text[], $6::int[],
    $7::text[], $8::timestamptz[], $9::timestamptz[], $10::text[], $11::text[], $12::text[],
    $13::text[], $14::bytea[], $15::bytea[], $16::bytea[])
RETURNING position
"""


def plain_columns(a: Append) -> list[tuple[object, ...]]:
    """The append's rows as the store would write them, column-wise (hashes are stand-ins)."""
    now = datetime.now(UTC)
    rows = [
        (
            e.event_id,
            a.aggregate_id,
            a.expected_version + n,
            e.aggregate_type,
            e.event_type,
            e.schema_version,
            SITE,
            e.occurred_at,
            now,
            e.actor,
            e.reason,
            e.correlation_id,
            e.causation_id,
            e.payload,
            b"\x01" * 32,
            b"\x02" * 32,
        )
        for n, e in enumerate(a.events, start=1)
    ]
    return list(zip(*rows, strict=True))


async def append_baseline(url: str, work: list[list[Append]], warmup: list[list[Append]]) -> float:
    async with pool_for(url, len(work)) as pool:
        await pool.execute(PLAIN_TABLE)
        batches = [[plain_columns(a) for a in w] for w in work]

        async def write(columns_list: list[list[tuple[object, ...]]]) -> None:
            for columns in columns_list:
                async with pool.acquire() as conn, conn.transaction():
                    await conn.fetch(PLAIN_INSERT, *columns)

        await asyncio.gather(*(write([plain_columns(a) for a in w]) for w in warmup))
        elapsed = await timed(lambda: _gather(write(b) for b in batches))
        expected = sum(len(a.events) for w in (*warmup, *work) for a in w)
        if (stored := await pool.fetchval("SELECT count(*) FROM plain_events")) != expected:
            raise AssertionError(f"plain table holds {stored} rows, expected {expected}")
    return elapsed


async def _gather(coros: Iterable[Awaitable[object]]) -> None:
    await asyncio.gather(*coros)


async def bench_append(
    server_url: str, writers: int, batch: int, sizes: Sizes, rounds: int
) -> Result:
    per_writer = sizes.appends_per_case // writers
    events = per_writer * writers * batch
    result = Result(
        f"append: {writers} writer(s) x {batch} event(s)/append",
        APPEND_TARGET if writers > 1 else None,
    )

    def side(
        run: Callable[[str, list[list[Append]], list[list[Append]]], Awaitable[float]],
    ) -> Measure:
        async def measure() -> float:
            work = [writer_appends(w, per_writer, batch) for w in range(writers)]
            warmup = [writer_appends(w, WARMUP_APPENDS, batch) for w in range(writers)]
            async with fresh_database(server_url, "append") as url:
                return events / await run(url, work, warmup)

        return measure

    progress(f"{result.benchmark}: {events} events a round")
    return await compare(result, rounds, side(append_cellbank), side(append_baseline))


# --- 2. relay and 3. projection -------------------------------------------------------------


async def prefill(store: PostgresEventStore, n: int, writers: int = 4) -> int:
    """Append n events on aggregates of PREFILL_BATCH events; returns the head position."""
    sizes = [PREFILL_BATCH] * (n // PREFILL_BATCH) + (
        [n % PREFILL_BATCH] if n % PREFILL_BATCH else []
    )
    shares = [sizes[w::writers] for w in range(writers)]

    async def write(share: list[int]) -> None:
        for size in share:
            agg = f"pre-{uuid.uuid4().hex[:12]}"
            await store.append(agg, 0, [new_event(i, payload=PAYLOAD) for i in range(size)])

    await asyncio.gather(*(write(s) for s in shares))
    return await store.head_position()


async def read_everything(store: PostgresEventStore) -> list[StoredEvent]:
    events: list[StoredEvent] = []
    while batch := await store.read_all(events[-1].position if events else 0, 5000):
        events.extend(batch)
    return events


async def topic_size(bootstrap: str, topic: str) -> int:
    return sum((await end_offsets(bootstrap, [topic])).values())


class UnsignedRelay(OutboxRelay):
    """The relay as it was before envelopes were signed (same pipeline, encoding only): the
    baseline of the signing cost."""

    def _seal_now(self, events: list[StoredEvent]) -> list[bytes]:
        return [encode(e) for e in events]


class UnverifiedRunner(ProjectionRunner):
    """The runner as it was before records were verified (decoding only): the baseline of the
    verification cost."""

    async def _judge(self, records: list[ConsumerRecord]) -> Verdicts:
        return Verdicts(trusted={r.offset: decode(r.value or b"") for r in records})


async def relay_cellbank(
    store: PostgresEventStore, head: int, kafka: Kafka, topic: str, *, signed: bool = True
) -> float:
    kind = OutboxRelay if signed else UnsignedRelay
    relay = kind(
        store, signer=signer(SITE), topic=topic, bootstrap=kafka.bootstrap, name=f"bench-{topic}"
    )
    stop = asyncio.Event()
    start = time.perf_counter()
    task = asyncio.create_task(relay.run(stop))
    try:
        await unless_task_dies(
            eventually(
                relay.stored_position,
                until=lambda p: p >= head,
                timeout=max(60.0, head / 500),
                what=f"relay stored position {head}",
                interval=0.01,
            ),
            task,
            "the relay",
        )
        return time.perf_counter() - start
    finally:
        await stop_task(stop, task)


Message = tuple[bytes, bytes, list[tuple[str, bytes]]]


def relay_messages(events: Sequence[StoredEvent]) -> list[Message]:
    """What the relay sends for each event: key, signed envelope, headers (see OutboxRelay)."""
    key = signer(SITE)
    return [
        (
            e.aggregate_id.encode(),
            sign_event(key, e),
            [
                ("event_type", e.event_type.encode()),
                ("event_id", e.event_id.encode()),
                ("site_id", e.site_id.encode()),
            ],
        )
        for e in events
    ]


async def relay_baseline(messages: list[Message], kafka: Kafka, topic: str) -> float:
    # The relay's own producer settings (shared.kafka_clients.reliable_producer), so the ratio
    # isolates the relay's own work (reading the store, encoding, checkpointing, batch waits).
    producer = reliable_producer(kafka.bootstrap)
    start = time.perf_counter()
    await producer.start()
    try:
        futures = [
            await producer.send(topic, value=value, key=key, headers=headers)
            for key, value, headers in messages
        ]
        await asyncio.gather(*futures)
        return time.perf_counter() - start
    finally:
        await producer.stop()


class BenchRows:
    """The trivial projection: one row per event in a table of its own."""

    def __init__(self, topic: str) -> None:
        self.name = "bench_rows"
        self.topics: Sequence[str] = (topic,)

    async def create_table(self, pool: asyncpg.Pool) -> None:
        await pool.execute(
            "CREATE TABLE IF NOT EXISTS bench_rows (event_id text PRIMARY KEY,"
            " aggregate_id text NOT NULL, aggregate_version bigint NOT NULL)"
        )

    async def apply(self, conn: asyncpg.Connection, event: StoredEvent) -> None:
        await conn.execute(
            "INSERT INTO bench_rows (event_id, aggregate_id, aggregate_version)"
            " VALUES ($1, $2, $3)",
            event.event_id,
            event.aggregate_id,
            event.aggregate_version,
        )

    async def apply_batch(self, conn: asyncpg.Connection, events: Sequence[StoredEvent]) -> None:
        """The runner's fast path: one executemany for the whole poll (BatchProjection)."""
        await conn.executemany(
            "INSERT INTO bench_rows (event_id, aggregate_id, aggregate_version)"
            " VALUES ($1, $2, $3)",
            [(e.event_id, e.aggregate_id, e.aggregate_version) for e in events],
        )


async def projection_cellbank(
    server_url: str, kafka: Kafka, topic: str, records: int, *, verified: bool = True
) -> float:
    async with fresh_database(server_url, "projection") as url, pool_for(url, 4) as pool:
        projection = BenchRows(topic)
        await projection.create_table(pool)
        targets = await end_offsets(kafka.bootstrap, [topic])
        runner = (ProjectionRunner if verified else UnverifiedRunner)(
            pool,
            projection,
            trust=trust_list(),
            bootstrap=kafka.bootstrap,
            group_id=f"{SITE}.bench.{projection.name}-{uuid.uuid4().hex[:8]}",
        )
        stop = asyncio.Event()
        start = time.perf_counter()
        task = asyncio.create_task(runner.run(stop))
        try:
            await unless_task_dies(
                wait_caught_up(
                    pool,
                    projection.name,
                    bootstrap=kafka.bootstrap,
                    topics=[topic],
                    timeout=max(60.0, records / 200),
                    targets=targets,
                ),
                task,
                "the projection runner",
            )
            seconds = time.perf_counter() - start
        finally:
            await stop_task(stop, task)
        if (rows := await pool.fetchval("SELECT count(*) FROM bench_rows")) != records:
            raise AssertionError(f"projection holds {rows} rows, expected {records}")
        return seconds


async def projection_baseline(kafka: Kafka, topic: str, records: int) -> float:
    # Same consumer shape as ProjectionRunner: a fresh group, earliest, 2000 records a poll.
    consumer = kafka_clients.consumer(
        topic,
        bootstrap=kafka.bootstrap,
        group_id=f"{SITE}.bench.baseline-{uuid.uuid4().hex[:8]}",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_poll_records=2000,
    )
    deadline = time.monotonic() + max(60.0, records / 500)
    start = time.perf_counter()
    await consumer.start()
    try:
        seen = 0
        while seen < records:
            if time.monotonic() > deadline:
                raise TimeoutError(f"baseline consumer read {seen} of {records} records")
            batches = await consumer.getmany(timeout_ms=200, max_records=2000)
            seen += sum(len(batch) for batch in batches.values())
        return time.perf_counter() - start
    finally:
        await consumer.stop()


async def warm_up_kafka(kafka: Kafka, messages: int = 2000) -> None:
    """Untimed: the broker's first produce, the group coordinator's first join (it creates
    __consumer_offsets), and the JIT, so neither side of a comparison pays for them alone."""
    topic = await kafka.new_topic("warmup")
    producer = kafka_clients.producer(kafka.bootstrap, acks="all", enable_idempotence=True)
    await producer.start()
    try:
        futures = [
            await producer.send(topic, value=PAYLOAD, key=b"%d" % i) for i in range(messages)
        ]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()
    await projection_baseline(kafka, topic, messages)


@dataclass(slots=True)
class Relayed:
    """What the relay rounds leave for the rest: the relay's messages and a topic full of them."""

    messages: list[Message] = field(default_factory=list)
    topic: str | None = None


async def bench_streams(server_url: str, kafka: Kafka, sizes: Sizes, rounds: int) -> list[Result]:
    n = sizes.stream_events
    progress("kafka: warming up the broker and the group coordinator")
    await warm_up_kafka(kafka)
    relayed = Relayed()

    async def relay_with_cellbank(signed: bool = True) -> float:
        async with fresh_database(server_url, "relay") as url, pool_for(url, 4) as pool:
            store = PostgresEventStore(pool, SITE, chain_key=ChainKey.generate())
            progress(f"relay: pre-filling a store with {n} events (untimed)")
            head = await prefill(store, n)
            if not relayed.messages:
                relayed.messages = relay_messages(await read_everything(store))
            topic = await kafka.new_topic("relay")
            seconds = await relay_cellbank(store, head, kafka, topic, signed=signed)
        if (published := await topic_size(kafka.bootstrap, topic)) < n:
            raise AssertionError(f"relay topic holds {published} records, expected {n}")
        if signed:
            relayed.topic = relayed.topic or topic
        return published / seconds

    async def relay_unsigned() -> float:
        return await relay_with_cellbank(signed=False)

    async def relay_with_producer() -> float:
        if not relayed.messages:
            raise RuntimeError("nothing to send: no cellbank relay round got as far")
        topic = await kafka.new_topic("relay-baseline")
        return len(relayed.messages) / await relay_baseline(relayed.messages, kafka, topic)

    relay = await compare(
        Result(f"relay ({n:,} events)", STREAM_TARGET),
        rounds,
        relay_with_cellbank,
        relay_with_producer,
    )
    # The signing cost (issue 15: under 15 % of the relay's throughput): the same relay with
    # and without signing, alternating round by round.
    signing = await compare(
        Result(f"signing: relay with vs without ({n:,} events)", STREAM_TARGET),
        rounds,
        relay_with_cellbank,
        relay_unsigned,
    )
    projection = Result(f"projection ({n:,} events)", STREAM_TARGET)
    if relayed.topic is None:
        projection.errors.append("no relayed topic to project (every relay round failed)")
        return [relay, signing, projection]
    topic = relayed.topic
    records = await topic_size(kafka.bootstrap, topic)

    async def project_with_cellbank() -> float:
        return records / await projection_cellbank(server_url, kafka, topic, records)

    async def consume_only() -> float:
        return records / await projection_baseline(kafka, topic, records)

    async def project_unverified() -> float:
        return records / await projection_cellbank(
            server_url, kafka, topic, records, verified=False
        )

    await compare(projection, rounds, project_with_cellbank, consume_only)
    verifying = await compare(
        Result(f"verifying: projection with vs without ({records:,} events)", STREAM_TARGET),
        rounds,
        project_with_cellbank,
        project_unverified,
    )
    return [relay, signing, projection, verifying]


# --- running and reporting ------------------------------------------------------------------


async def run_all(
    endpoints: Endpoints, infra: Infrastructure, sizes: Sizes, rounds: int
) -> list[Result]:
    kafka = Kafka(endpoints.kafka_bootstrap, infra.partitions, infra.replication_factor, [])
    results: list[Result] = []
    try:
        for writers in (1, 8) if not STREAMS_ONLY else ():
            for batch in (1, 10):
                results.append(
                    await bench_append(endpoints.database_url, writers, batch, sizes, rounds)
                )
        results.extend(await bench_streams(endpoints.database_url, kafka, sizes, rounds))
    finally:
        with contextlib.suppress(Exception):
            await kafka.delete_topics()
    return results


@dataclass(frozen=True, slots=True)
class Options:
    scale: float
    rounds: int


BASELINE_IS = {
    "append": "plain INSERT, no lock/chain/check",
    "relay": "bare producer, same records",
    "projection": "bare consumer, no database",
    "signing": "the same relay, envelopes not signed",
    "verifying": "the same runner, records not verified",
}


def rows_of(results: list[Result]) -> list[Row]:
    """The throughput results as rows of the report (medians of the rounds)."""
    return [
        Row(
            r.benchmark,
            "events/s",
            r.cellbank,
            r.baseline,
            BASELINE_IS[r.benchmark.split(" ")[0].rstrip(":")],
            target=r.target,
            error="; ".join(r.errors),
        )
        for r in results
    ]


def options_from(argv: Sequence[str] | None) -> Options:
    parser = argparse.ArgumentParser(prog="python -m tests.bench", description=__doc__)
    parser.add_argument(
        "--quick", action="store_true", help="a tenth of the work, one round (smoke run)"
    )
    parser.add_argument("--rounds", type=int, help="rounds per benchmark (default 3, quick 1)")
    args = parser.parse_args(argv)
    configured = os.environ.get("CELLBANK_BENCH_SCALE", "").strip()
    scale = float(configured) if configured else 1.0
    rounds = args.rounds or (1 if args.quick else 3)
    return Options(scale=scale * 0.1 if args.quick else scale, rounds=max(1, rounds))


def _terminate(signum: int, _frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)  # unwinds through the finally blocks that stop the servers


def guarded(name: str, run: Callable[[], Coroutine[Any, Any, list[Row]]]) -> list[Row]:
    """One benchmark module's rows; if it fails, one error row instead (the others still run
    and the table is still printed and written)."""
    try:
        return asyncio.run(run())
    except Exception as exc:
        progress(f"{name} benchmarks FAILED: {exc!r}")
        return [Row(f"{name} benchmarks", "-", None, error=repr(exc))]


def main(argv: Sequence[str] | None = None) -> int:
    started = time.perf_counter()
    options = options_from(argv)
    sizes = Sizes.scaled(options.scale)
    signal.signal(signal.SIGTERM, _terminate)
    if ROOT.exists():
        progress(f"removing leftovers of an earlier run in {ROOT}")
        shutil.rmtree(ROOT, ignore_errors=True)
    # The memory figure runs a site of its own (bench_memory.SITE): its principals too.
    infra = Infrastructure(ROOT, sites=(*DEFAULT_SITES, bench_memory.SITE))
    rows: list[Row] = []
    try:
        progress("starting infrastructure")
        with contextlib.redirect_stdout(sys.stderr):
            endpoints = infra.start()
        # The benchmarks' own clients act as the Kafka admin (they create topics).
        os.environ.update(endpoints.kafka_env(ADMIN))
        if COLDCHAIN_ONLY:
            rows += guarded(
                "storage",
                lambda: bench_storage.run(endpoints, options.scale, ROOT / "logs", True),
            )
        elif AS_OF_ONLY:
            rows += guarded("as-of", lambda: bench_as_of.run(endpoints, options.scale))
        elif REPLAY_ONLY:
            rows += guarded("replay", lambda: bench_replay.run(endpoints, options.scale))
        else:
            rows += rows_of(asyncio.run(run_all(endpoints, infra, sizes, options.rounds)))
        if not (STREAMS_ONLY or COLDCHAIN_ONLY or AS_OF_ONLY or REPLAY_ONLY):
            rows += guarded(
                "storage", lambda: bench_storage.run(endpoints, options.scale, ROOT / "logs")
            )
            rows += guarded("matching", lambda: bench_matching.run(endpoints, options.scale))
            # Last: the replay leaves a million-event log on the topics, which the memory
            # figure's services then catch up on (every other benchmark would have to read it).
            rows += guarded("replay", lambda: bench_replay.run(endpoints, options.scale))
            rows += guarded("as-of", lambda: bench_as_of.run(endpoints, options.scale))
            rows += guarded("memory", lambda: bench_memory.run(endpoints))
    finally:
        progress("stopping infrastructure")
        with contextlib.redirect_stdout(sys.stderr):
            infra.stop()
        shutil.rmtree(ROOT, ignore_errors=True)
    wall = time.perf_counter() - started
    title = (
        f"CellBank benchmarks: scale {options.scale:g}, {os.cpu_count()} cpus; throughput rows are"
        f" the median of {options.rounds} round(s) ({sizes.appends_per_case:,} appends per append"
        f" case, {sizes.stream_events:,} events relayed and projected); total {wall:.0f}s"
    )
    print(render(rows, title), flush=True)
    report = REPO_ROOT / ".cellbank" / "bench-report.json"
    report.parent.mkdir(parents=True, exist_ok=True)
    report.write_text(
        json.dumps(
            {"scale": options.scale, "rounds": options.rounds, "cpus": os.cpu_count(),
             "wall_s": wall, "rows": [r.as_json() for r in rows]},
            indent=2,
        )
    )  # fmt: skip
    print(f"(also written to {report})", flush=True)
    return 1 if any(r.error for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
