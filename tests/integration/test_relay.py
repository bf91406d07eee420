"""Outbox relay under faults: its own crash (SIGKILL) and a Kafka broker restart."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections import defaultdict
from urllib.parse import urlsplit

import asyncpg

from deploy.infra import Endpoints
from deploy.local_kafka import LocalKafka
from deploy.processes import REPO_ROOT
from shared import kafka_clients
from shared.chain_key import ChainKey
from shared.events import StoredEvent
from shared.kafka_admin import end_offsets
from shared.outbox_relay import OutboxRelay
from shared.postgres_eventstore import PostgresEventStore
from shared.projections import ProjectionRunner, wait_caught_up
from shared.trust import verify_envelope
from shared.waits import eventually
from tests.factories import aggregate_id, new_event
from tests.integration.thing_projection import (
    ThingProjection,
    create_schema,
    expected_digest,
    projected_digest,
)
from tests.support.plugin import make_topic
from tests.support.trust import session_trust, signer, trust_list

RELAY_NAME = "LON.donor_intake.relay"


async def write_stream(
    store: PostgresEventStore,
    aggregates: int,
    appends: int,
    *,
    pause: float = 0.0,
    until: asyncio.Event | None = None,
) -> None:
    """Writers appending small batches over time, so faults land mid-stream. With `until`,
    they keep going (up to `appends` each) until it is set."""

    async def one(a: int) -> None:
        agg = aggregate_id(f"a{a}")
        for n in range(appends):
            if until is not None and until.is_set():
                return
            await store.append(agg, 2 * n, [new_event(n), new_event(n)])
            await asyncio.sleep(pause)

    await asyncio.gather(*(one(a) for a in range(aggregates)))


async def read_topic(bootstrap: str, topic: str) -> list[StoredEvent]:
    """Every record on the topic, in partition order, decoded."""
    ends = await end_offsets(bootstrap, [topic])
    consumer = kafka_clients.consumer(bootstrap=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        consumer.assign(list(ends))
        await consumer.seek_to_beginning(*ends)
        out: list[StoredEvent] = []
        remaining = {tp for tp, end in ends.items() if end > 0}
        while remaining:
            for tp, records in (await consumer.getmany(timeout_ms=500)).items():
                out.extend(verify_envelope(trust_list(), r.value) for r in records)
                if records and records[-1].offset + 1 >= ends[tp]:
                    remaining.discard(tp)
        return out
    finally:
        await consumer.stop()


def assert_per_aggregate_order(published: list[StoredEvent]) -> None:
    """First occurrences of each aggregate's events arrive in version order (dupes allowed)."""
    firsts: dict[str, list[int]] = defaultdict(list)
    seen: set[str] = set()
    for e in published:
        if e.event_id not in seen:
            seen.add(e.event_id)
            firsts[e.aggregate_id].append(e.aggregate_version)
    for agg, versions in firsts.items():
        assert versions == list(range(1, len(versions) + 1)), agg


async def project_and_check(
    pool: asyncpg.Pool, bootstrap: str, topic: str, stored: list[StoredEvent]
) -> None:
    await create_schema(pool)
    projection = ThingProjection([topic])
    runner = ProjectionRunner(
        pool, projection, trust=trust_list(), bootstrap=bootstrap, group_id=f"LON.test.{topic}"
    )
    stop = asyncio.Event()
    task = asyncio.create_task(runner.run(stop))
    try:
        await wait_caught_up(pool, projection.name, bootstrap=bootstrap, topics=[topic], timeout=60)
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)
    assert await pool.fetchval("SELECT count(*) FROM thing_rows") == len(stored)
    assert await projected_digest(pool) == expected_digest(stored)
    assert not runner.parked_aggregates()


