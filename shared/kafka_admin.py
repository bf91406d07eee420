"""Explicit topic creation (the cluster never auto-creates) and end-offset queries."""

from __future__ import annotations

from collections.abc import Iterable

from aiokafka import AIOKafkaConsumer
from aiokafka.admin import NewTopic
from aiokafka.errors import TopicAlreadyExistsError
from aiokafka.structs import TopicPartition

from shared import kafka_clients
from shared.topics import TOPICS, TopicSpec


async def ensure_topics(
    bootstrap: str,
    topics: Iterable[TopicSpec] = TOPICS,
    *,
    partitions: int = 3,
    replication_factor: int = 1,
    security: kafka_clients.KafkaSecurity | None = None,
) -> list[str]:
    """Create missing topics with their configs; returns the names created now (as the
    environment's principal, or the given one)."""
    admin = kafka_clients.admin_client(bootstrap, security=security)
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
    consumer = kafka_clients.consumer(bootstrap=bootstrap, enable_auto_commit=False)
    try:  # a refused start (no such broker, bad credentials) still stops the consumer
        await consumer.start()
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


async def topic_partitions(consumer: AIOKafkaConsumer, topic: str) -> set[int]:
    """The topic's partitions (metadata refreshed when the consumer has none yet)."""
    return set(consumer.partitions_for_topic(topic) or ()) or await _partitions(consumer, topic)


async def _partitions(consumer: AIOKafkaConsumer, topic: str) -> set[int]:
    await consumer._client.force_metadata_update()
    parts = consumer.partitions_for_topic(topic)
    if not parts:
        raise LookupError(f"topic {topic} does not exist")
    return set(parts)


async def consumer_lag_by_prefix(bootstrap: str, prefixes: Iterable[str]) -> dict[str, int]:
    """Records the consumer groups named `<prefix>.…` have still to read (committed offsets vs
    the partitions' ends), per prefix. Groups commit for monitoring only."""
    lag = dict.fromkeys(prefixes, 0)
    admin = kafka_clients.admin_client(bootstrap)
    await admin.start()
    try:
        offsets: dict[str, dict[TopicPartition, int]] = {}
        for group, *_ in await admin.list_consumer_groups():
            if group.split(".", 1)[0] in lag:
                committed = await admin.list_consumer_group_offsets(group)
                offsets[group] = {tp: m.offset for tp, m in committed.items() if m.offset >= 0}
        topics = sorted({tp.topic for committed in offsets.values() for tp in committed})
        ends = await end_offsets(bootstrap, topics) if topics else {}
        for group, committed in offsets.items():
            lag[group.split(".", 1)[0]] += sum(
                max(0, ends.get(tp, 0) - offset) for tp, offset in committed.items()
            )
    finally:
        await admin.close()
    return lag
