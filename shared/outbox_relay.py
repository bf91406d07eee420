"""Outbox relay: tails one event store by position and publishes each envelope to Kafka."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import asyncpg
from aiokafka import AIOKafkaProducer
from aiokafka.errors import (
    CorruptRecordException,
    InvalidTimestampError,
    MessageSizeTooLargeError,
    RecordListTooLargeError,
)

from shared import metrics, tracing
from shared.events import StoredEvent
from shared.kafka_clients import reliable_producer
from shared.postgres_eventstore import (
    EVENT_COLUMNS,
    EVENTS_CHANNEL,
    PostgresEventStore,
    row_to_event,
)
from shared.relay_parking import RelayParking
from shared.trust import Signer, sign_bodies, signing_body

log = logging.getLogger(__name__)

# Refusals of one record rather than of Kafka: sending it again can never succeed.
UNPUBLISHABLE = (
    MessageSizeTooLargeError, RecordListTooLargeError, CorruptRecordException,
    InvalidTimestampError,
)  # fmt: skip
# The gRPC health part that is NOT_SERVING while a parked record awaits an operator.
RELAY_HEALTH = "cellbank.relay"
Health = Callable[[bool], Awaitable[None]]  # serving?
Sealed = tuple[list[StoredEvent], list[bytes]]  # a batch and its signed envelopes' bytes


class BrokerRefusedRecord(Exception):
    """Kafka refused a record after later ones were sent: start over with a fresh producer."""


class OutboxRelay:
    """At-least-once: publish a batch, wait for every ack, then store the position.

    The position lives in the store's own database (relay_checkpoints), so a crash anywhere
    only means republishing from the last stored position; consumers dedupe by event_id.
    Every envelope is signed with the site's key (shared.trust: one Ed25519 signature per batch
    of up to BATCH_LEAVES envelopes, a Merkle audit path in each) before it is sent.
    A record Kafka can never take is parked (relay_parked, with the error), its aggregate's
    later records wait behind it, `health(False)` is reported and every other aggregate flows.
    """

    def __init__(
        self,
        store: PostgresEventStore,
        *,
        signer: Signer,
        topic: str,
        bootstrap: str,
        name: str,
        batch_size: int = 2000,
        idle_poll_s: float = 0.5,
        max_backoff_s: float = 5.0,
        health: Health | None = None,
    ) -> None:
        if signer.site != store.site_id:
            raise ValueError(
                f"the relay of {store.site_id}'s store cannot sign with {signer.site}'s key"
            )
        self.store = store
        self.signer = signer
        self.pool: asyncpg.Pool = store.pool
        self.topic = topic
        self.bootstrap = bootstrap
        self.name = name
        self.batch_size = batch_size
        self.idle_poll_s = idle_poll_s
        self.max_backoff_s = max_backoff_s
        self.position = 0
        self.parking = RelayParking(self.pool, name)
        self.health = health
        self._wakeup = asyncio.Event()
        self._publishing = asyncio.Lock()  # the pump's batch vs an operator's resolve
        self._sealer = ThreadPoolExecutor(2, thread_name_prefix=f"seal-{name}")

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
                    await self.parking.load()
                    await self._report_health()
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
        # Pipelined: while the acks of one batch are awaited, the next is read and sealed
        # (encoded and signed, in worker threads). The position is still stored only after
        # every ack of its batch, so a crash anywhere republishes, never skips.
        ahead: asyncio.Future[Sealed] | None = None
        try:
            while not stop.is_set():
                if ahead is None:
                    ahead = self._read_ahead(self.position)
                batch, values = await ahead
                ahead = None
                if not batch:
                    # NOTIFY only wakes us early; the position always comes from the table.
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(_first(self._wakeup, stop), self.idle_poll_s)
                    continue
                async with self._publishing:
                    sent = await self._send_all(producer, batch, values)
                    ahead = self._read_ahead(batch[-1].position)
                    await self._settle(sent)
                    await self._save_position(batch[-1].position)
        finally:
            if ahead is not None:
                ahead.cancel()
                with contextlib.suppress(BaseException):
                    await ahead

    def _read_ahead(self, after: int) -> asyncio.Future[Sealed]:
        self._wakeup.clear()  # a NOTIFY from now on wakes an idle wait after this read
        return asyncio.ensure_future(self._read_sealed(after))

    async def _read_sealed(self, after: int) -> Sealed:
        batch = await self.store.read_all(after, self.batch_size)
        return batch, await self._seal(batch)

    async def _seal(self, batch: list[StoredEvent]) -> list[bytes]:
        """The envelopes' bytes, signed: off the event loop, in worker threads (signing
        releases the GIL, so two threads sign about twice as fast as one)."""
        if not batch:
            return []
        half = (len(batch) + 1) // 2
        loop = asyncio.get_running_loop()
        parts = await asyncio.gather(
            *(
                loop.run_in_executor(self._sealer, self._seal_now, batch[i : i + half])
                for i in range(0, len(batch), half)
            )
        )
        return [value for part in parts for value in part]

    def _seal_now(self, events: list[StoredEvent]) -> list[bytes]:
        signer = self.signer
        return sign_bodies(signer, [signing_body(signer, e) for e in events])

    async def publish(
        self,
        producer: AIOKafkaProducer,
        batch: list[StoredEvent],
        values: list[bytes] | None = None,
    ) -> None:
        """Send every event (key = aggregate id) and wait until all are acknowledged; a record
        Kafka can never take is parked instead, and its aggregate's later records held.
        values: the batch already sealed (else it is sealed here)."""
        sealed = values if values is not None else await self._seal(batch)
        await self._settle(await self._send_all(producer, batch, sealed))

    async def _send_all(
        self, producer: AIOKafkaProducer, batch: list[StoredEvent], values: list[bytes]
    ) -> list[tuple[StoredEvent, asyncio.Future[Any]]]:
        sent: list[tuple[StoredEvent, asyncio.Future[Any]]] = []
        for event, value in zip(batch, values, strict=True):
            if event.aggregate_id in self.parking.aggregates:
                await self.parking.hold(event)
                continue
            try:
                sent.append((event, await self._send(producer, event, value)))
            except UNPUBLISHABLE as exc:  # refused before sending (larger than it may send)
                await self._park(event, exc)
        return sent

    async def _settle(self, sent: list[tuple[StoredEvent, asyncio.Future[Any]]]) -> None:
        """Wait for every ack; park what the broker refused; raise if Kafka itself failed."""
        results = await asyncio.gather(*(f for _, f in sent), return_exceptions=True)
        refused = [(e, r) for (e, _), r in zip(sent, results, strict=True) if _refused(r)]
        for event, error in refused:
            await self._park(event, error)
        for result in results:
            if isinstance(result, BaseException) and not _refused(result):
                raise result  # Kafka itself failed: retried from the stored position
        if refused:
            raise BrokerRefusedRecord(f"{len(refused)} record(s) parked; restarting the producer")
        metrics.RELAY_PUBLISHED.labels(self.name).inc(len(sent))

    async def _send(
        self, producer: AIOKafkaProducer, event: StoredEvent, value: bytes
    ) -> asyncio.Future[Any]:
        future: asyncio.Future[Any] = await producer.send(
            self.topic,
            value=value,
            key=event.aggregate_id.encode(),
            headers=[
                ("event_type", event.event_type.encode()),
                ("event_id", event.event_id.encode()),
                ("site_id", event.site_id.encode()),
            ],
        )
        tracing.track_publish(self.topic, event, future)
        return future

    async def _park(self, event: StoredEvent, exc: BaseException) -> None:
        await self.parking.park(event, f"{type(exc).__name__}: {exc}"[:2000])
        await self._report_health()

    async def _report_health(self) -> None:
        if self.health is not None:
            await self.health(not self.parking.aggregates)

    async def resolve(self, aggregate_id: str) -> int:
        """An operator's decision on a parked aggregate: its unpublishable record stays in the
        store (never on the topic), the records held behind it are published now, in order,
        and the aggregate flows again. Returns how many were published."""
        async with self._publishing:
            positions = await self.parking.held_positions(aggregate_id)
            rows = await self.pool.fetch(
                f"SELECT {EVENT_COLUMNS} FROM events WHERE position = ANY($1::bigint[])"
                " ORDER BY position",
                positions,
            )
            await self.parking.forget(aggregate_id)
            held = [row_to_event(r) for r in rows]
            if held:
                producer = reliable_producer(self.bootstrap)
                await producer.start()
                try:
                    await self.publish(producer, held)
                finally:
                    await producer.stop()
            await self._report_health()
            log.warning(
                "parked aggregate resolved by an operator",
                extra={"relay": self.name, "aggregate_id": aggregate_id, "published": len(held)},
            )
            return len(held)


def _refused(result: object) -> bool:
    return isinstance(result, UNPUBLISHABLE)


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
