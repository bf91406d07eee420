"""Replay of a site with >= 1,000,000 events (part of `make bench`).

The log is synthesised (tests/site_log.py), not made through the APIs (a million events through
gRPC would take the whole bench budget): the real domain events of donor intake, manufacturing
and storage in the platform's envelopes, as a site's relays publish them — 43 events a donor,
every one applied by the read models that read it.

The replay is deploy.replay.replay_site — what `cellbank replay --site` runs — into fresh
databases (so in bulk: shared/bulk_replay.py; issue 17's goal is >= 100,000 records/s and
>= 0.8 x the baseline). Baseline: the same consumers (one per replayed projection, the same topics) reading
and decoding every envelope, no database.
"""

from __future__ import annotations

import asyncio
import itertools
import sys
import time
import uuid

from deploy.infra import Endpoints
from deploy.replay import replay_site, specs
from shared import kafka_clients
from shared.db import drop_database
from shared.events import StoredEvent
from shared.kafka_admin import end_offsets, ensure_topics
from shared.replay import REPLAY_NODES, REPLAY_VERIFIED, service_projections
from shared.topics import TOPICS
from shared.trust import sign_bodies, signing_body, verify_envelope
from tests.bench_report import Row
from tests.site_log import EVENTS_PER_DONOR, SITE, site_log
from tests.support.trust import signer, trust_list


def progress(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


async def publish_site_log(bootstrap: str, events: int) -> int:
    """Publish a site's log of at least `events` events; returns how many were published."""
    await ensure_topics(bootstrap, TOPICS)
    producer = kafka_clients.producer(
        bootstrap, acks="all", enable_idempotence=True, linger_ms=50,
        max_batch_size=1024 * 1024,
    )  # fmt: skip
    await producer.start()
    sent, total = 0, -(-events // EVENTS_PER_DONOR) * EVENTS_PER_DONOR
    started = time.monotonic()
    try:
        futures: list[asyncio.Future[object]] = []
        log = site_log(total // EVENTS_PER_DONOR)
        while chunk := list(itertools.islice(log, 20_000)):
            for (topic, event), value in zip(chunk, await _signed(chunk), strict=True):
                futures.append(await producer.send(topic, value, key=event.aggregate_id.encode()))
            sent += len(chunk)
            if len(futures) >= 20_000:
                await asyncio.gather(*futures)
                futures.clear()
                progress(
                    f"replay: published {sent:,}/{total:,} events"
                    f" ({sent / (time.monotonic() - started):,.0f}/s)"
                )
        await asyncio.gather(*futures)
    finally:
        await producer.stop()
    return sent


async def _signed(chunk: list[tuple[str, StoredEvent]]) -> list[bytes]:
    """The site's relays' signed envelopes, in the chunk's order: as each service's relay
    signs its own topic's events (a signed batch never spans two topics), in threads
    (signing releases the GIL)."""
    key = signer(SITE)
    by_topic: dict[str, list[int]] = {}
    for i, (topic, _) in enumerate(chunk):
        by_topic.setdefault(topic, []).append(i)
    order = [i for indexes in by_topic.values() for i in indexes]
    parts = await asyncio.gather(*(
        asyncio.to_thread(sign_bodies, key, [signing_body(key, chunk[i][1]) for i in indexes])
        for indexes in by_topic.values()
    ))  # fmt: skip
    values: list[bytes] = [b""] * len(chunk)
    for i, value in zip(order, (v for part in parts for v in part), strict=True):
        values[i] = value
    return values


def _replayed_projections() -> list[tuple[str, tuple[str, ...]]]:
    """(service.projection, topics) of every projection a site replay runs (not policies)."""
    return [
        (f"{name}.{p.name}", tuple(p.topics))
        for name, spec in specs().items()
        for p in service_projections(spec)
    ]


async def consume_baseline(bootstrap: str, projections: list[tuple[str, tuple[str, ...]]]) -> int:
    """Every replayed projection's topics read, decoded and verified from offset 0,
    concurrently."""
    trust = trust_list()
    # Remembering as many verified batches as the replay's workers do.
    trust.verified_cache_size, trust.verified_nodes_size = REPLAY_VERIFIED, REPLAY_NODES

    async def one(topics: tuple[str, ...]) -> int:
        goal = sum((await end_offsets(bootstrap, list(topics))).values())
        consumer = kafka_clients.consumer(
            *topics, bootstrap=bootstrap, group_id=f"bench.baseline.{uuid.uuid4().hex[:8]}",
            enable_auto_commit=False, auto_offset_reset="earliest", max_poll_records=2000,
        )  # fmt: skip
        await consumer.start()
        try:
            # A hang guard, not a timing check: generous (a loaded machine reads slowly).
            seen, deadline = 0, time.monotonic() + max(900.0, goal / 500)
            while seen < goal:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"baseline consumer read {seen:,} of {goal:,} records")
                batches = await consumer.getmany(timeout_ms=200, max_records=2000)
                for records in batches.values():
                    for record in records:
                        verify_envelope(trust, record.value or b"")
                    seen += len(records)
            return seen
        finally:
            await consumer.stop()

    return sum(await asyncio.gather(*(one(topics) for _, topics in projections)))


async def run(endpoints: Endpoints, scale: float) -> list[Row]:
    events = max(50_000, int(1_000_000 * scale))
    bootstrap = endpoints.kafka_bootstrap
    progress(f"replay: publishing a site log of {events:,} events (untimed)")
    published = await publish_site_log(bootstrap, events)
    projections = _replayed_projections()
    progress(f"replay: baseline, {len(projections)} bare consumers reading and decoding")
    started = time.monotonic()
    await consume_baseline(bootstrap, projections)
    baseline_s = time.monotonic() - started
    targets = {name: f"cellbank_bench_replay_{name}_{uuid.uuid4().hex[:6]}" for name in specs()}
    try:
        result = await replay_site(
            SITE, bootstrap=bootstrap, server_url=endpoints.database_url, targets=targets,
            restore_events_from_log=False, progress=progress,
        )  # fmt: skip
    finally:
        for database in targets.values():
            await drop_database(endpoints.database_url, database)
    records, seconds = result.records_replayed, result.seconds
    bare = "bare consumers + decode + verify, no database"
    return [
        Row(f"replay of a site: {records:,} records into {len(projections)} read models",
            "records/s", records / seconds, records / baseline_s, bare, target=100_000),
        Row(f"replay of a site: the same, per event of its {published:,}-event log",
            "events/s", published / seconds, published / baseline_s, bare, target=50_000),
    ]  # fmt: skip
