"""A store's events read back from Kafka, verified record by record and link by link before a
restore writes any of them: every signature (the trust list), every keyed hash (the store's
chain key), every link from genesis on."""

from __future__ import annotations

import hmac
from collections.abc import Iterable
from dataclasses import dataclass
from itertools import pairwise

from shared.chain_key import ChainKey
from shared.envelope_codec import decode
from shared.events import StoredEvent
from shared.hashchain import GENESIS, event_hash
from shared.trust import TrustList, Untrusted, verify_envelope


@dataclass(frozen=True, slots=True)
class LogRecord:
    """One record of the topic, where it sits and its bytes as they are on the log."""

    topic: str
    partition: int
    offset: int
    value: bytes

    @property
    def where(self) -> str:
        return f"{self.topic}[{self.partition}]@{self.offset}"


class BrokenChain(ValueError):
    """The log cannot be restored; the message names the first bad record or link."""


def _named(event: StoredEvent) -> str:
    return (
        f"position {event.position}, event {event.event_id} of aggregate {event.aggregate_id}"
        f" v{event.aggregate_version} ({event.event_type})"
    )


def _claimed(data: bytes) -> str:
    """What an unverified record says it is, to name it by ("" when it says nothing)."""
    try:
        event = decode(data)
    except ValueError:
        return ""
    return f"event {event.event_id} of aggregate {event.aggregate_id} v{event.aggregate_version}, "


def verified_events(records: Iterable[LogRecord], trust: TrustList) -> list[StoredEvent]:
    """The records as events, each signature verified, duplicates (at-least-once) folded, in
    store position order; BrokenChain names the first record that fails."""
    by_id: dict[str, tuple[StoredEvent, LogRecord]] = {}
    for record in records:
        try:
            event = verify_envelope(trust, record.value)
        except Untrusted as exc:
            raise BrokenChain(
                f"record {record.where} ({_claimed(record.value)}site {exc.site_id}, key"
                f" {exc.key_id or 'none'}) does not verify: {exc.reason}"
            ) from None
        except ValueError as exc:
            raise BrokenChain(f"record {record.where} is no valid envelope: {exc}") from None
        seen = by_id.get(event.event_id)
        if seen is None:
            by_id[event.event_id] = (event, record)
        elif seen[0] != event:
            raise BrokenChain(
                f"event {event.event_id} is on the log twice with different contents"
                f" ({seen[1].where} and {record.where})"
            )
    events = sorted((e for e, _ in by_id.values()), key=lambda e: e.position)
    for before, after in pairwise(events):
        if before.position == after.position:
            raise BrokenChain(
                f"position {after.position} is held by two events ({before.event_id} and"
                f" {after.event_id})"
            )
    return events


def verify_links(events: Iterable[StoredEvent], key: ChainKey, site_id: str) -> None:
    """Every event is the site's, links to the one before it (genesis first) and carries the
    keyed hash of its contents; BrokenChain names the first that does not."""
    prev = GENESIS
    for event in events:
        if event.site_id != site_id:
            raise BrokenChain(f"{_named(event)}: belongs to site {event.site_id}, not {site_id}")
        if event.position <= 0:
            raise BrokenChain(f"{_named(event)}: has no store position")
        if event.prev_hash != prev:
            raise BrokenChain(
                f"{_named(event)}: prev_hash does not link to the event before it (an event is"
                " missing or was altered)"
            )
        if not hmac.compare_digest(event_hash(key, prev, event), event.hash):
            raise BrokenChain(
                f"{_named(event)}: hash does not match the event's contents (altered after it"
                " was recorded, or hashed with another key)"
            )
        prev = event.hash


def restorable(
    records: Iterable[LogRecord], *, site_id: str, key: ChainKey, trust: TrustList
) -> list[StoredEvent]:
    """The store's events to restore, in position order, once every record and link verified."""
    events = verified_events(records, trust)
    verify_links(events, key, site_id)
    return events
