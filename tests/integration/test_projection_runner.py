"""Projection runner: one transaction for rows and checkpoint, dedupe, poison and parking."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

import asyncpg
from aiokafka import ConsumerRecord
from aiokafka.structs import TopicPartition

from deploy.infra import Endpoints
from shared import kafka_clients
from shared.events import StoredEvent
from shared.eventstore import InMemoryEventStore
from shared.projections import ProjectionRunner, claim_batch, wait_caught_up
from shared.topics import DEADLETTER
from shared.trust import sign_event
from shared.untrusted import Verdicts
from tests.factories import aggregate_id, new_event
from tests.integration.thing_projection import (
    BatchThingProjection,
    ThingProjection,
    create_schema,
    expected_digest,
    projected_digest,
)
from tests.support.trust import signer, trust_list


async def publish(
    bootstrap: str, topic: str, events: list[StoredEvent], *, raw: Sequence[tuple[str, bytes]] = ()
) -> None:
    producer = kafka_clients.producer(bootstrap, acks="all", enable_idempotence=True)
    await producer.start()
    try:
        for e in events:
            await producer.send_and_wait(
                topic, sign_event(signer(e.site_id), e), key=e.aggregate_id.encode()
            )
        for key, value in raw:
            await producer.send_and_wait(topic, value, key=key.encode())
    finally:
        await producer.stop()


async def stored_events(*streams: tuple[str, list[bytes]]) -> list[StoredEvent]:
    """Events as a real store seals them (positions, hashes), one stream per aggregate."""
    store = InMemoryEventStore("LON")
    for agg, payloads in streams:
        for version, payload in enumerate(payloads):
            await store.append(agg, version, [new_event(version, payload=payload)])
    return await store.read_all(0, limit=10_000)


@asynccontextmanager
async def running(runner: ProjectionRunner) -> AsyncIterator[ProjectionRunner]:
    stop = asyncio.Event()
    task = asyncio.create_task(runner.run(stop))
    try:
        yield runner
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


def runner_for(
    pool: asyncpg.Pool, endpoints: Endpoints, projection: ThingProjection
) -> ProjectionRunner:
    group = f"LON.test.{projection.topics[0]}"
    return ProjectionRunner(
        pool, projection, trust=trust_list(), bootstrap=endpoints.kafka_bootstrap, group_id=group
    )


async def caught_up(pool: asyncpg.Pool, endpoints: Endpoints, projection: ThingProjection) -> None:
    await wait_caught_up(
        pool,
        projection.name,
        bootstrap=endpoints.kafka_bootstrap,
        topics=projection.topics,
        timeout=60,
    )


async def test_redelivered_events_are_applied_once(
    endpoints: Endpoints, pool: asyncpg.Pool, topic: str
):
    await create_schema(pool)
    events = await stored_events(*((aggregate_id(), [b"x", b"y", b"z"]) for _ in range(5)))
    await publish(endpoints.kafka_bootstrap, topic, events)
    await publish(endpoints.kafka_bootstrap, topic, events)  # the relay may publish twice
    projection = ThingProjection([topic])
    async with running(runner_for(pool, endpoints, projection)):
        await caught_up(pool, endpoints, projection)
    assert await pool.fetchval("SELECT count(*) FROM thing_rows") == 15
    assert await projected_digest(pool) == expected_digest(events)


async def test_restarted_runner_resumes_from_its_database_checkpoint(
    endpoints: Endpoints, pool: asyncpg.Pool, topic: str
):
    await create_schema(pool)
    first = await stored_events((aggregate_id(), [b"a", b"b"]))
    projection = ThingProjection([topic])
    await publish(endpoints.kafka_bootstrap, topic, first)
    async with running(runner_for(pool, endpoints, projection)):
        await caught_up(pool, endpoints, projection)
    second = await stored_events((aggregate_id(), [b"c"]))
    await publish(endpoints.kafka_bootstrap, topic, second)
    # Checkpoints live only in the database (the Kafka commit is informational): wipe the
    # dedupe table so a re-read from offset 0 would show up as duplicate rows.
    await pool.execute("DELETE FROM processed_events")
    async with running(runner_for(pool, endpoints, projection)):
        await caught_up(pool, endpoints, projection)
    assert await pool.fetchval("SELECT count(*) FROM thing_rows") == 3


async def test_poison_record_is_dead_lettered_and_parks_only_its_aggregate(
    endpoints: Endpoints, pool: asyncpg.Pool, topic: str
):
    await create_schema(pool)
    sick, healthy = aggregate_id("sick"), aggregate_id("ok")
    events = await stored_events(
        (sick, [b"fine", b"POISON", b"after"]), (healthy, [b"1", b"2", b"3"])
    )
    projection = ThingProjection([topic], poison_payload=b"POISON")
    runner = runner_for(pool, endpoints, projection)
    garbage_key = aggregate_id("garbage")
    await publish(
        endpoints.kafka_bootstrap, topic, events, raw=[(garbage_key, b"\xff\x00not an envelope")]
    )
    async with running(runner):
        await caught_up(pool, endpoints, projection)
        rows = await pool.fetch(
            "SELECT aggregate_id, version FROM thing_rows ORDER BY aggregate_id, version"
        )
        assert [
            (r["aggregate_id"], r["version"]) for r in rows if r["aggregate_id"] == healthy
        ] == [
            (healthy, 1),
            (healthy, 2),
            (healthy, 3),
        ]
        assert [r["version"] for r in rows if r["aggregate_id"] == sick] == [
            1
        ]  # v3 waits behind v2
        # Garbage proves nothing about who sent it: dead-lettered, never parks (a forger could
        # otherwise hold back any aggregate by sending junk under its key).
        assert runner.parked_aggregates() == {sick}
        parked = await pool.fetch(
            'SELECT is_poison, error, "offset", partition FROM parked_records WHERE aggregate_id = $1 ORDER BY seq',
            sick,
        )
        assert [p["is_poison"] for p in parked] == [True, False], [dict(p) for p in parked]
        assert "cannot project" in parked[0]["error"]

        letters = await read_deadletters(endpoints.kafka_bootstrap, {sick: 1, garbage_key: 1})
        assert "cannot project" in letters[sick][0]["error"]
        assert letters[sick][0]["original_topic"] == topic
        assert letters[garbage_key][0]["error"].startswith("untrusted: not an envelope")

        # Still parked while the cause persists; nothing applied.
        assert not await runner.resolve(sick)
        # The cause is fixed (e.g. a corrected projection is deployed): the aggregate resumes.
        projection.poison_payload = None
        assert await runner.resolve(sick)
        assert runner.parked_aggregates() == frozenset()
        # Later events of the resolved aggregate flow straight through again.
        more = await stored_events((sick, [b"fine", b"POISON", b"after", b"later"]))
        await publish(endpoints.kafka_bootstrap, topic, [more[-1]])
        await caught_up(pool, endpoints, projection)
    versions = [
        r["version"]
        for r in await pool.fetch(
            "SELECT version FROM thing_rows WHERE aggregate_id = $1 ORDER BY version", sick
        )
    ]
    assert versions == [1, 2, 3, 4]
    assert (
        await pool.fetchval("SELECT count(*) FROM parked_records WHERE aggregate_id = $1", sick)
        == 0
    )


async def test_skipping_a_poison_record_releases_the_rest(
    endpoints: Endpoints, pool: asyncpg.Pool, topic: str
):
    await create_schema(pool)
    agg = aggregate_id()
    events = await stored_events((agg, [b"ok", b"POISON"]))
    projection = ThingProjection([topic], poison_payload=b"POISON")
    runner = runner_for(pool, endpoints, projection)
    await publish(endpoints.kafka_bootstrap, topic, events)
    async with running(runner):
        await caught_up(pool, endpoints, projection)
        assert runner.parked_aggregates() == {agg}
        assert await runner.resolve(agg, skip_poison=True)
    assert runner.parked_aggregates() == frozenset()
    assert await pool.fetchval("SELECT count(*) FROM thing_rows WHERE aggregate_id = $1", agg) == 1


async def test_replay_into_an_empty_database_gives_the_same_digest(
    endpoints: Endpoints, pool: asyncpg.Pool, topic: str, database: str
):
    from shared.db import create_pool, drop_database, ensure_database, migrate, with_database

    await create_schema(pool)
    events = await stored_events(*((aggregate_id(), [b"p", b"q"]) for _ in range(20)))
    await publish(endpoints.kafka_bootstrap, topic, events)
    projection = ThingProjection([topic])
    async with running(runner_for(pool, endpoints, projection)):
        await caught_up(pool, endpoints, projection)
    live = await projected_digest(pool)

    rebuilt_name = f"{database.rsplit('/', 1)[1]}_replay"
    await ensure_database(endpoints.database_url, rebuilt_name)
    replay_pool = await create_pool(with_database(endpoints.database_url, rebuilt_name))
    try:
        await migrate(replay_pool)
        await create_schema(replay_pool)
        replay = ThingProjection([topic], name="things_replay")
        async with running(runner_for(replay_pool, endpoints, replay)):
            await caught_up(replay_pool, endpoints, replay)
        assert await projected_digest(replay_pool) == live == expected_digest(events)
    finally:
        await replay_pool.close()
        await drop_database(endpoints.database_url, rebuilt_name)


async def read_deadletters(
    bootstrap: str, expected: dict[str, int], timeout: float = 30.0
) -> dict[str, list[dict[str, str]]]:
    """Headers of the dead letters for each key, once `expected[key]` of them have arrived
    (the topic is shared by all tests; keys are unique per test)."""
    consumer = kafka_clients.consumer(DEADLETTER, bootstrap=bootstrap, auto_offset_reset="earliest")
    await consumer.start()
    found: dict[str, list[dict[str, str]]] = {key: [] for key in expected}
    try:
        async with asyncio.timeout(timeout):
            while any(len(found[k]) < n for k, n in expected.items()):
                for records in (await consumer.getmany(timeout_ms=500)).values():
                    for r in records:
                        key = (r.key or b"").decode()
                        if key in found:
                            found[key].append({k: v.decode() for k, v in r.headers})
    finally:
        await consumer.stop()
    return found


async def test_batch_projection_falls_back_to_one_record_at_a_time_around_poison(
    endpoints: Endpoints, pool: asyncpg.Pool, topic: str
):
    await create_schema(pool)
    sick, healthy = aggregate_id("sick"), aggregate_id("ok")
    events = await stored_events((healthy, [b"1", b"2"]), (sick, [b"POISON", b"after"]))
    projection = BatchThingProjection([topic], poison_payload=b"POISON")
    runner = runner_for(pool, endpoints, projection)
    await publish(endpoints.kafka_bootstrap, topic, events)
    async with running(runner):
        await caught_up(pool, endpoints, projection)
    assert projection.batch_calls >= 1
    assert runner.parked_aggregates() == {sick}
    rows = await pool.fetch("SELECT aggregate_id, version FROM thing_rows ORDER BY version")
    assert [(r["aggregate_id"], r["version"]) for r in rows] == [(healthy, 1), (healthy, 2)]


async def test_garbage_under_a_parked_aggregates_key_is_dead_lettered_not_parked(
    endpoints: Endpoints, pool: asyncpg.Pool, topic: str
):
    await create_schema(pool)
    agg = aggregate_id("twice")
    events = await stored_events((agg, [b"fine", b"POISON"]))
    projection = ThingProjection([topic], poison_payload=b"POISON")
    runner = runner_for(pool, endpoints, projection)
    await publish(endpoints.kafka_bootstrap, topic, events, raw=[(agg, b"\xffgarbage")])
    async with running(runner):
        await caught_up(pool, endpoints, projection)
        flags = await pool.fetch(
            "SELECT is_poison FROM parked_records WHERE aggregate_id = $1 ORDER BY seq", agg
        )
        assert [f["is_poison"] for f in flags] == [True]  # the garbage is not held behind it
        letters = await read_deadletters(endpoints.kafka_bootstrap, {agg: 2})
        poison, garbage = sorted(letters[agg], key=lambda x: "untrusted_reason" in x)
        assert "cannot project" in poison["error"]
        assert garbage["error"].startswith("untrusted: not an envelope")
        assert garbage["untrusted_reason"] == "undecodable"
        projection.poison_payload = None
        assert await runner.resolve(agg)  # nothing of the garbage stands in the way
    assert await pool.fetchval("SELECT count(*) FROM thing_rows WHERE aggregate_id = $1", agg) == 2


async def test_resolving_skips_redelivered_copies_of_parked_events(
    endpoints: Endpoints, pool: asyncpg.Pool, topic: str
):
    await create_schema(pool)
    agg = aggregate_id("dup")
    events = await stored_events((agg, [b"POISON", b"x", b"y"]))
    projection = ThingProjection([topic], poison_payload=b"POISON")
    runner = runner_for(pool, endpoints, projection)
    await publish(endpoints.kafka_bootstrap, topic, events)
    await publish(endpoints.kafka_bootstrap, topic, events)  # the relay republished them
    async with running(runner):
        await caught_up(pool, endpoints, projection)
        projection.poison_payload = None
        assert await runner.resolve(agg)
    versions = await pool.fetch(
        "SELECT version FROM thing_rows WHERE aggregate_id = $1 ORDER BY version", agg
    )
    assert [v["version"] for v in versions] == [1, 2, 3]


class FlakyDatabase(ThingProjection):
    """Fails like a database that dropped a deadlock victim, once per event."""

    def __init__(self, topics):
        super().__init__(topics)
        self.failed: set[str] = set()

    async def apply(self, conn, event):
        if event.event_id not in self.failed:
            self.failed.add(event.event_id)
            raise asyncpg.DeadlockDetectedError("deadlock detected (test)")
        await super().apply(conn, event)


async def test_database_failures_are_retried_not_dead_lettered(
    endpoints: Endpoints, pool: asyncpg.Pool, topic: str
):
    await create_schema(pool)
    events = await stored_events((aggregate_id(), [b"a", b"b"]), (aggregate_id(), [b"c"]))
    projection = FlakyDatabase([topic])
    runner = runner_for(pool, endpoints, projection)
    await publish(endpoints.kafka_bootstrap, topic, events)
    async with running(runner):
        await caught_up(pool, endpoints, projection)
    assert runner.parked_aggregates() == frozenset()
    assert await pool.fetchval("SELECT count(*) FROM parked_records") == 0
    assert await projected_digest(pool) == expected_digest(events)


def as_records(tp: TopicPartition, events: list[StoredEvent], first: int) -> list[ConsumerRecord]:
    return [
        ConsumerRecord(tp.topic, tp.partition, first + i, 0, 0, e.aggregate_id.encode(), b"", None, 0, 0, [])
        for i, e in enumerate(events)
    ]  # fmt: skip


async def claim(
    pool: asyncpg.Pool, polled: dict[TopicPartition, list[ConsumerRecord]],
    events: dict[tuple[TopicPartition, int], StoredEvent], parked: frozenset[str] = frozenset(),
) -> tuple[dict[TopicPartition, int], set[str]]:  # fmt: skip
    verdicts = {
        tp: Verdicts(trusted={r.offset: events[tp, r.offset] for r in records})
        for tp, records in polled.items()
    }
    async with pool.acquire() as conn, conn.transaction():
        found = await claim_batch(conn, "things", polled, verdicts, parked)
    return found.done_upto, found.fresh


async def test_a_batch_claims_only_new_events_past_its_checkpoints_and_never_rewinds_them(
    pool: asyncpg.Pool,
):
    one, two = TopicPartition("t", 0), TopicPartition("t", 1)
    a, b, sick = aggregate_id(), aggregate_id(), aggregate_id("parked")
    events = await stored_events((a, [b"1", b"2", b"3", b"4"]), (b, [b"x"]), (sick, [b"p"]))
    first = {one: as_records(one, events[:2], 0)}
    by_offset = {(one, i): e for i, e in enumerate(events[:4])} | {
        (two, 7): events[4],
        (two, 8): events[5],
    }
    assert await claim(pool, first, by_offset) == ({}, {e.event_id for e in events[:2]})
    # A redelivery overlapping the checkpoint (offsets 0-1 handled) and a copy of event 2
    # already applied: only offsets 2-3 are new; partition two has no checkpoint yet, and the
    # event of a parked aggregate is reported as not applied but not claimed (it is parked).
    await pool.execute(
        "INSERT INTO processed_events (projection, event_id) VALUES ('things', $1)",
        events[2].event_id,
    )
    second = {one: as_records(one, events[:4], 0), two: as_records(two, events[4:6], 7)}
    done, fresh = await claim(pool, second, by_offset, frozenset({sick}))
    assert done == {one: 1}
    assert fresh == {events[3].event_id, events[4].event_id, events[5].event_id}
    checkpoints = await pool.fetch(
        'SELECT partition, "offset" FROM projection_checkpoints WHERE projection = $1'
        " ORDER BY partition",
        "things",
    )
    assert [(r["partition"], r["offset"]) for r in checkpoints] == [(0, 3), (1, 8)]
    assert not await pool.fetchval(
        "SELECT count(*) FROM processed_events WHERE event_id = $1", events[5].event_id
    )
    # A stale owner's batch (offsets 0-1 again) neither claims nor moves anything back.
    assert await claim(pool, first, by_offset) == ({one: 3}, set())
    assert (
        await pool.fetchval(
            'SELECT "offset" FROM projection_checkpoints WHERE projection = $1 AND partition = 0',
            "things",
        )
        == 3
    )
