"""The network's events as they arrive on Kafka, decoded and filtered: for operators
(`cellbank watch`, OperatorService.WatchEvents, the dashboard). Reads without a consumer group,
so watching never disturbs the services' consumers and commits nothing."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncGenerator
from dataclasses import dataclass

from aiokafka import ConsumerRecord, TopicPartition

from shared import kafka_clients, metrics
from shared.aggregate_history import payload_json
from shared.errors import InvalidArgument
from shared.events import StoredEvent
from shared.kafka_admin import topic_partitions
from shared.topics import SERVICE_TOPICS
from shared.trust import TrustList
from shared.untrusted import Refused, judge_one

WATCH_CONSUMER = "watch"  # the consumer label of the records a watch refused

EVENT_TOPICS: tuple[str, ...] = tuple(SERVICE_TOPICS.values())


@dataclass(frozen=True, slots=True)
class EventFilter:
    site_id: str = ""
    topic: str = ""
    event_type: str = ""  # full or short name
    aggregate_id: str = ""

    def topics(self) -> tuple[str, ...]:
        if not self.topic:
            return EVENT_TOPICS
        if self.topic not in EVENT_TOPICS:
            raise InvalidArgument(
                "topic", f"{self.topic!r} is not one of {', '.join(EVENT_TOPICS)}"
            )
        return (self.topic,)

    def matches(self, event: StoredEvent) -> bool:
        short = event.event_type.rsplit(".", 1)[-1]
        return (
            (not self.site_id or event.site_id == self.site_id.upper())
            and (not self.event_type or self.event_type in (event.event_type, short))
            and (not self.aggregate_id or event.aggregate_id == self.aggregate_id)
        )


@dataclass(frozen=True, slots=True)
class Watched:
    topic: str
    partition: int
    offset: int
    event: StoredEvent
    payload_json: str

    @property
    def summary(self) -> str:
        """One readable line: what happened to which aggregate, by whom, why, key facts."""
        e = self.event
        short = e.event_type.rsplit(".", 1)[-1]
        facts = _facts(self.payload_json)
        line = f"{short} {e.aggregate_id} v{e.aggregate_version} by {e.actor}"
        if facts:
            line += f" [{facts}]"
        if e.reason:
            line += f" — {e.reason}"
        return line if len(line) <= 200 else line[:197] + "…"

    def record(self) -> dict[str, object]:
        e = self.event
        return {
            "topic": self.topic, "partition": self.partition, "offset": self.offset,
            "site_id": e.site_id, "event_type": e.event_type, "aggregate_type": e.aggregate_type,
            "aggregate_id": e.aggregate_id, "aggregate_version": e.aggregate_version,
            "occurred_at": e.occurred_at.isoformat(), "actor": e.actor, "reason": e.reason,
            "event_id": e.event_id, "payload": json.loads(self.payload_json),
        }  # fmt: skip


def _facts(raw: str) -> str:
    """A few scalar fields of the payload, for the one-line summary."""
    try:
        payload = json.loads(raw)
    except ValueError:
        return ""
    if not isinstance(payload, dict):
        return ""
    parts = [
        f"{k}={v}"
        for k, v in payload.items()
        if isinstance(v, str | int | float | bool) and v != ""
    ]
    return ", ".join(parts[:4])


async def watch_events(
    bootstrap: str,
    selection: EventFilter,
    *,
    trust: TrustList,
    from_beginning: bool = False,
    tail: int = 0,
) -> AsyncGenerator[Watched, None]:
    """Every matching event from now (or the beginning, or the last `tail` records of each
    partition) on, until the caller stops iterating. Only what the trust list vouches for is
    shown; the rest is skipped and counted (cellbank_untrusted_records_total{consumer="watch"})."""
    topics = selection.topics()
    consumer = kafka_clients.consumer(
        bootstrap=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest"
    )
    await consumer.start()
    try:
        partitions = [
            TopicPartition(t, p)
            for t in topics
            for p in sorted(await topic_partitions(consumer, t))
        ]
        consumer.assign(partitions)
        if from_beginning:
            await consumer.seek_to_beginning(*partitions)
        elif tail:
            ends = await consumer.end_offsets(partitions)
            for tp in partitions:
                consumer.seek(tp, max(0, ends[tp] - tail))
        else:
            await consumer.seek_to_end(*partitions)
        while True:
            batches = await consumer.getmany(timeout_ms=500, max_records=500)
            for records in batches.values():
                for record in records:
                    watched = _verified(trust, record)
                    if watched is not None and selection.matches(watched.event):
                        yield watched
    finally:
        with contextlib.suppress(Exception):
            await consumer.stop()


def _verified(trust: TrustList, record: ConsumerRecord) -> Watched | None:
    verdict = judge_one(trust, record)
    if isinstance(verdict, Refused):
        # Counted, not logged per watcher: the consumers' dead letters and logs tell the rest.
        metrics.UNTRUSTED_RECORDS.labels(WATCH_CONSUMER, verdict.reason).inc()
        return None
    return Watched(
        record.topic, record.partition, record.offset, verdict,
        payload_json(verdict.event_type, verdict.payload),
    )  # fmt: skip
