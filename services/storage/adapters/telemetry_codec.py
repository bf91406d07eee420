"""The one place mapping cold-chain readings ⇄ their telemetry records (single or batch)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from cellbank.storage.v1 import events_pb2 as pb
from google.protobuf.message import DecodeError

from services.storage.coldchain.watch import Reading, ReadingBatch, validate_batch, validate_reading
from shared.errors import InvalidArgument

# The record header naming the message a telemetry record carries. Sensors that predate
# batches send no header: a record without one is a single TemperatureReading.
MESSAGE_TYPE = "message_type"
READING = pb.TemperatureReading.DESCRIPTOR.full_name
BATCH = pb.TemperatureReadingBatch.DESCRIPTOR.full_name
READING_TYPE, BATCH_TYPE = READING.encode(), BATCH.encode()
BATCH_HEADERS = [(MESSAGE_TYPE, BATCH_TYPE)]
DEVICES = ("", "tank", "shipper")
# A shipper is watched like a tank, under its own key (tank ids never contain ':').
SHIPPER = "shipper:"


def encode_reading(reading: Reading, device: str = "") -> bytes:
    message = pb.TemperatureReading(
        site_id=reading.site_id, tank_id=reading.tank_id, celsius=reading.celsius, device=device
    )
    message.measured_at.FromDatetime(reading.measured_at)
    return message.SerializeToString()


def encode_batch(
    site_id: str,
    tank_id: str,
    celsius: Sequence[float],
    measured_at_ms: Sequence[int],
    device: str = "",
) -> bytes:
    """One sensor's readings of an interval as one record (send it with BATCH_HEADERS)."""
    return pb.TemperatureReadingBatch(
        site_id=site_id,
        tank_id=tank_id,
        device=device,
        celsius=celsius,
        measured_at_unix_ms=measured_at_ms,
    ).SerializeToString()


def decode_telemetry(
    value: bytes, message_type: bytes | None, now: datetime
) -> Reading | ReadingBatch:
    """A telemetry record as the monitor watches it (`message_type`: the record's header);
    ValueError if it is not a reading the monitor can judge: undecodable, or refused by the
    rules readings are validated by at ingest (a physical temperature, a time up to `now`)."""
    try:
        if message_type == BATCH_TYPE:
            return validate_batch(_batch(value), now)
        if message_type is None or message_type == READING_TYPE:
            return validate_reading(_reading(value), now)
    except DecodeError as exc:
        raise ValueError(f"undecodable telemetry record: {exc}") from exc
    except InvalidArgument as exc:
        raise ValueError(f"invalid telemetry record: {exc}") from exc
    raise ValueError(f"unknown telemetry message type {message_type!r}")


def _reading(value: bytes) -> Reading:
    message = pb.TemperatureReading.FromString(value)
    if not message.tank_id or not message.HasField("measured_at"):
        raise ValueError("reading lacks tank_id or measured_at")
    return Reading(
        message.site_id,
        _watched_as(message.tank_id, message.device),
        message.celsius,
        message.measured_at.ToDatetime(tzinfo=UTC),
    )


def _batch(value: bytes) -> ReadingBatch:
    message = pb.TemperatureReadingBatch.FromString(value)
    if not message.tank_id:
        raise ValueError("batch lacks tank_id")
    return ReadingBatch(  # ValueError unless there is one time per temperature
        message.site_id,
        _watched_as(message.tank_id, message.device),
        message.celsius,  # read in place: max() and sum() run over them in C
        message.measured_at_unix_ms,
    )


def _watched_as(tank_id: str, device: str) -> str:
    if device not in DEVICES:
        raise ValueError(f"unknown device {device!r}")
    return f"{SHIPPER}{tank_id}" if device == "shipper" else tank_id
