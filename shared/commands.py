"""Command handling plumbing: load an aggregate, decide, append; no domain rules here."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, Protocol, TypeVar, runtime_checkable

from google.protobuf.message import Message

from shared.errors import ConcurrencyConflict, InvalidArgument
from shared.events import NewEvent, StoredEvent
from shared.eventstore import AggregateAppend, EventStore
from shared.ids import new_event_id
from shared.proto_mapping import from_proto, to_proto
from shared.signing import RecordLink

S = TypeVar("S")


@dataclass(frozen=True, slots=True)
class Meta:
    """Who, when, why of a command: every event it causes records them."""

    actor: str
    reason: str
    at: datetime
    correlation_id: str = ""
    causation_id: str = ""

    def correlated(self, correlation_id: str) -> Meta:
        """The same command meta, correlated with `correlation_id` unless it already is."""
        return dataclasses.replace(self, correlation_id=self.correlation_id or correlation_id)

    def because(self, reason: str) -> Meta:
        return dataclasses.replace(self, reason=reason)


class ProtoEventCodec:
    """Domain event dataclasses ⇄ (event_type, payload) through their protobuf messages."""

    def __init__(self, messages: Mapping[type, type[Message]], schema_version: int = 1) -> None:
        self._by_class = dict(messages)
        self._by_name = {m.DESCRIPTOR.full_name: (c, m) for c, m in messages.items()}
        self.schema_version = schema_version

    def encode(self, event: object) -> tuple[str, bytes]:
        message_cls = self._by_class[type(event)]
        return message_cls.DESCRIPTOR.full_name, to_proto(event, message_cls).SerializeToString()

    def decode(self, event_type: str, payload: bytes) -> Any:
        try:
            cls, message_cls = self._by_name[event_type]
        except KeyError:
            raise ValueError(f"unknown event type {event_type!r}") from None
        message = message_cls()
        message.ParseFromString(payload)
        return from_proto(message, cls)

    def event_types(self) -> list[str]:
        return sorted(self._by_name)

    def pairs(self) -> list[tuple[type, type[Message]]]:
        """Each domain event class with the message it is written as."""
        return list(self._by_class.items())

    def names(self, *classes: type) -> frozenset[str]:
        """The event types of these classes: a projection skips the others without decoding."""
        return frozenset(self._by_class[c].DESCRIPTOR.full_name for c in classes)


@dataclass(frozen=True, slots=True)
class Outcome(Generic[S]):
    """The aggregate after the command, its version, and what was appended."""

    state: S
    version: int
    events: tuple[StoredEvent, ...]


@dataclass(frozen=True, slots=True)
class Aggregate(Generic[S]):
    """How to rebuild one kind of aggregate from its events."""

    aggregate_type: str
    initial: S
    evolve: Callable[[S, Any], S]
    codec: ProtoEventCodec

    def fold(self, events: Sequence[StoredEvent]) -> S:
        state = self.initial
        for event in events:
            state = self.evolve(state, self.codec.decode(event.event_type, event.payload))
        return state


@runtime_checkable
class Signed(Protocol):
    """A domain event holding an e-signature: it links the signature to the event it becomes
    (event id, aggregate version) and hashes what was signed, before the event is stored."""

    def sealed(self, link: RecordLink) -> Any: ...


def _sealed(event: object, link: RecordLink) -> object:
    return event.sealed(link) if isinstance(event, Signed) else event


async def load(store: EventStore, kind: Aggregate[S], aggregate_id: str) -> tuple[S, int]:
    """The aggregate's current state and version (0 = never written)."""
    events = await store.load(aggregate_id)
    return kind.fold(events), len(events)


@dataclass(frozen=True, slots=True)
class Decision(Generic[S]):
    """One aggregate's part of a command, decided and not yet appended: the state after its
    events, the version they follow, the domain events and their records."""

    aggregate_id: str
    state: S
    version: int
    decided: tuple[object, ...]
    new: tuple[NewEvent, ...]


async def prepare(
    store: EventStore,
    kind: Aggregate[S],
    aggregate_id: str,
    decide: Callable[[S], Sequence[object]],
    meta: Meta,
    *,
    expected_version: int | None = None,
) -> Decision[S]:
    """Load → decide, without appending: `commit` appends it, alone or with the other
    aggregates its command touches. A refusal raises.

    expected_version is the version the caller last saw (ABORTED if the aggregate moved on);
    None means "whatever is current" — the append is still checked against concurrent writers.
    """
    if expected_version is not None and expected_version < 0:
        raise InvalidArgument("expected_version", "must be >= 0")
    state, version = await load(store, kind, aggregate_id)
    if expected_version is not None and expected_version != version:
        raise ConcurrencyConflict(aggregate_id, expected_version, version)
    decided = list(decide(state))
    event_ids = [new_event_id() for _ in decided]
    decided = [
        _sealed(event, RecordLink(aggregate_id, version + i, event_id))
        for i, (event, event_id) in enumerate(zip(decided, event_ids, strict=True), start=1)
    ]
    for event in decided:
        state = kind.evolve(state, event)
    new = []
    for event, event_id in zip(decided, event_ids, strict=True):
        event_type, payload = kind.codec.encode(event)
        new.append(
            NewEvent(
                event_type=event_type,
                aggregate_type=kind.aggregate_type,
                payload=payload,
                occurred_at=meta.at,
                actor=meta.actor,
                reason=meta.reason,
                schema_version=kind.codec.schema_version,
                correlation_id=meta.correlation_id,
                causation_id=meta.causation_id,
                event_id=event_id,
            )
        )
    return Decision(aggregate_id, state, version, tuple(decided), tuple(new))


async def commit(store: EventStore, *decisions: Decision[Any]) -> tuple[Outcome[Any], ...]:
    """Append every decision in one transaction (all or nothing; a ConcurrencyConflict names
    the aggregate that moved on); one outcome per decision, in order."""
    parts = [d for d in decisions if d.new]
    results = iter(
        await store.append_all([AggregateAppend(d.aggregate_id, d.version, d.new) for d in parts])
        if parts
        else ()
    )
    return tuple(
        Outcome(d.state, d.version + len(d.new), next(results).events)
        if d.new
        else Outcome(d.state, d.version, ())
        for d in decisions
    )


async def execute(
    store: EventStore,
    kind: Aggregate[S],
    aggregate_id: str,
    decide: Callable[[S], Sequence[object]],
    meta: Meta,
    *,
    expected_version: int | None = None,
) -> Outcome[S]:
    """Load → decide → append with optimistic concurrency. A refusal raises and writes nothing.
    (expected_version as in `prepare`.)"""
    decision = await prepare(
        store, kind, aggregate_id, decide, meta, expected_version=expected_version
    )
    (outcome,) = await commit(store, decision)
    return outcome
