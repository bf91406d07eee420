"""Simulated LN2 tank sensors for the demo: `python -m deploy.tank_simulator LON-T1 MAN-T1 …`.

Every CELLBANK_SIMULATOR_INTERVAL_S seconds (default 5), each tank sends one batch record to
cellbank.telemetry.v1 with its samples of the interval (one per CELLBANK_SIMULATOR_SAMPLE_S, default
1), in vapour phase around -185 °C. Stops on SIGTERM/SIGINT.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import sys
from datetime import UTC, datetime

from services.storage.adapters.telemetry_codec import BATCH_HEADERS, encode_batch
from shared import kafka_clients
from shared.topics import TELEMETRY


async def simulate(
    bootstrap: str, tanks: list[str], interval: float, stop: asyncio.Event, sample: float = 1.0
) -> None:
    producer = kafka_clients.producer(bootstrap, acks="all", enable_idempotence=True)
    await producer.start()
    samples = max(1, round(interval / sample))
    try:
        while not stop.is_set():
            now_ms = int(datetime.now(UTC).timestamp() * 1000)
            times = [now_ms - round((samples - 1 - k) * sample * 1000) for k in range(samples)]
            for tank_id in tanks:
                celsius = [round(random.gauss(-185, 2), 1) for _ in times]
                value = encode_batch(tank_id.split("-", 1)[0], tank_id, celsius, times)
                await producer.send(TELEMETRY, value, key=tank_id.encode(), headers=BATCH_HEADERS)
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
        bootstrap,
        tanks,
        float(os.environ.get("CELLBANK_SIMULATOR_INTERVAL_S", "5")),
        stop,
        float(os.environ.get("CELLBANK_SIMULATOR_SAMPLE_S", "1")),
    )


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit("usage: python -m deploy.tank_simulator TANK_ID [TANK_ID …]")
    asyncio.run(main(sys.argv[1:]))
