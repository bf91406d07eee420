"""Read what a topic holds right now (tests and benchmarks), tolerating one not created yet."""

from __future__ import annotations

import time

from aiokafka import ConsumerRecord, TopicPartition
from aiokafka.errors import UnknownTopicOrPartitionError

from shared import kafka_clients


async def records_so_far(
    bootstrap: str, topic: str, timeout_ms: int = 1000
) -> list[ConsumerRecord]:
    """The records a fresh consumer reads from the start up to the topic's end as of the call
    (or what it read when timeout_ms ran out), in offset order per partition; [] while the
    topic does not exist yet. Not one fetch: a topic larger than a fetch is read to its end."""
    consumer = kafka_clients.consumer(topic, bootstrap=bootstrap, auto_offset_reset="earliest")
    try:
        await consumer.start()
    except UnknownTopicOrPartitionError:
        await consumer.stop()
        return []
    deadline = time.monotonic() + timeout_ms / 1000
    records: list[ConsumerRecord] = []
    try:
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        ends = await consumer.end_offsets(partitions) if partitions else {}
        unread = {tp: end for tp, end in ends.items() if end > 0}
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            batches = await consumer.getmany(timeout_ms=max(1, int(left * 1000)))
            for tp, batch in batches.items():
                records.extend(batch)
                if batch and tp in unread and batch[-1].offset + 1 >= unread[tp]:
                    del unread[tp]
            if not unread and ends:  # everything there was at the call is read
                break
            if not ends and records:  # no partitions known up front: what one fetch gives
                break
    finally:
        await consumer.stop()
    return sorted(records, key=lambda r: (r.partition, r.offset))
