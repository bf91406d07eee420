"""Per-store hash chain over appended events: tamper evidence for the audit trail."""

from __future__ import annotations

import hashlib
import hmac
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from shared.chain_key import ChainKey
from shared.events import StoredEvent

GENESIS = b"\x00" * 32


def _field(value: str | bytes | int | datetime) -> bytes:
    if isinstance(value, datetime):
        value = value.isoformat(timespec="microseconds")
    if isinstance(value, int):
        return struct.pack(">q", value)
    raw = value.encode("utf-8") if isinstance(value, str) else value
    return struct.pack(">I", len(raw)) + raw


def event_hash(key: ChainKey, prev_hash: bytes, event: StoredEvent) -> bytes:
    """HMAC-SHA256, keyed with the store's chain key, over prev_hash and the event's fields,
    length-prefixed in a fixed order. Keyed, so that whoever can write the database but does
    not hold the key cannot rewrite a row and re-hash the chain after it.

    The position is left out on purpose: it is assigned by the store's sequence and the chain's
    order already pins it; everything a regulator reads (who, when, what, why) is covered.
    """
    digest = hmac.new(key.secret, prev_hash, hashlib.sha256)
    for value in (
        event.event_id,
        event.event_type,
        event.schema_version,
        event.aggregate_type,
        event.aggregate_id,
        event.aggregate_version,
        event.site_id,
        event.occurred_at,
        event.recorded_at,
        event.actor,
        event.reason,
        event.correlation_id,
        event.causation_id,
        event.payload,
    ):
        digest.update(_field(value))
    return digest.digest()


@dataclass(frozen=True, slots=True)
class ChainReport:
    intact: bool
    events_checked: int
    broken_at_position: int | None = None
    problem: str = ""
    # The event at broken_at_position as stored, so a report can name it (id, aggregate, type)
    # without the operator querying the store again.
    broken_event: StoredEvent | None = None


def verify_chain(
    events: Iterable[StoredEvent], key: ChainKey, expected_prev: bytes = GENESIS
) -> ChainReport:
    """Walk events in position order and check every link and every (keyed) hash."""
    prev = expected_prev
    checked = 0
    for event in events:
        if event.prev_hash != prev:
            return ChainReport(
                False,
                checked,
                event.position,
                "prev_hash does not link to the previous event",
                event,
            )
        if not hmac.compare_digest(event_hash(key, prev, event), event.hash):
            return ChainReport(
                False, checked, event.position, "hash does not match the event's contents", event
            )
        prev = event.hash
        checked += 1
    return ChainReport(True, checked)
