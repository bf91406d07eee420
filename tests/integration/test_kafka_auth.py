"""The broker refuses strangers and holds every principal to its ACLs (real Kafka, SASL/SCRAM)."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from aiokafka import TopicPartition
from aiokafka.errors import (
    GroupAuthorizationFailedError,
    KafkaConnectionError,
    KafkaError,
    TopicAuthorizationFailedError,
)

from deploy.infra import Endpoints
from deploy.kafka_principals import OPERATOR, service_principal
from shared import kafka_clients
from shared.kafka_admin import topic_partitions
from shared.kafka_clients import KafkaSecurity
from shared.topics import DONOR_EVENTS, STORAGE_EVENTS

ANONYMOUS = KafkaSecurity()


def _marker() -> bytes:
    return f"auth-test-{uuid.uuid4().hex}".encode()


async def _send(endpoints: Endpoints, security: KafkaSecurity, topic: str, value: bytes) -> None:
    producer = kafka_clients.producer(
        endpoints.kafka_bootstrap,
        security=security,
        acks="all",
        request_timeout_ms=5000,
        retry_backoff_ms=100,
    )
    try:
        await producer.start()
        await producer.send_and_wait(topic, value, key=b"auth-test")
    finally:
        await producer.stop()


async def _on_topic(endpoints: Endpoints, topic: str, value: bytes) -> bool:
    """Whether the value is among the topic's records, read up to its current end (as admin)."""
    consumer = kafka_clients.consumer(bootstrap=endpoints.kafka_bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in await topic_partitions(consumer, topic)]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        deadline = asyncio.get_running_loop().time() + 30
        while [tp for tp in partitions if await consumer.position(tp) < ends[tp]]:
            assert asyncio.get_running_loop().time() < deadline, f"{topic} not read in 30 s"
            batches = await consumer.getmany(timeout_ms=500)
            if any(r.value == value for records in batches.values() for r in records):
                return True
        return False
    finally:
        await consumer.stop()


@pytest.fixture
def credentials(endpoints: Endpoints) -> str:
    assert endpoints.kafka_credentials, "the session's broker must have provisioned principals"
    return endpoints.kafka_credentials


async def test_a_producer_without_credentials_is_refused(endpoints: Endpoints) -> None:
    value = _marker()
    with pytest.raises(KafkaError):
        await _send(endpoints, ANONYMOUS, STORAGE_EVENTS, value)
    assert not await _on_topic(endpoints, STORAGE_EVENTS, value)


async def test_a_wrong_password_is_refused(endpoints: Endpoints, credentials: str) -> None:
    right = endpoints.kafka_security(service_principal("LON", "storage"))
    wrong = KafkaSecurity(right.protocol, right.mechanism, right.username, right.password + "x")
    value = _marker()
    with pytest.raises((KafkaConnectionError, KafkaError)):
        await _send(endpoints, wrong, STORAGE_EVENTS, value)
    assert not await _on_topic(endpoints, STORAGE_EVENTS, value)


async def test_a_site_service_writes_its_own_topic_and_no_other(
    endpoints: Endpoints, credentials: str
) -> None:
    lon_storage = endpoints.kafka_security(service_principal("LON", "storage"))
    forged = _marker()
    with pytest.raises(TopicAuthorizationFailedError):
        await _send(endpoints, lon_storage, DONOR_EVENTS, forged)
    own = _marker()
    await _send(endpoints, lon_storage, STORAGE_EVENTS, own)
    assert await _on_topic(endpoints, STORAGE_EVENTS, own)
    assert not await _on_topic(endpoints, DONOR_EVENTS, forged)


async def test_the_operator_reads_but_cannot_write(endpoints: Endpoints, credentials: str) -> None:
    operator = endpoints.kafka_security(OPERATOR)
    value = _marker()
    with pytest.raises(TopicAuthorizationFailedError):
        await _send(endpoints, operator, STORAGE_EVENTS, value)
    seen = _marker()
    await _send(endpoints, endpoints.kafka_security(service_principal("LON", "storage")),
                STORAGE_EVENTS, seen)  # fmt: skip
    consumer = kafka_clients.consumer(
        STORAGE_EVENTS,
        bootstrap=endpoints.kafka_bootstrap,
        security=operator,
        group_id=f"operator.test.{uuid.uuid4().hex[:8]}",
        auto_offset_reset="earliest",
    )
    await consumer.start()
    try:
        found = False
        for _ in range(40):  # bounded: each getmany waits up to 500 ms
            batches = await consumer.getmany(timeout_ms=500)
            if any(r.value == seen for records in batches.values() for r in records):
                found = True
                break
        assert found
    finally:
        await consumer.stop()


async def test_a_principal_cannot_join_another_principals_group(
    endpoints: Endpoints, credentials: str
) -> None:
    man_storage = endpoints.kafka_security(service_principal("MAN", "storage"))
    consumer = kafka_clients.consumer(
        STORAGE_EVENTS,
        bootstrap=endpoints.kafka_bootstrap,
        security=man_storage,
        group_id=f"LON.storage.inventory.{uuid.uuid4().hex[:8]}",  # LON-storage's group
        auto_offset_reset="earliest",
    )
    try:
        with pytest.raises(GroupAuthorizationFailedError):
            await consumer.start()  # joining the group is where the broker says no
            for _ in range(20):
                await consumer.getmany(timeout_ms=500)
    finally:
        await consumer.stop()
