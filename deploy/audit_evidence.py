"""What `cellbank audit verify` holds each store against, read from Kafka: the site's newest
verified anchor of the store and the newest of the store's events its topic holds."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from shared.anchor_log import latest_anchor
from shared.anchors import Anchor
from shared.log_reader import records_to_end
from shared.topics import SERVICE_TOPICS
from shared.trust import TrustList, Untrusted, envelope_signer, verify_envelope


@dataclass(frozen=True, slots=True)
class LogHead:
    """The newest of a store's events on its topic that verified as the site's."""

    position: int
    hash: bytes
    events: int  # distinct events of the site on the topic
    untrusted: int = 0  # records claiming the site that did not verify (left out)


@dataclass(frozen=True, slots=True)
class Evidence:
    anchor: Anchor | None
    log: LogHead | None

    def positions(self) -> list[int]:
        """The store positions whose hashes the store should report."""
        wanted = {self.anchor.position if self.anchor else 0, self.log.position if self.log else 0}
        return sorted(p for p in wanted if p > 0)


async def log_head(bootstrap: str, trust: TrustList, topic: str, site_id: str) -> LogHead | None:
    """The site's newest verified event on the topic (by store position); None if none."""
    newest: tuple[int, bytes] | None = None
    seen: set[str] = set()
    untrusted = 0
    async for record in records_to_end(bootstrap, topic):
        if record.value is None or envelope_signer(record.value)[0] != site_id:
            continue
        try:
            event = verify_envelope(trust, record.value)
        except (ValueError, Untrusted):
            untrusted += 1
            continue
        seen.add(event.event_id)
        if newest is None or event.position > newest[0]:
            newest = (event.position, event.hash)
    if newest is None:
        return LogHead(0, b"", 0, untrusted) if untrusted else None
    return LogHead(newest[0], newest[1], len(seen), untrusted)


async def site_evidence(
    bootstrap: str, trust: TrustList, site_id: str, services: Sequence[str]
) -> dict[str, Evidence]:
    """service → its store's newest anchor and newest event on Kafka."""
    return {
        service: Evidence(
            await latest_anchor(bootstrap, trust, site_id, service),
            await log_head(bootstrap, trust, SERVICE_TOPICS[service], site_id),
        )
        for service in services
    }


def held_against(
    evidence: Evidence, *, head_position: int, event_count: int, hashes: Mapping[int, bytes]
) -> str:
    """What the store's head says against the evidence: "" when it holds everything the
    anchor and Kafka hold, else the finding (a deleted tail, a truncated table, a rewrite)."""
    anchor, log = evidence.anchor, evidence.log
    behind = []
    if anchor is not None and anchor.position > head_position:
        behind.append(f"anchor at {anchor.position}")
    if log is not None and log.position > head_position:
        behind.append(f"Kafka holds up to {log.position}")
    if behind:
        if event_count == 0:
            return f"store is empty, {' / '.join(behind)}: its events were deleted (truncated)"
        return (
            f"store ends at position {head_position}, {' / '.join(behind)}: its newest events"
            " were deleted"
        )
    for name, position, expected in (
        ("the anchor", anchor.position if anchor else 0, anchor.hash if anchor else b""),
        ("Kafka's record", log.position if log else 0, log.hash if log else b""),
    ):
        if position <= 0:
            continue
        stored = hashes.get(position)
        if stored is None:
            return f"the event at position {position} is gone ({name} holds it)"
        if stored != expected:
            return f"the event at position {position} has another hash than {name}: rewritten"
    if anchor is not None and event_count < anchor.event_count:
        return (
            f"store holds {event_count} events, the anchor {anchor.event_count}: events were"
            " deleted"
        )
    return ""
