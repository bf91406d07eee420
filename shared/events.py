"""Event records as the store accepts them (NewEvent) and returns them (StoredEvent)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from shared.ids import new_event_id


@dataclass(frozen=True, slots=True)
class NewEvent:
    """An event a command decided on, not yet appended. Time comes from the command."""

    event_type: str
    aggregate_type: str
    payload: bytes
    occurred_at: datetime
    actor: str
    reason: str
    schema_version: int = 1
    correlation_id: str = ""
    causation_id: str = ""
    event_id: str = field(default_factory=new_event_id)


@dataclass(frozen=True, slots=True)
class StoredEvent:
    """An appended event: the envelope fields plus the store's global position."""

    position: int
    event_id: str
    event_type: str
    schema_version: int
    aggregate_type: str
    aggregate_id: str
    aggregate_version: int
    site_id: str
    occurred_at: datetime
    recorded_at: datetime
    actor: str
    reason: str
    correlation_id: str
    causation_id: str
    payload: bytes
    prev_hash: bytes
    hash: bytes
    # W3C traceparent of the span that appended it ('' when untraced): observability only,
    # outside the hash chain (README, "Tracing"); the envelope's signature covers it.
    traceparent: str = ""
