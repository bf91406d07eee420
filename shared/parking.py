"""Poison records: dead-letter them, park their aggregate's later records, resolve on request."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import asyncpg
from aiokafka import AIOKafkaProducer, ConsumerRecord

from shared import metrics
from shared.events import StoredEvent
from shared.topics import DEADLETTER
from shared.trust import TrustList, verify_envelope

log = logging.getLogger(__name__)


class Applies(Protocol):
    async def apply(self, conn: asyncpg.Connection, event: StoredEvent) -> None: ...


@dataclass(frozen=True, slots=True)
class Poison:
    record: ConsumerRecord
    aggregate_id: str
    error: str


async def mark_processed(
    conn: asyncpg.Connection, projection: str, event_ids: Sequence[str]
) -> None:
    await conn.execute(
        "INSERT INTO processed_events (projection, event_id)"
        " SELECT $1, unnest($2::text[]) ON CONFLICT DO NOTHING",
        projection,
        list(event_ids),
    )


class ParkingLot:
    """The parked aggregates of one projection, kept in its database (parked_records).

    Only records the trust list vouched for are parked (the runner refuses the rest before);
    resolving verifies them again, so a row altered in the database is not applied either."""

    def __init__(
        self, pool: asyncpg.Pool, projection: str, group_id: str, trust: TrustList
    ) -> None:
        self.pool = pool
        self.trust = trust
        self.projection = projection
        self.group_id = group_id
        self.aggregates: set[str] = set()

    async def load(self) -> None:
        rows = await self.pool.fetch(
            "SELECT DISTINCT aggregate_id FROM parked_records WHERE projection = $1",
            self.projection,
        )
        self.aggregates = {r["aggregate_id"] for r in rows}

    async def park(
        self, conn: asyncpg.Connection, record: ConsumerRecord, key: str, *, error: str = ""
    ) -> None:
        """Hold a record back (in the caller's transaction); error marks it as the poison."""
        await conn.execute(
            "INSERT INTO parked_records"
            ' (projection, aggregate_id, topic, partition, "offset", value, is_poison, error)'
            " VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT DO NOTHING",
            self.projection,
            key,
            record.topic,
            record.partition,
            record.offset,
            record.value or b"",
            bool(error),
            error,
        )
        metrics.PROJECTION_PARKED.labels(self.projection).inc()

    async def deadletter(
        self, conn: asyncpg.Connection, dlq: AIOKafkaProducer | None, bad: Poison
    ) -> None:
        """Park the poison record and send it to the dead-letter topic with the error (no
        dlq: a replay, whose live site dead-lettered it already; parked and logged only).

        Sent before the caller's transaction commits: a crash can duplicate a dead letter,
        never lose one.
        """
        record = bad.record
        await self.park(conn, record, bad.aggregate_id, error=bad.error)
        if dlq is None:
            log.error(
                "poison record parked (not dead-lettered again by a replay)",
                extra={"projection": self.projection, "aggregate_id": bad.aggregate_id},
            )
            return
        await dlq.send_and_wait(
            DEADLETTER,
            value=record.value,
            key=record.key,
            headers=[
                ("error", bad.error.encode()),
                ("projection", self.projection.encode()),
                ("consumer_group", self.group_id.encode()),
                ("original_topic", record.topic.encode()),
                ("original_partition", str(record.partition).encode()),
                ("original_offset", str(record.offset).encode()),
            ],
        )
        metrics.DEADLETTERED.labels(self.projection).inc()
        log.error(
            "poison record dead-lettered; aggregate parked",
            extra={
                "projection": self.projection,
                "aggregate_id": bad.aggregate_id,
                "topic": record.topic,
                "partition": record.partition,
                "offset": record.offset,
                "error": bad.error,
            },
        )

    async def resolve(self, projection: Applies, aggregate_id: str, *, skip_poison: bool) -> bool:
        """Apply the aggregate's parked records in order, all or nothing (see ProjectionRunner)."""
        async with self.pool.acquire() as conn:
            try:
                async with conn.transaction():
                    rows = await conn.fetch(
                        "SELECT seq, value, is_poison FROM parked_records"
                        " WHERE projection = $1 AND aggregate_id = $2 ORDER BY seq FOR UPDATE",
                        self.projection,
                        aggregate_id,
                    )
                    applied = await self._apply_parked(conn, projection, rows, skip_poison)
                    await mark_processed(conn, self.projection, applied)
                    # Only the rows read here: one parked meanwhile stays (and keeps it parked).
                    await conn.execute(
                        "DELETE FROM parked_records WHERE seq = ANY($1::bigint[])",
                        [r["seq"] for r in rows],
                    )
                    remaining = await conn.fetchval(
                        "SELECT count(*) FROM parked_records WHERE projection = $1 AND aggregate_id = $2",
                        self.projection,
                        aggregate_id,
                    )
            except Exception as exc:
                log.error(
                    "parked aggregate failed again; still parked",
                    extra={
                        "projection": self.projection,
                        "aggregate_id": aggregate_id,
                        "error": repr(exc),
                    },
                )
                return False
        if remaining:
            return False
        self.aggregates.discard(aggregate_id)
        log.info(
            "parked aggregate resolved",
            extra={
                "projection": self.projection,
                "aggregate_id": aggregate_id,
                "skipped_poison": skip_poison,
            },
        )
        return True

    async def _apply_parked(
        self,
        conn: asyncpg.Connection,
        projection: Applies,
        rows: Sequence[asyncpg.Record],
        skip_poison: bool,
    ) -> list[str]:
        ids = []
        for row in rows:
            if row["is_poison"] and skip_poison:
                continue
            ids.append(verify_envelope(self.trust, row["value"]).event_id)
        done = {
            r["event_id"]
            for r in await conn.fetch(
                "SELECT event_id FROM processed_events WHERE projection = $1 AND event_id = ANY($2::text[])",
                self.projection,
                ids,
            )
        }
        applied: list[str] = []
        for row in rows:
            if row["is_poison"] and skip_poison:
                continue
            event = verify_envelope(self.trust, row["value"])
            if event.event_id in done:
                continue  # a redelivered copy of an event already applied
            await projection.apply(conn, event)
            done.add(event.event_id)
            applied.append(event.event_id)
        return applied
