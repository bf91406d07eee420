"""The one mapping between StoredEvent and the cellbank.common.v1.EventEnvelope protobuf."""

from __future__ import annotations

from datetime import datetime

from cellbank.common.v1 import envelope_pb2
from google.protobuf.timestamp_pb2 import Timestamp

from shared.events import StoredEvent
from shared.proto_mapping import from_proto


def _ts(value: datetime) -> Timestamp:
    ts = Timestamp()
    ts.FromDatetime(value)
    return ts


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


def from_envelope(env: envelope_pb2.EventEnvelope) -> StoredEvent:
    """The StoredEvent an envelope carries (fields by name, as they are; no checks)."""
    return from_proto(env, StoredEvent)


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
