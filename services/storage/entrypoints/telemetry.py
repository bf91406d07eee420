"""Publishes validated temperature readings to cellbank.telemetry.v1 (key: tank id)."""

from __future__ import annotations

import asyncio

from aiokafka import AIOKafkaProducer
from cellbank.storage.v1 import events_pb2 as pb

from services.storage.coldchain.watch import Reading
from shared import kafka_clients
from shared.errors import StoreBusy
from shared.topics import TELEMETRY


class TelemetryPublisher:
    def __init__(self, bootstrap: str) -> None:
        self.bootstrap = bootstrap
        self._producer: AIOKafkaProducer | None = None
        self._ready = asyncio.Event()

    async def run(self, stop: asyncio.Event) -> None:
        """A worker: owns the producer for the service's lifetime."""
        producer = kafka_clients.producer(self.bootstrap, acks="all", enable_idempotence=True)
        await producer.start()
        self._producer = producer
        self._ready.set()
        try:
            await stop.wait()
        finally:
            self._ready.clear()
            self._producer = None
            await producer.stop()

    async def publish(self, reading: Reading) -> None:
        if self._producer is None:
            raise StoreBusy("telemetry publisher not ready; retry")
        message = pb.TemperatureReading(
            site_id=reading.site_id, tank_id=reading.tank_id, celsius=reading.celsius
        )
        message.measured_at.FromDatetime(reading.measured_at)
        await self._producer.send_and_wait(
            TELEMETRY, message.SerializeToString(), key=reading.tank_id.encode()
        )
