"""Explicit topic creation (the cluster never auto-creates) and end-offset queries."""

from __future__ import annotations

from collections.abc import Iterable

from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError
from aiokafka.structs import TopicPartition

from shared.topics import TOPICS, TopicSpec


async def ensure_topics(
    bootstrap: str,
    topics: Iterable[TopicSpec] = TOPICS,
    *,
    partitions: int = 3,
    replication_factor: int = 1,
) -> list[str]:
    """Create missing topics with their configs; returns the names created now."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [t for t in topics if t.name not in existing]
        if missing:
            new = [
                NewTopic(
                    t.name,
                    num_partitions=partitions,
                    replication_factor=replication_factor,
                    topic_configs=t.config(replication_factor),
                )
                for t in missing
            ]
            try:
                await admin.create_topics(new, timeout_ms=30000)
            except TopicAlreadyExistsError:
                pass
        return [t.name for t in missing]
    finally:
        await admin.close()


async def end_offsets(bootstrap: str, topics: Iterable[str]) -> dict[TopicPartition, int]:
    """The next offset to be written on every partition of the topics."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        partitions = [
            TopicPartition(topic, p)
            for topic in topics
            for p in sorted(
                consumer.partitions_for_topic(topic) or await _partitions(consumer, topic)
            )
        ]
        return dict(await consumer.end_offsets(partitions))
    finally:
        await consumer.stop()


async def _partitions(consumer: AIOKafkaConsumer, topic: str) -> set[int]:
    await consumer._client.force_metadata_update()
    parts = consumer.partitions_for_topic(topic)
    if not parts:
        raise LookupError(f"topic {topic} does not exist")
    return set(parts)
