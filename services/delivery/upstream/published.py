"""Reads one upstream context's published events into delivery's facts."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Generic, TypeVar

from google.protobuf.message import Message

from shared.events import StoredEvent

F = TypeVar("F", covariant=True)


class Translator(Generic[F]):
    """The fact an event of the context means to delivery, or None for an event delivery keeps
    nothing of (its payload is not even parsed), whether this version knows its type or not. A
    payload of a type delivery reads that does not parse raises DecodeError, as the codecs do:
    the projection runner dead-letters the record."""

    def __init__(self, readers: Mapping[type[Message], Callable[[Any], F]]) -> None:
        self._readers = {m.DESCRIPTOR.full_name: (m, read) for m, read in readers.items()}

    def __call__(self, event: StoredEvent) -> F | None:
        reader = self._readers.get(event.event_type)
        if reader is None:
            # A type delivery keeps nothing of — also one a newer version of the context
            # publishes (sites run different versions): ignored, never poison.
            return None
        message_cls, read = reader
        return read(message_cls.FromString(event.payload))

    def event_types(self) -> frozenset[str]:
        """The event types delivery reads a fact from."""
        return frozenset(self._readers)
