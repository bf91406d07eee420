"""A record too big for Kafka never stops the outbox relay: it is parked (with the reason, an
alert metric and NOT_SERVING health), its aggregate's later records wait, the rest flow."""

from __future__ import annotations

import asyncio
import uuid

import asyncpg
from prometheus_client import REGISTRY

from deploy.infra import Endpoints
from shared.bounds import MAX_ENVELOPE_BYTES
from shared.chain_key import ChainKey
from shared.outbox_relay import OutboxRelay
from shared.postgres_eventstore import PostgresEventStore
from shared.waits import eventually
from tests.factories import aggregate_id, new_event
from tests.integration.test_relay import read_topic
from tests.support.trust import signer

KEY = ChainKey.generate()  # the stores of one database chain with one key


def parked_total(relay: str) -> float:
    return REGISTRY.get_sample_value("cellbank_relay_parked_total", {"relay": relay}) or 0.0


async def test_a_record_too_big_for_kafka_is_parked_and_later_records_are_published(
    endpoints: Endpoints, pool: asyncpg.Pool, topic: str
):
    store = PostgresEventStore(pool, "LON", chain_key=KEY)
    # Written past the append check, as a store without it (or with a larger limit) would have.
    unchecked = PostgresEventStore(pool, "LON", chain_key=KEY, max_envelope_bytes=2**31)
    stuck, other = aggregate_id("stuck"), aggregate_id("other")
    await store.append(stuck, 0, [new_event(1)])
    huge = new_event(2, payload=b"x" * (2 * MAX_ENVELOPE_BYTES))
    await unchecked.append(stuck, 1, [huge])
    await store.append(stuck, 2, [new_event(3)])  # waits behind the huge one
    await store.append(other, 0, [new_event(1), new_event(2)])

    name = f"LON.test.{uuid.uuid4().hex[:8]}.relay"
    health: list[bool] = []

    async def report(serving: bool) -> None:
        health.append(serving)

    relay = OutboxRelay(
        store,
        signer=signer("LON"),
        topic=topic,
        bootstrap=endpoints.kafka_bootstrap,
        name=name,
        health=report,
    )
    stop = asyncio.Event()
    running = asyncio.create_task(relay.run(stop))
    try:
        head = await store.head_position()
        await eventually(relay.stored_position, until=lambda p: p == head, what="relay past it")
        later = aggregate_id("later")
        await store.append(later, 0, [new_event(1)])
        await store.append(stuck, 3, [new_event(4)])  # still waits
        head = await store.head_position()
        await eventually(relay.stored_position, until=lambda p: p == head, what="later records")

        published = await read_topic(endpoints.kafka_bootstrap, topic)
        versions = {(e.aggregate_id, e.aggregate_version) for e in published}
        assert {(other, 1), (other, 2), (later, 1), (stuck, 1)} <= versions
        assert not {(stuck, 2), (stuck, 3), (stuck, 4)} & versions
        assert parked_total(name) == 1
        assert health[-1] is False
        parked = await relay.parking.parked()
        assert [(r["event_id"], r["is_poison"]) for r in parked][:1] == [(huge.event_id, True)]
        assert "MessageSizeTooLargeError" in parked[0]["error"]
        assert [r["is_poison"] for r in parked[1:]] == [False, False]
        assert not running.done()  # it never stopped, never spun

        # An operator resolves it: what waited is published in order, the relay is healthy.
        assert await relay.resolve(stuck) == 2
        assert health[-1] is True and await relay.parking.parked() == []
        published = await read_topic(endpoints.kafka_bootstrap, topic)
        stuck_versions = [e.aggregate_version for e in published if e.aggregate_id == stuck]
        assert stuck_versions == [1, 3, 4]
        await store.append(stuck, 4, [new_event(5)])
        head = await store.head_position()
        await eventually(relay.stored_position, until=lambda p: p == head, what="flows again")
        published = await eventually(
            lambda: read_topic(endpoints.kafka_bootstrap, topic),
            until=lambda events: any(
                e.aggregate_id == stuck and e.aggregate_version == 5 for e in events
            ),
            what="the resolved aggregate's next event",
        )
        assert parked_total(name) == 1
    finally:
        stop.set()
        await asyncio.wait_for(running, 30)


async def test_a_relay_restarted_with_a_parked_record_still_reports_it(
    endpoints: Endpoints, pool: asyncpg.Pool, topic: str
):
    store = PostgresEventStore(pool, "LON", chain_key=KEY, max_envelope_bytes=2**31)
    stuck = aggregate_id("stuck")
    await store.append(stuck, 0, [new_event(1, payload=b"x" * (2 * MAX_ENVELOPE_BYTES))])
    name = f"LON.test.{uuid.uuid4().hex[:8]}.relay"
    health: list[bool] = []

    async def report(serving: bool) -> None:
        health.append(serving)

    for _ in range(2):
        health.clear()
        relay = OutboxRelay(
            store,
            signer=signer("LON"),
            topic=topic,
            bootstrap=endpoints.kafka_bootstrap,
            name=name,
            health=report,
        )
        stop = asyncio.Event()
        running = asyncio.create_task(relay.run(stop))
        try:
            await eventually(relay.stored_position, until=lambda p: p == 1, what="relay past it")
            await eventually(lambda: _last(health), until=lambda h: h is False, what="health")
        finally:
            stop.set()
            await asyncio.wait_for(running, 30)
    assert parked_total(name) == 1  # parked once, reported again after the restart


async def _last(values: list[bool]) -> bool | None:
    return values[-1] if values else None
