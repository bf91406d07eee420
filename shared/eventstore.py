"""The event store port, its shared validation, and the in-memory adapter."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Protocol

from shared.bounds import MAX_ENVELOPE_BYTES
from shared.chain_key import ChainKey
from shared.envelope_codec import to_envelope
from shared.errors import ConcurrencyConflict, InvalidArgument
from shared.events import NewEvent, StoredEvent
from shared.hashchain import GENESIS, ChainReport, event_hash, verify_chain
from shared.tracing import TRACEPARENT_BYTES, current_traceparent

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


@dataclass(frozen=True, slots=True)
class AggregateAppend:
    """One aggregate's part of an append: its events, after the version the command saw."""

    aggregate_id: str
    expected_version: int
    events: Sequence[NewEvent]


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

    async def append_all(self, appends: Sequence[AggregateAppend]) -> tuple[AppendResult, ...]:
        """Append to several aggregates atomically (one command touching several): every
        expected version is checked, then every event is written in order, or nothing is (a
        ConcurrencyConflict names the stale aggregate). One result per part, in order; a replay
        of the same event ids is a no-op answered with the stored events."""
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


def validate_appends(
    appends: Sequence[AggregateAppend],
    *,
    site_id: str = "",
    max_envelope_bytes: int = MAX_ENVELOPE_BYTES,
) -> None:
    """validate_append for every part, plus what only several parts can get wrong."""
    if not appends:
        raise InvalidArgument("appends", "at least one aggregate is required")
    for part in appends:
        validate_append(
            part.aggregate_id, part.expected_version, part.events,
            site_id=site_id, max_envelope_bytes=max_envelope_bytes,
        )  # fmt: skip
    aggregates = [part.aggregate_id for part in appends]
    if len(set(aggregates)) != len(aggregates):
        raise InvalidArgument("appends.aggregate_id", "each aggregate at most once per append")
    ids = [e.event_id for part in appends for e in part.events]
    if len(set(ids)) != len(ids):
        raise InvalidArgument("events.event_id", "must be unique within one append")


def envelope_bytes(new: NewEvent, aggregate_id: str, site_id: str) -> int:
    """The size of the event's envelope once stored, as the relay publishes it (the store's
    position, version and hashes taken at their largest, so never an underestimate but for a
    few bytes of timestamp; a traceparent counted whether or not one will be stored)."""
    largest = 2**63 - 1
    stored = StoredEvent(
        position=largest, event_id=new.event_id, event_type=new.event_type,
        schema_version=new.schema_version, aggregate_type=new.aggregate_type,
        aggregate_id=aggregate_id, aggregate_version=largest, site_id=site_id,
        occurred_at=new.occurred_at, recorded_at=new.occurred_at, actor=new.actor,
        reason=new.reason, correlation_id=new.correlation_id, causation_id=new.causation_id,
        payload=new.payload, prev_hash=GENESIS, hash=GENESIS, traceparent="0" * TRACEPARENT_BYTES,
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
    traceparent: str = "",
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
        traceparent=traceparent,
    )
    return replace(unsealed, hash=event_hash(key, prev_hash, unsealed))


@dataclass(slots=True)
class AppendState:
    """What appends are decided against, and what they decided so far (one transaction)."""

    versions: dict[str, int]  # current version of the aggregates asked about (absent = 0)
    stored: dict[str, StoredEvent]  # already stored events among those appended, by id
    prev_hash: bytes  # the chain's head
    recorded_at: datetime
    new: dict[str, StoredEvent] = field(default_factory=dict)  # sealed, in append order


Decided = list[tuple[list[str], bool]]  # per part: its event ids, and whether a replay


def decide_appends(
    appends: Sequence[AggregateAppend],
    state: AppendState,
    *,
    key: ChainKey,
    site_id: str,
    traceparent: str = "",
) -> Decided | Exception:
    """One (validated) append against the state so far: its parts' event ids, or the refusal.
    Every part is checked before any is sealed, so a refusal leaves the state untouched.
    `traceparent`: the appending span's, stored with the events (shared.tracing)."""
    seen = [[state.stored.get(e.event_id) or state.new.get(e.event_id) for e in part.events]
            for part in appends]  # fmt: skip
    if any(any(s) for s in seen):
        if not all(
            all(s) and all(e is not None and e.aggregate_id == part.aggregate_id for e in s)
            for part, s in zip(appends, seen, strict=True)
        ):
            return InvalidArgument(
                "events.event_id", "already used by a different append; event ids are never reused"
            )
        return [([e.event_id for e in part.events], True) for part in appends]  # a replay
    for part in appends:
        current = state.versions.get(part.aggregate_id, 0)
        if current != part.expected_version:
            return ConcurrencyConflict(part.aggregate_id, part.expected_version, current)
    for part in appends:
        for offset, new in enumerate(part.events, start=1):
            event = seal(
                new,
                key=key,
                position=0,  # the store's to assign; not hashed
                aggregate_id=part.aggregate_id,
                version=part.expected_version + offset,
                site_id=site_id,
                recorded_at=state.recorded_at,
                prev_hash=state.prev_hash,
                traceparent=traceparent,
            )
            state.new[event.event_id] = event
            state.prev_hash = event.hash
        state.versions[part.aggregate_id] = part.expected_version + len(part.events)
    return [([e.event_id for e in part.events], False) for part in appends]


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
        (result,) = await self.append_all([AggregateAppend(aggregate_id, expected_version, events)])
        return result

    async def append_all(self, appends: Sequence[AggregateAppend]) -> tuple[AppendResult, ...]:
        validate_appends(appends, site_id=self.site_id, max_envelope_bytes=self.max_envelope_bytes)
        async with self._lock:
            state = AppendState(
                versions={p.aggregate_id: len(self._by_aggregate.get(p.aggregate_id, ()))
                          for p in appends},
                stored={e.event_id: self._by_id[e.event_id]
                        for p in appends for e in p.events if e.event_id in self._by_id},
                prev_hash=self._events[-1].hash if self._events else GENESIS,
                recorded_at=self._clock(),
            )  # fmt: skip
            decided = decide_appends(
                appends, state, key=self.chain_key, site_id=self.site_id,
                traceparent=current_traceparent(),
            )  # fmt: skip
            if isinstance(decided, Exception):
                raise decided
            for new in state.new.values():
                event = replace(new, position=len(self._events) + 1)
                self._events.append(event)
                self._by_aggregate.setdefault(event.aggregate_id, []).append(event)
                self._by_id[event.event_id] = event
            return tuple(
                AppendResult(tuple(self._by_id[i] for i in ids), duplicate)
                for ids, duplicate in decided
            )

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
