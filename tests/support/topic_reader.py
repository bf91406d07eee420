"""Read what a topic holds right now (tests and benchmarks), tolerating one not created yet."""

from __future__ import annotations

from aiokafka import ConsumerRecord
from aiokafka.errors import UnknownTopicOrPartitionError

from shared import kafka_clients


async def records_so_far(
    bootstrap: str, topic: str, timeout_ms: int = 1000
) -> list[ConsumerRecord]:
    """The records a fresh consumer gets from the start within timeout_ms, in offset order per
    partition; [] while the topic does not exist yet."""
    consumer = kafka_clients.consumer(topic, bootstrap=bootstrap, auto_offset_reset="earliest")
    try:
        await consumer.start()
    except UnknownTopicOrPartitionError:
        await consumer.stop()
        return []
    try:
        batches = await consumer.getmany(timeout_ms=timeout_ms)
    finally:
        await consumer.stop()
    return sorted(
        (r for records in batches.values() for r in records), key=lambda r: (r.partition, r.offset)
    )
