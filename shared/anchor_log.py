"""Anchors on Kafka: the publisher beside each store's relay, and the newest verified anchor
of a store read back (by the publisher itself and by `cellbank audit verify`)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.partitioner import DefaultPartitioner

from shared import kafka_clients, metrics
from shared.anchors import Anchor, anchor_key, sign_anchor, verify_anchor
from shared.eventstore import Clock, utc_now
from shared.kafka_admin import topic_partitions
from shared.kafka_clients import reliable_producer
from shared.postgres_eventstore import PostgresEventStore
from shared.topics import ANCHORS
from shared.trust import Signer, TrustList, Untrusted

log = logging.getLogger(__name__)

ANCHOR_HEALTH = "cellbank.anchors"  # NOT_SERVING while the head cannot be anchored
Health = Callable[[bool], Awaitable[None]]
_SCAN_CHUNK = 500


async def latest_anchor(
    bootstrap: str,
    trust: TrustList,
    site_id: str,
    service: str,
    *,
    topic: str = ANCHORS,
    timeout: float = 60.0,
) -> Anchor | None:
    """The newest anchor of the store that the trust list vouches for (forged or garbled
    records under its key are passed over), read backwards from the end of its partition."""
    key = anchor_key(site_id, service).encode()
    consumer = kafka_clients.consumer(bootstrap=bootstrap, enable_auto_commit=False)
    await consumer.start()
    deadline = time.monotonic() + timeout
    try:
        partitions = sorted(await topic_partitions(consumer, topic))
        tp = TopicPartition(topic, DefaultPartitioner()(key, partitions, partitions))
        consumer.assign([tp])
        begin = (await consumer.beginning_offsets([tp]))[tp]
        end = (await consumer.end_offsets([tp]))[tp]
        while end > begin:
            start = max(begin, end - _SCAN_CHUNK)
            consumer.seek(tp, start)
            found: Anchor | None = None
            while await consumer.position(tp) < end:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"reading {topic} for {key.decode()}: over {timeout:.0f}s")
                batch = await consumer.getmany(tp, timeout_ms=1000, max_records=_SCAN_CHUNK)
                for record in batch.get(tp, []):
                    if record.offset >= end or record.key != key or record.value is None:
                        continue
                    try:
                        anchor = verify_anchor(trust, record.value)
                    except (ValueError, Untrusted):
                        continue
                    if (anchor.site_id, anchor.service) == (site_id, service):
                        found = anchor
            if found is not None:
                return found
            end = start
        return None
    finally:
        await consumer.stop()


class AnchorPublisher:
    """Anchors the store's head every `interval` seconds when it moved, and once more on stop.

    An anchor only ever extends the previous one: before anchoring, the store must still hold
    the last anchored hash at its position and its chain after it must verify with the key.
    A store that lost or changed anchored events is not anchored again (health NOT_SERVING,
    error logged, counted): its last good anchor stays the newest, for `audit verify` to hold
    the store against.
    """

    def __init__(
        self,
        store: PostgresEventStore,
        *,
        service: str,
        signer: Signer,
        bootstrap: str,
        interval: float,
        topic: str = ANCHORS,
        clock: Clock = utc_now,
        health: Health | None = None,
    ) -> None:
        self.store = store
        self.service = service
        self.signer = signer
        self.bootstrap = bootstrap
        self.interval = interval
        self.topic = topic
        self.clock = clock
        self.health = health
        self.last: Anchor | None = None
        self._refused = ""  # the finding that stopped the last anchor, if any
        # Its own anchors are read back with its own key (a rotated-away key's last anchor is
        # not found: the chain is then verified from the start before the first new anchor).
        self._own = TrustList([signer.trusted_key(datetime(1970, 1, 1, tzinfo=UTC))])

    async def run(self, stop: asyncio.Event) -> None:
        producer = await self._producer(stop)
        if producer is None:
            return
        try:
            self.last = await self._previous()
            while not stop.is_set():
                await self._anchor_logged(producer)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self.interval)
            await self._anchor_logged(producer)  # the head as the service stops
        finally:
            await producer.stop()

    async def _producer(self, stop: asyncio.Event) -> AIOKafkaProducer | None:
        """A started producer; Kafka away at start is waited for (None if stopped first)."""
        while not stop.is_set():
            producer = reliable_producer(self.bootstrap)
            try:
                await producer.start()
                return producer
            except Exception as exc:
                await producer.stop()
                log.warning("anchors: Kafka not reachable yet", extra={"error": repr(exc)})
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), min(self.interval, 5.0))
        return None

    async def _previous(self) -> Anchor | None:
        try:
            return await latest_anchor(
                self.bootstrap, self._own, self.store.site_id, self.service, topic=self.topic
            )
        except Exception as exc:  # Kafka unreachable: verify from the start instead
            log.warning("previous anchor not read", extra={"error": repr(exc)})
            return None

    async def _anchor_logged(self, producer: AIOKafkaProducer) -> None:
        try:
            await self.anchor_once(producer)
        except Exception as exc:  # Kafka or the database away: the next interval retries
            log.warning("chain head not anchored", extra={"error": repr(exc)})

    async def anchor_once(self, producer: AIOKafkaProducer) -> Anchor | None:
        """Publish the head if it moved since the last anchor; None when unmoved or refused."""
        position, head = await self.store.head()
        count = await self.store.count()
        last = self.last
        if last is not None and (position, head, count) == (
            last.position,
            last.hash,
            last.event_count,
        ):
            return None
        problem = await self.problem(position, count)
        site = self.store.site_id
        if problem:
            metrics.ANCHORS.labels(site, self.service, "refused").inc()
            if problem != self._refused:  # once per finding, not at every interval
                log.error(
                    "chain head NOT anchored: the store does not extend its last anchor",
                    extra={"site": site, "service": self.service, "problem": problem},
                )
            self._refused = problem
            if self.health is not None:
                await self.health(False)
            return None
        anchor = Anchor(site, self.service, position, head, count, self.clock())
        await producer.send_and_wait(
            self.topic, sign_anchor(self.signer, anchor), key=anchor.key.encode()
        )
        self.last, self._refused = anchor, ""
        metrics.ANCHORS.labels(site, self.service, "published").inc()
        if self.health is not None:
            await self.health(True)
        return anchor

    async def problem(self, position: int, count: int) -> str:
        """Why a head at `position` may not be anchored ("" when it may)."""
        last = self.last
        if last is None:
            report = await self.store.verify_chain()
        else:
            if not last.extended_by(position, count):
                return (
                    f"store ends at position {position} ({count} events), anchored at "
                    f"{last.position} ({last.event_count} events)"
                )
            stored = (await self.store.hashes_at([last.position])).get(last.position)
            if last.position and stored != last.hash:
                what = "is gone" if stored is None else "has another hash"
                return f"the anchored event at position {last.position} {what}"
            report = await self.store.verify_chain(last.position, expected_prev=last.hash)
        if not report.intact:
            return f"chain broken at position {report.broken_at_position}: {report.problem}"
        return ""
