"""Kafka client construction with the platform's delivery guarantees in one place."""

from __future__ import annotations

from aiokafka import AIOKafkaProducer


def reliable_producer(bootstrap: str, *, request_timeout_ms: int = 15000) -> AIOKafkaProducer:
    """acks=all + idempotence: no loss on leader change, no duplicates from internal retries."""
    return AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        acks="all",
        enable_idempotence=True,
        # No linger: the relay hands over a whole batch read from the store at once, and records
        # queue behind a request in flight anyway; waiting only added latency to every
        # cross-site hop (bench: propagation p50 25 -> 14 ms, relay throughput unchanged).
        linger_ms=0,
        max_batch_size=256 * 1024,
        request_timeout_ms=request_timeout_ms,
        retry_backoff_ms=200,
    )
