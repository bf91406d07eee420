"""Publishes validated temperature readings to cellbank.telemetry.v1 as batches (key: tank id)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from aiokafka import AIOKafkaProducer

from services.storage.adapters.telemetry_codec import BATCH_HEADERS, encode_batch
from services.storage.coldchain.watch import Reading, unix_ms
from shared import kafka_clients
from shared.errors import StoreBusy
from shared.topics import TELEMETRY

LINGER_S = 0.05


@dataclass(slots=True)
class _Interval:
    """A tank's readings collected for one record, and the callers waiting for it."""

    site_id: str
    readings: list[tuple[int, float]] = field(default_factory=list)  # (unix ms, °C)
    stored: asyncio.Future[None] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


class TelemetryPublisher:
    """A gateway: the readings of a tank that arrive within `linger_s` of its first one leave
    as one TemperatureReadingBatch record; each caller returns once that record is stored."""

    def __init__(self, bootstrap: str, linger_s: float = LINGER_S) -> None:
        self.bootstrap = bootstrap
        self.linger_s = linger_s
        self._producer: AIOKafkaProducer | None = None
        self._open: dict[str, _Interval] = {}
        self._flushes: set[asyncio.Task[None]] = set()

    async def run(self, stop: asyncio.Event) -> None:
        """A worker: owns the producer for the service's lifetime."""
        producer = kafka_clients.producer(self.bootstrap, acks="all", enable_idempotence=True)
        await producer.start()
        self._producer = producer
        try:
            await stop.wait()
        finally:
            self._producer = None
            # Readings already accepted still leave, before the producer stops.
            await asyncio.gather(*self._flushes, return_exceptions=True)
            await producer.stop()

    async def publish(self, reading: Reading) -> None:
        if self._producer is None:
            raise StoreBusy("telemetry publisher not ready; retry")
        interval = self._open.get(reading.tank_id)
        if interval is None:
            interval = self._open[reading.tank_id] = _Interval(reading.site_id)
            flush = asyncio.create_task(self._flush(reading.tank_id, self._producer))
            self._flushes.add(flush)
            flush.add_done_callback(self._flushes.discard)
        interval.readings.append((unix_ms(reading.measured_at), reading.celsius))
        await asyncio.shield(interval.stored)  # a caller that gives up leaves the others

    async def _flush(self, tank_id: str, producer: AIOKafkaProducer) -> None:
        interval = self._open[tank_id]
        try:
            try:
                await asyncio.sleep(self.linger_s)  # the interval: later readings join it
            finally:
                del self._open[tank_id]
            readings = sorted(interval.readings)  # a batch is in measurement order
            await producer.send_and_wait(
                TELEMETRY,
                encode_batch(interval.site_id, tank_id, [c for _, c in readings],
                             [ms for ms, _ in readings]),
                key=tank_id.encode(),
                headers=BATCH_HEADERS,
            )  # fmt: skip
        except BaseException as exc:
            stopped = not isinstance(exc, Exception)
            interval.stored.set_exception(
                StoreBusy("telemetry publisher stopped") if stopped else exc
            )
            if stopped:
                raise
        else:
            interval.stored.set_result(None)
