"""Outbox relay: tails one event store by position and publishes each envelope to Kafka."""

from __future__ import annotations

import asyncio
import contextlib
import logging

import asyncpg
from aiokafka import AIOKafkaProducer

from shared import metrics
from shared.envelope_codec import encode
from shared.events import StoredEvent
from shared.kafka_clients import reliable_producer
from shared.postgres_eventstore import EVENTS_CHANNEL, PostgresEventStore

log = logging.getLogger(__name__)


class OutboxRelay:
    """At-least-once: publish a batch, wait for every ack, then store the position.

    The position lives in the store's own database (relay_checkpoints), so a crash anywhere
    only means republishing from the last stored position; consumers dedupe by event_id.
    """

    def __init__(
        self,
        store: PostgresEventStore,
        *,
        topic: str,
        bootstrap: str,
        name: str,
        batch_size: int = 2000,
        idle_poll_s: float = 0.5,
        max_backoff_s: float = 5.0,
    ) -> None:
        self.store = store
        self.pool: asyncpg.Pool = store.pool
        self.topic = topic
        self.bootstrap = bootstrap
        self.name = name
        self.batch_size = batch_size
        self.idle_poll_s = idle_poll_s
        self.max_backoff_s = max_backoff_s
        self.position = 0
        self._wakeup = asyncio.Event()

    async def stored_position(self) -> int:
        value = await self.pool.fetchval(
            "SELECT position FROM relay_checkpoints WHERE relay_name = $1", self.name
        )
        return int(value or 0)

    async def _save_position(self, position: int) -> None:
        await self.pool.execute(
            "INSERT INTO relay_checkpoints (relay_name, position) VALUES ($1, $2)"
            " ON CONFLICT (relay_name) DO UPDATE SET position = $2, updated_at = now()",
            self.name,
            position,
        )
        self.position = position
        metrics.RELAY_POSITION.labels(self.name).set(position)

    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Publish until stop is set (or the task is cancelled); survives broker outages."""
        stop = stop or asyncio.Event()
        if self.pool.get_max_size() < 2:
            raise ValueError("the relay needs a pool of >= 2 connections (one LISTENs, one reads)")
        listener = await self.pool.acquire()
        await listener.add_listener(EVENTS_CHANNEL, self._notified)
        backoff = 0.2
        try:
            while not stop.is_set():
                producer = reliable_producer(self.bootstrap)
                try:
                    await producer.start()
                    self.position = await self.stored_position()
                    log.info("relay started", extra={"relay": self.name, "position": self.position})
                    await self._pump(producer, stop)
                    backoff = 0.2
                except (asyncio.CancelledError, KeyboardInterrupt):
                    raise
                except Exception as exc:
                    metrics.RELAY_ERRORS.labels(self.name).inc()
                    log.warning(
                        "relay publish failed; retrying from stored position",
                        extra={"relay": self.name, "error": repr(exc), "backoff_s": backoff},
                    )
                    await _wait(stop, backoff)
                    backoff = min(backoff * 2, self.max_backoff_s)
                finally:
                    with contextlib.suppress(Exception):
                        await producer.stop()
        finally:
            with contextlib.suppress(Exception):
                await listener.remove_listener(EVENTS_CHANNEL, self._notified)
            await self.pool.release(listener)

    def _notified(self, *_: object) -> None:
        self._wakeup.set()

    async def _pump(self, producer: AIOKafkaProducer, stop: asyncio.Event) -> None:
        while not stop.is_set():
            self._wakeup.clear()
            batch = await self.store.read_all(self.position, self.batch_size)
            if not batch:
                # NOTIFY only wakes us early; the position always comes from the table.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(_first(self._wakeup, stop), self.idle_poll_s)
                continue
            await self.publish(producer, batch)
            await self._save_position(batch[-1].position)

    async def publish(self, producer: AIOKafkaProducer, batch: list[StoredEvent]) -> None:
        """Send every event (key = aggregate id) and wait until all are acknowledged."""
        futures = [
            await producer.send(
                self.topic,
                value=encode(event),
                key=event.aggregate_id.encode(),
                headers=[
                    ("event_type", event.event_type.encode()),
                    ("event_id", event.event_id.encode()),
                    ("site_id", event.site_id.encode()),
                ],
            )
            for event in batch
        ]
        await asyncio.gather(*futures)
        metrics.RELAY_PUBLISHED.labels(self.name).inc(len(batch))


async def _first(*events: asyncio.Event) -> None:
    waiters = [asyncio.ensure_future(e.wait()) for e in events]
    try:
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waiters:
            w.cancel()


async def _wait(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)
