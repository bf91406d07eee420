"""Simulated LN2 tank sensors for the demo: `python -m deploy.tank_simulator LON-T1 MAN-T1 …`.

Publishes one reading per tank every CELLBANK_SIMULATOR_INTERVAL_S seconds (default 5) to
cellbank.telemetry.v1, in vapour phase around -185 °C. Stops on SIGTERM/SIGINT.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import sys
from datetime import UTC, datetime

from cellbank.storage.v1 import events_pb2 as pb

from shared import kafka_clients
from shared.topics import TELEMETRY


async def simulate(bootstrap: str, tanks: list[str], interval: float, stop: asyncio.Event) -> None:
    producer = kafka_clients.producer(bootstrap, acks="all", enable_idempotence=True)
    await producer.start()
    try:
        while not stop.is_set():
            for tank_id in tanks:
                reading = pb.TemperatureReading(
                    site_id=tank_id.split("-", 1)[0],
                    tank_id=tank_id,
                    celsius=round(random.gauss(-185, 2), 1),
                )
                reading.measured_at.FromDatetime(datetime.now(UTC))
                await producer.send(TELEMETRY, reading.SerializeToString(), key=tank_id.encode())
            await producer.flush()
            try:
                await asyncio.wait_for(stop.wait(), interval)
            except TimeoutError:
                pass
    finally:
        await producer.stop()


async def main(tanks: list[str]) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    bootstrap = os.environ.get("CELLBANK_KAFKA_BOOTSTRAP", "127.0.0.1:9092")
    await simulate(
        bootstrap, tanks, float(os.environ.get("CELLBANK_SIMULATOR_INTERVAL_S", "5")), stop
    )


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit("usage: python -m deploy.tank_simulator TANK_ID [TANK_ID …]")
    asyncio.run(main(sys.argv[1:]))
