"""The one mapping between StoredEvent and the cellbank.common.v1.EventEnvelope protobuf."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from datetime import datetime
from typing import Any

from cellbank.common.v1 import envelope_pb2
from google.protobuf.timestamp_pb2 import Timestamp

from shared.events import StoredEvent
from shared.proto_mapping import timestamp_to_datetime


def _ts(value: datetime) -> Timestamp:
    ts = Timestamp()
    ts.FromDatetime(value)
    return ts


def _dt(ts: Timestamp) -> datetime:
    return timestamp_to_datetime(ts)


def to_envelope(event: StoredEvent) -> envelope_pb2.EventEnvelope:
    return envelope_pb2.EventEnvelope(
        event_id=event.event_id,
        event_type=event.event_type,
        schema_version=event.schema_version,
        aggregate_type=event.aggregate_type,
        aggregate_id=event.aggregate_id,
        aggregate_version=event.aggregate_version,
        site_id=event.site_id,
        occurred_at=_ts(event.occurred_at),
        recorded_at=_ts(event.recorded_at),
        actor=event.actor,
        reason=event.reason,
        correlation_id=event.correlation_id,
        causation_id=event.causation_id,
        payload=event.payload,
        prev_hash=event.prev_hash,
        hash=event.hash,
        position=event.position,
        traceparent=event.traceparent,
    )


def _envelope_reader() -> Callable[[envelope_pb2.EventEnvelope], StoredEvent]:
    """from_envelope, written once from StoredEvent's fields (every consumed record takes this
    path). The instance's slots are set directly: a frozen dataclass's __init__ sets each field
    through object.__setattr__, which cost half of a decode (issue 17's profiles).

    Checked here, at import, so the result is what StoredEvent(...) would build: every field is
    an init field of the dataclass's own __init__ (no __post_init__ skipped) and a field of the
    envelope; a Timestamp field becomes a datetime. Times are converted before the instance
    exists (a bad one raises ValueError with no half-built event about)."""
    fields = dataclasses.fields(StoredEvent)
    own_init = getattr(StoredEvent.__init__, "__qualname__", "") == "StoredEvent.__init__"
    if (
        hasattr(StoredEvent, "__post_init__")
        or "__slots__" not in vars(StoredEvent)
        or not own_init
        or any(not f.init for f in fields)
    ):
        raise TypeError("from_envelope needs StoredEvent as a slotted dataclass, init fields only")
    by_name = envelope_pb2.EventEnvelope.DESCRIPTOR.fields_by_name
    if missing := [f.name for f in fields if f.name not in by_name]:
        raise TypeError(f"StoredEvent fields not in EventEnvelope: {missing}")
    times = [f.name for f in fields if by_name[f.name].message_type is Timestamp.DESCRIPTOR]
    namespace: dict[str, Any] = {"_new": object.__new__, "_cls": StoredEvent, "_dt": _dt}
    lines = ["def from_envelope(env, /):"]
    lines += [f"    {name} = _dt(env.{name})" for name in times]
    lines.append("    event = _new(_cls)")
    for f in fields:
        namespace[f"_set_{f.name}"] = getattr(StoredEvent, f.name).__set__  # the slot's own
        value = f.name if f.name in times else f"env.{f.name}"
        lines.append(f"    _set_{f.name}(event, {value})")
    lines.append("    return event")
    exec("\n".join(lines), namespace)  # code built from the dataclass's own field names
    reader: Callable[[envelope_pb2.EventEnvelope], StoredEvent] = namespace["from_envelope"]
    reader.__doc__ = "The StoredEvent an envelope carries (fields as they are; no checks)."
    return reader


from_envelope = _envelope_reader()


def encode(event: StoredEvent) -> bytes:
    return to_envelope(event).SerializeToString(deterministic=True)


def parse(data: bytes) -> envelope_pb2.EventEnvelope:
    """The envelope message in the bytes; ValueError if they are not one."""
    env = envelope_pb2.EventEnvelope()
    try:
        env.ParseFromString(data)
    except Exception as exc:  # protobuf raises DecodeError, a bare Exception subclass
        raise ValueError(f"not an EventEnvelope: {exc}") from exc
    return env


def checked(env: envelope_pb2.EventEnvelope) -> envelope_pb2.EventEnvelope:
    if not env.event_id or not env.aggregate_id or not env.event_type:
        raise ValueError("EventEnvelope lacks event_id, aggregate_id or event_type")
    return env


def decode(data: bytes) -> StoredEvent:
    """Parse envelope bytes, without checking who signed them (shared.trust.verify_envelope
    does); raises ValueError on anything that is not a valid envelope."""
    return from_envelope(checked(parse(data)))
