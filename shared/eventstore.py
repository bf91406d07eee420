"""The event store port, its shared validation, and the in-memory adapter."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Protocol

from shared.bounds import MAX_ENVELOPE_BYTES
from shared.chain_key import ChainKey
from shared.envelope_codec import to_envelope
from shared.errors import ConcurrencyConflict, InvalidArgument
from shared.events import NewEvent, StoredEvent
from shared.hashchain import GENESIS, ChainReport, event_hash, verify_chain

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class AppendResult:
    """What an append did: the stored events, and whether it was an idempotent replay."""

    events: tuple[StoredEvent, ...]
    duplicate: bool = False

    @property
    def last_position(self) -> int:
        return self.events[-1].position if self.events else 0


class EventStore(Protocol):
    """Append-only store for one service at one site. Contract: tests/contract."""

    site_id: str

    async def append(
        self, aggregate_id: str, expected_version: int, events: Sequence[NewEvent]
    ) -> AppendResult:
        """Append events after expected_version; ConcurrencyConflict if stale, nothing written.

        Re-appending events whose event_ids are already stored for this aggregate is a no-op
        that returns the stored events with duplicate=True.
        """
        ...

    async def load(self, aggregate_id: str, up_to_version: int | None = None) -> list[StoredEvent]:
        """The aggregate's events in version order, optionally only up to a version."""
        ...

    async def read_all(self, from_position: int = 0, limit: int = 1000) -> list[StoredEvent]:
        """Events with position > from_position, in position (commit) order."""
        ...

    async def head_position(self) -> int:
        """The highest committed position (0 when empty)."""
        ...

    async def verify_chain(self, from_position: int = 0) -> ChainReport:
        """Recompute the (keyed) hash chain from a position to the head."""
        ...


def validate_append(
    aggregate_id: str,
    expected_version: int,
    events: Sequence[NewEvent],
    *,
    site_id: str = "",
    max_envelope_bytes: int = MAX_ENVELOPE_BYTES,
) -> None:
    """Argument checks every adapter applies before touching storage; an event whose envelope
    would be larger than the topic accepts is refused (the relay could never publish it)."""
    if not aggregate_id:
        raise InvalidArgument("aggregate_id", "must not be empty")
    if expected_version < 0:
        raise InvalidArgument("expected_version", "must be >= 0")
    if not events:
        raise InvalidArgument("events", "at least one event is required")
    ids = [e.event_id for e in events]
    for event_id in ids:
        try:
            canonical = str(uuid.UUID(event_id))
        except ValueError:
            raise InvalidArgument("event_id", f"{event_id!r} is not a UUID") from None
        if canonical != event_id:
            raise InvalidArgument("event_id", f"{event_id!r} must be in canonical lower-case form")
    if len(set(ids)) != len(ids):
        raise InvalidArgument("events.event_id", "must be unique within one append")
    if "\x00" in aggregate_id:
        raise InvalidArgument("aggregate_id", "must not contain NUL characters")
    for e in events:
        for name in (
            "event_type",
            "aggregate_type",
            "actor",
            "reason",
            "correlation_id",
            "causation_id",
        ):
            if "\x00" in getattr(e, name):
                raise InvalidArgument(name, "must not contain NUL characters")
        if not e.event_type:
            raise InvalidArgument("event_type", "must not be empty")
        if not e.actor:
            raise InvalidArgument("actor", "every event records who did it")
        if e.occurred_at.tzinfo is None:
            raise InvalidArgument("occurred_at", "must be timezone-aware")
        size = envelope_bytes(e, aggregate_id, site_id)
        if size > max_envelope_bytes:
            raise InvalidArgument(
                "events",
                f"{e.event_type} {e.event_id} of {aggregate_id[:80]}: its envelope would be"
                f" {size} bytes; the topic takes at most {max_envelope_bytes}",
            )


def envelope_bytes(new: NewEvent, aggregate_id: str, site_id: str) -> int:
    """The size of the event's envelope once stored, as the relay publishes it (the store's
    position, version and hashes taken at their largest, so never an underestimate but for a
    few bytes of timestamp)."""
    largest = 2**63 - 1
    stored = StoredEvent(
        position=largest, event_id=new.event_id, event_type=new.event_type,
        schema_version=new.schema_version, aggregate_type=new.aggregate_type,
        aggregate_id=aggregate_id, aggregate_version=largest, site_id=site_id,
        occurred_at=new.occurred_at, recorded_at=new.occurred_at, actor=new.actor,
        reason=new.reason, correlation_id=new.correlation_id, causation_id=new.causation_id,
        payload=new.payload, prev_hash=GENESIS, hash=GENESIS,
    )  # fmt: skip
    return int(to_envelope(stored).ByteSize())


