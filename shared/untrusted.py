"""Records the trust list does not vouch for: the verdict on each record a consumer reads, and
what is kept of the refused ones (dead letter, metric, untrusted_records)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import asyncpg
from aiokafka import AIOKafkaProducer, ConsumerRecord

from shared import metrics
from shared.envelope_codec import parse
from shared.events import StoredEvent
from shared.topics import DEADLETTER
from shared.trust import TrustList, Untrusted, envelope_signer, verify_envelope

log = logging.getLogger(__name__)

# The refusals as counted (a metric label, GetNetworkStatus): a small fixed set, never the
# claim's own words (a forger chooses those).
UNSIGNED = "unsigned"
UNKNOWN_KEY = "unknown_key"
WRONG_SITE = "wrong_site"  # a key of another site than the envelope's site_id
KEY_NOT_VALID = "key_not_valid"  # retired (or not yet valid) when the event was recorded
# altered after signing, signed by someone else, or a signature or batch proof (shared.trust)
# that is malformed or does not lead to a root the key signed
BAD_SIGNATURE = "bad_signature"
UNDECODABLE = "undecodable"  # not an envelope at all: nothing in it can be vouched for
KEY_DIFFERS = "key_differs"  # a genuine envelope sent under another aggregate's record key
REASONS = (
    UNSIGNED,
    UNKNOWN_KEY,
    WRONG_SITE,
    KEY_NOT_VALID,
    BAD_SIGNATURE,
    UNDECODABLE,
    KEY_DIFFERS,
)
ERROR_PREFIX = "untrusted: "


def reason_of(refusal: Untrusted) -> str:
    """The counted reason of a refusal by the trust list (shared.trust words it for people)."""
    words = refusal.reason
    if words == "unsigned":
        return UNSIGNED
    if words == "unknown key":
        return UNKNOWN_KEY
    if words.startswith("key of "):
        return WRONG_SITE
    if words.startswith("key not valid"):
        return KEY_NOT_VALID
    return BAD_SIGNATURE  # bad or malformed signature, malformed proof


class LogRecord(Protocol):
    """A record as read from Kafka (aiokafka's ConsumerRecord, Faust's Message)."""

    @property
    def topic(self) -> str: ...
    @property
    def partition(self) -> int: ...
    @property
    def offset(self) -> int: ...
    @property
    def key(self) -> bytes | None: ...
    @property
    def value(self) -> bytes | None: ...


@dataclass(frozen=True, slots=True)
class Refused:
    """One record refused: what it claimed, why, and where it was on the log."""

    topic: str
    partition: int
    offset: int
    reason: str  # one of REASONS
    error: str  # the refusal in words (ERROR_PREFIX + …), for the dead letter and the log
    claimed_site: str = ""
    key_id: str = ""
    event_id: str = ""
    aggregate_id: str = ""


@dataclass(slots=True)
class Verdicts:
    """A batch of records judged: offset → the verified event, or why it was refused."""

    trusted: dict[int, StoredEvent] = field(default_factory=dict)
    refused: dict[int, Refused] = field(default_factory=dict)


def judge(trust: TrustList, records: Sequence[ConsumerRecord]) -> Verdicts:
    """Verify every record (pure; safe in a worker thread: verifying releases the GIL)."""
    out = Verdicts()
    trusted, refused = out.trusted, out.refused
    for record in records:
        verdict = judge_one(trust, record)
        if isinstance(verdict, Refused):
            refused[record.offset] = verdict
        else:
            trusted[record.offset] = verdict
    return out


def judge_one(trust: TrustList, record: LogRecord) -> StoredEvent | Refused:
    """The record's event if the trust list vouches for it and its record key is its
    aggregate's; otherwise why not."""
    value = record.value or b""
    key = (record.key or b"").decode("utf-8", errors="replace")
    try:
        event = verify_envelope(trust, value)
    except Untrusted as exc:
        site, key_id = envelope_signer(value)
        return _refused(record, reason_of(exc), exc.reason, site, key_id, value)
    except ValueError as exc:
        return _refused(record, UNDECODABLE, f"not an envelope: {exc}"[:300], "", "", b"")
    if event.aggregate_id != key:
        return Refused(
            record.topic, record.partition, record.offset, KEY_DIFFERS,
            f"{ERROR_PREFIX}record key {key[:80]!r} differs from aggregate_id"
            f" {event.aggregate_id!r}",
            event.site_id, "", event.event_id, event.aggregate_id,
        )  # fmt: skip
    return event


def _refused(
    record: LogRecord, reason: str, words: str, site: str, key_id: str, value: bytes
) -> Refused:
    event_id = aggregate_id = ""
    if value:  # the claim as written (verify_envelope parsed these bytes already)
        env = parse(value)
        event_id, aggregate_id = env.event_id[:64], env.aggregate_id[:128]
    return Refused(
        record.topic, record.partition, record.offset, reason, f"{ERROR_PREFIX}{words}",
        site[:16], key_id[:64], event_id, aggregate_id,
    )  # fmt: skip


async def record_refusal(
    conn: asyncpg.Connection,
    dlq: AIOKafkaProducer | None,
    record: ConsumerRecord,
    refused: Refused,
    *,
    consumer: str,
    group_id: str,
) -> None:
    """Dead-letter the record with the reason (unless dlq is None) and keep it in untrusted_records (in the
    caller's transaction; `count` it once that commits). Its aggregate is not parked: a forger must not be able to hold
    back a genuine aggregate by sending one bad record under its key."""
    await conn.execute(
        "INSERT INTO untrusted_records (projection, claimed_site, key_id, reason, error, topic,"
        ' partition, "offset", event_id, aggregate_id) VALUES ($1, $2, $3, $4, $5, $6, $7, $8,'
        " $9, $10) ON CONFLICT DO NOTHING",
        consumer, refused.claimed_site, refused.key_id, refused.reason, refused.error[:2000],
        refused.topic, refused.partition, refused.offset, refused.event_id, refused.aggregate_id,
    )  # fmt: skip
    if dlq is None:  # a replay: the live consumers dead-lettered it already
        return
    await dlq.send_and_wait(
        DEADLETTER,
        value=record.value,
        key=record.key,
        headers=[
            ("error", refused.error[:2000].encode()),
            ("untrusted_reason", refused.reason.encode()),
            ("projection", consumer.encode()),
            ("consumer_group", group_id.encode()),
            ("original_topic", record.topic.encode()),
            ("original_partition", str(record.partition).encode()),
            ("original_offset", str(record.offset).encode()),
        ],
    )


def count(consumer: str, refused: Refused) -> None:
    """The metric and a structured log line of one refusal."""
    metrics.UNTRUSTED_RECORDS.labels(consumer, refused.reason).inc()
    log.error(
        "untrusted record dead-lettered; not applied",
        extra={
            "consumer": consumer, "reason": refused.reason, "error": refused.error,
            "claimed_site": refused.claimed_site, "key_id": refused.key_id,
            "topic": refused.topic, "partition": refused.partition, "offset": refused.offset,
            "event_id": refused.event_id, "aggregate_id": refused.aggregate_id,
        },
    )  # fmt: skip


async def untrusted_counts(pool: asyncpg.Pool) -> list[asyncpg.Record]:
    """Refusals by claimed site and reason (records refused by several projections count
    once): claimed_site, reason, n, last_at."""
    return list(
        await pool.fetch(
            'SELECT claimed_site, reason, count(DISTINCT (topic, partition, "offset")) AS n,'
            " max(refused_at) AS last_at FROM untrusted_records GROUP BY 1, 2 ORDER BY 1, 2"
        )
    )
