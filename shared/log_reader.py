"""Read a topic from its beginning up to its end as it is when the read starts."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

from aiokafka import ConsumerRecord

from shared import kafka_clients
from shared.kafka_admin import end_offsets


async def records_to_end(
    bootstrap: str, topic: str, *, timeout: float = 600.0, batch: int = 5000
) -> AsyncIterator[ConsumerRecord]:
    """Every record of every partition up to the end offsets taken at the start (records
    written meanwhile are left for the next read); TimeoutError past `timeout` seconds."""
    ends = {tp: end for tp, end in (await end_offsets(bootstrap, [topic])).items() if end > 0}
    if not ends:
        return
    consumer = kafka_clients.consumer(
        bootstrap=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest"
    )
    await consumer.start()
    deadline = time.monotonic() + timeout
    try:
        consumer.assign(list(ends))
        await consumer.seek_to_beginning(*ends)
        remaining = dict(ends)
        while remaining:
            if time.monotonic() > deadline:
                raise TimeoutError(f"reading {topic} to its end took over {timeout:.0f}s")
            fetched = await consumer.getmany(*remaining, timeout_ms=1000, max_records=batch)
            for tp, records in fetched.items():
                for record in records:
                    if record.offset < remaining.get(tp, 0):
                        yield record
            for tp in list(remaining):
                if await consumer.position(tp) >= remaining[tp]:
                    del remaining[tp]
    finally:
        await consumer.stop()