def seal(
    new: NewEvent,
    *,
    key: ChainKey,
    position: int,
    aggregate_id: str,
    version: int,
    site_id: str,
    recorded_at: datetime,
    prev_hash: bytes,
) -> StoredEvent:
    """Turn a NewEvent into the StoredEvent the store will write, its keyed hash included."""
    unsealed = StoredEvent(
        position=position,
        event_id=new.event_id,
        event_type=new.event_type,
        schema_version=new.schema_version,
        aggregate_type=new.aggregate_type,
        aggregate_id=aggregate_id,
        aggregate_version=version,
        site_id=site_id,
        occurred_at=new.occurred_at.astimezone(UTC),
        recorded_at=recorded_at.astimezone(UTC),
        actor=new.actor,
        reason=new.reason,
        correlation_id=new.correlation_id,
        causation_id=new.causation_id,
        payload=new.payload,
        prev_hash=prev_hash,
        hash=b"",
    )
    return replace(unsealed, hash=event_hash(key, prev_hash, unsealed))


class InMemoryEventStore:
    """EventStore for tests and pure-domain runs; same contract as PostgresEventStore. Its
    chain key, unless given, is its own random one (the store lives and dies with it)."""

    def __init__(
        self,
        site_id: str,
        clock: Clock = utc_now,
        *,
        chain_key: ChainKey | None = None,
        max_envelope_bytes: int = MAX_ENVELOPE_BYTES,
    ) -> None:
        self.site_id = site_id
        self.chain_key = chain_key or ChainKey.generate()
        self.max_envelope_bytes = max_envelope_bytes
        self._clock = clock
        self._events: list[StoredEvent] = []
        self._by_aggregate: dict[str, list[StoredEvent]] = {}
        self._by_id: dict[str, StoredEvent] = {}
        self._lock = asyncio.Lock()

    async def append(
        self, aggregate_id: str, expected_version: int, events: Sequence[NewEvent]
    ) -> AppendResult:
        validate_append(
            aggregate_id, expected_version, events,
            site_id=self.site_id, max_envelope_bytes=self.max_envelope_bytes,
        )  # fmt: skip
        async with self._lock:
            known = [self._by_id[e.event_id] for e in events if e.event_id in self._by_id]
            if known:
                if len(known) != len(events) or any(e.aggregate_id != aggregate_id for e in known):
                    raise InvalidArgument(
                        "events.event_id",
                        "already used by a different append; event ids are never reused",
                    )
                return AppendResult(tuple(known), duplicate=True)
            stream = self._by_aggregate.setdefault(aggregate_id, [])
            if len(stream) != expected_version:
                raise ConcurrencyConflict(aggregate_id, expected_version, len(stream))
            prev = self._events[-1].hash if self._events else GENESIS
            now = self._clock()
            sealed = []
            for offset, new in enumerate(events, start=1):
                event = seal(
                    new,
                    key=self.chain_key,
                    position=len(self._events) + offset,
                    aggregate_id=aggregate_id,
                    version=expected_version + offset,
                    site_id=self.site_id,
                    recorded_at=now,
                    prev_hash=prev,
                )
                sealed.append(event)
                prev = event.hash
            self._events.extend(sealed)
            stream.extend(sealed)
            self._by_id.update((e.event_id, e) for e in sealed)
            return AppendResult(tuple(sealed))

    async def load(self, aggregate_id: str, up_to_version: int | None = None) -> list[StoredEvent]:
        stream = self._by_aggregate.get(aggregate_id, [])
        return [e for e in stream if up_to_version is None or e.aggregate_version <= up_to_version]

    async def read_all(self, from_position: int = 0, limit: int = 1000) -> list[StoredEvent]:
        return self._events[from_position : from_position + limit]

    async def head_position(self) -> int:
        return len(self._events)

    async def verify_chain(self, from_position: int = 0) -> ChainReport:
        tail = self._events[from_position:]
        return verify_chain(
            tail, self.chain_key, tail[0].prev_hash if tail and from_position else GENESIS
        )

    def tamper(self, position: int, **changes: object) -> None:
        """Test hook: silently rewrite a stored event, as an attacker with disk access would."""
        index = position - 1
        self._events[index] = replace(self._events[index], **changes)  # type: ignore[arg-type]
