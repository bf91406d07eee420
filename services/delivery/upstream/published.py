"""Reads one upstream context's published events into delivery's facts."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Generic, TypeVar

from google.protobuf.descriptor import FileDescriptor
from google.protobuf.message import Message

from shared.events import StoredEvent

F = TypeVar("F", covariant=True)


class Translator(Generic[F]):
    """The fact an event of the context means to delivery, or None for a published event
    delivery keeps nothing of (its payload is not even parsed). An event type the context never
    published raises ValueError and a payload that does not parse raises DecodeError, as the
    codecs do: the projection runner dead-letters the record."""

    def __init__(
        self, published: FileDescriptor, readers: Mapping[type[Message], Callable[[Any], F]]
    ) -> None:
        self._published = frozenset(m.full_name for m in published.message_types_by_name.values())
        self._readers = {m.DESCRIPTOR.full_name: (m, read) for m, read in readers.items()}

    def __call__(self, event: StoredEvent) -> F | None:
        reader = self._readers.get(event.event_type)
        if reader is None:
            if event.event_type in self._published:
                return None
            raise ValueError(f"unknown event type {event.event_type!r}")
        message_cls, read = reader
        return read(message_cls.FromString(event.payload))

    def event_types(self) -> frozenset[str]:
        """The event types delivery reads a fact from."""
        return frozenset(self._readers)