def relay_process(endpoints: Endpoints, database_url: str, topic: str) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "CELLBANK_SITE_ID": "LON",
        "CELLBANK_SERVICE": "donor_intake",
        "CELLBANK_KAFKA_BOOTSTRAP": endpoints.kafka_bootstrap,
        "CELLBANK_DATABASE_URL": endpoints.database_url,
        "CELLBANK_DATABASE_NAME": urlsplit(database_url).path.lstrip("/"),
        "CELLBANK_RELAY_TOPIC": topic,
        "CELLBANK_LOG_LEVEL": "WARNING",
        # As deployed: migrates as the owner role, relays as the runtime role.
        **(endpoints.database_logins.service_env() if endpoints.database_logins else {}),
        **session_trust().env("LON"),
    }
    return subprocess.Popen([sys.executable, "-m", "shared.relay_main"], env=env, cwd=REPO_ROOT)


async def relay_position(pool: asyncpg.Pool) -> int:
    value = await pool.fetchval(
        "SELECT position FROM relay_checkpoints WHERE relay_name = $1", RELAY_NAME
    )
    return int(value or 0)


async def test_relay_killed_mid_stream_resumes_and_loses_nothing(
    endpoints: Endpoints, database: str, pool: asyncpg.Pool, topic: str
):
    store = PostgresEventStore(pool, "LON", chain_key=ChainKey.generate())
    enough = asyncio.Event()
    writing = asyncio.create_task(
        write_stream(store, aggregates=10, appends=500, pause=0.005, until=enough)
    )
    proc = relay_process(endpoints, database, topic)
    try:
        # Kill it hard once it has published part of the stream, with writers still going.
        await eventually(
            lambda: relay_position(pool),
            until=lambda p: p >= 200,
            what="relay progress",
            timeout=60,
        )
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        killed_at = await relay_position(pool)
        await eventually(
            store.head_position, until=lambda h: h > killed_at + 200, what="more appends"
        )
        enough.set()
        await writing
        proc = relay_process(endpoints, database, topic)
        head = await store.head_position()
        await eventually(
            lambda: relay_position(pool),
            until=lambda p: p == head,
            what="relay catch-up",
            timeout=60,
        )
    finally:
        enough.set()
        writing.cancel()
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0  # SIGTERM is a clean stop

    stored = await store.read_all(0, limit=100_000)
    published = await read_topic(endpoints.kafka_bootstrap, topic)
    assert {e.event_id for e in published} == {e.event_id for e in stored}
    assert_per_aggregate_order(published)
    await project_and_check(pool, endpoints.kafka_bootstrap, topic, stored)


async def test_relay_and_projection_ride_out_a_broker_restart(
    controllable_kafka: LocalKafka, database: str, pool: asyncpg.Pool
):
    bootstrap = controllable_kafka.bootstrap
    topic = await make_topic(bootstrap)
    store = PostgresEventStore(pool, "LON", chain_key=ChainKey.generate())
    relay = OutboxRelay(
        store, signer=signer("LON"), topic=topic, bootstrap=bootstrap, name=RELAY_NAME,
        max_backoff_s=1.0,
    )  # fmt: skip
    stop = asyncio.Event()
    relaying = asyncio.create_task(relay.run(stop))
    try:
        await write_stream(store, aggregates=6, appends=20)
        await eventually(relay.stored_position, until=lambda p: p > 0, what="first publish")
        await asyncio.to_thread(controllable_kafka.stop)
        # Appends keep succeeding while Kafka is down: the outbox holds them, unpublished.
        await write_stream(store, aggregates=6, appends=20)
        assert await relay.stored_position() < await store.head_position()
        await asyncio.to_thread(controllable_kafka.start)
        head = await store.head_position()
        await eventually(
            relay.stored_position, until=lambda p: p == head, what="relay catch-up", timeout=90
        )
    finally:
        stop.set()
        await asyncio.wait_for(relaying, 30)

    stored = await store.read_all(0, limit=100_000)
    published = await read_topic(bootstrap, topic)
    assert {e.event_id for e in published} == {e.event_id for e in stored}
    assert_per_aggregate_order(published)
    await project_and_check(pool, bootstrap, topic, stored)
