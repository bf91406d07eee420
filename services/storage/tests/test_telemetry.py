"""Telemetry records (single readings and batches) and the gateway that batches readings."""

from __future__ import annotations

import asyncio
import math
from datetime import UTC, datetime, timedelta

import pytest
from cellbank.storage.v1 import events_pb2 as pb

from services.storage.adapters.telemetry_codec import (
    BATCH,
    BATCH_HEADERS,
    MESSAGE_TYPE,
    READING,
    decode_telemetry,
    encode_batch,
    encode_reading,
)
from services.storage.coldchain.watch import Reading, ReadingBatch, at_unix_ms
from services.storage.entrypoints.telemetry import TelemetryPublisher
from shared.topics import TELEMETRY

AT = datetime(2026, 11, 27, 9, 0, tzinfo=UTC)
AT_MS = 1_795_770_000_000  # AT in Unix milliseconds
NOW = AT + timedelta(minutes=1)  # when the monitor reads the records


def test_a_record_without_a_message_type_is_a_single_reading_as_sensors_sent_before_batches():
    reading = Reading("LON", "LON-T1", -190.5, AT)
    assert decode_telemetry(encode_reading(reading), None, NOW) == reading
    assert decode_telemetry(encode_reading(reading), READING.encode(), NOW) == reading


def test_a_batch_record_decodes_to_one_batch_of_the_sensors_readings():
    value = encode_batch("LON", "LON-T1", [-190.0, -189.5], [AT_MS, AT_MS + 1000])
    assert decode_telemetry(value, dict(BATCH_HEADERS)[MESSAGE_TYPE], NOW) == ReadingBatch(
        "LON", "LON-T1", [-190.0, -189.5], [AT_MS, AT_MS + 1000]
    )
    assert at_unix_ms(AT_MS) == AT


def test_a_shippers_logger_is_watched_under_its_own_key_single_or_batched():
    single = encode_reading(Reading("LON", "DS-04", -100.0, AT), device="shipper")
    batch = encode_batch("LON", "DS-04", [-100.0], [AT_MS], device="shipper")
    assert decode_telemetry(single, None, NOW).tank_id == "shipper:DS-04"
    assert decode_telemetry(batch, BATCH.encode(), NOW).tank_id == "shipper:DS-04"


@pytest.mark.parametrize(
    ("value", "message_type"),
    [
        (b"\xff\xff\xff", None),  # not protobuf
        (pb.TemperatureReading(tank_id="LON-T1").SerializeToString(), None),  # no time
        (encode_batch("LON", "", [-190.0], [AT_MS]), BATCH.encode()),  # no tank
        (encode_batch("LON", "LON-T1", [-190.0], [AT_MS], device="drone"), BATCH.encode()),
        (
            pb.TemperatureReadingBatch(
                tank_id="LON-T1", celsius=[-190.0, -191.0], measured_at_unix_ms=[AT_MS]
            ).SerializeToString(),
            BATCH.encode(),
        ),  # a temperature without its time
        (encode_batch("LON", "LON-T1", [-190.0], [AT_MS]), b"cellbank.storage.v1.Unknown"),
        # the rules readings are validated by at ingest hold for every reading of a batch
        (encode_batch("LON", "LON-T1", [-190.0, math.nan], [AT_MS] * 2), BATCH.encode()),
        (encode_batch("LON", "LON-T1", [-190.0, math.inf], [AT_MS] * 2), BATCH.encode()),
        (encode_batch("LON", "LON-T1", [-190.0, -300.0], [AT_MS] * 2), BATCH.encode()),
        (encode_batch("LON", "LON-T1", [-190.0] * 2, [AT_MS, 10**15]), BATCH.encode()),
        (encode_batch("LON", "LON-T1", [-190.0] * 2, [AT_MS, -(10**15)]), BATCH.encode()),
        (encode_reading(Reading("LON", "LON-T1", math.nan, AT)), None),
        (encode_reading(Reading("LON", "LON-T1", -190.0, NOW + timedelta(hours=1))), None),
    ],
)
def test_a_record_the_monitor_cannot_judge_is_refused(value, message_type):
    with pytest.raises(ValueError):
        decode_telemetry(value, message_type, NOW)


class FakeProducer:
    def __init__(self, fail: Exception | None = None) -> None:
        self.sent: list[tuple[str, bytes, bytes, list[tuple[str, bytes]]]] = []
        self.fail = fail

    async def send_and_wait(
        self, topic: str, value: bytes, key: bytes, headers: list[tuple[str, bytes]]
    ) -> None:
        if self.fail:
            raise self.fail
        self.sent.append((topic, value, key, headers))


def publisher_with(producer: FakeProducer) -> TelemetryPublisher:
    publisher = TelemetryPublisher("unused:9092", linger_s=0.01)
    publisher._producer = producer  # what run() would start
    return publisher


async def test_readings_of_a_tank_arriving_together_leave_as_one_batch_in_measurement_order():
    producer = FakeProducer()
    publisher = publisher_with(producer)
    readings = [
        Reading("LON", "LON-T1", -190.0, AT + timedelta(seconds=2)),
        Reading("LON", "LON-T1", -191.0, AT),
        Reading("LON", "LON-T2", -185.0, AT),
    ]
    await asyncio.gather(*(publisher.publish(r) for r in readings))
    batches = {
        key: decode_telemetry(value, dict(headers)[MESSAGE_TYPE], NOW)
        for topic, value, key, headers in producer.sent
        if topic == TELEMETRY
    }
    assert batches == {
        b"LON-T1": ReadingBatch("LON", "LON-T1", [-191.0, -190.0], [AT_MS, AT_MS + 2000]),
        b"LON-T2": ReadingBatch("LON", "LON-T2", [-185.0], [AT_MS]),
    }


async def test_every_caller_of_a_batch_that_could_not_be_stored_gets_the_error():
    publisher = publisher_with(FakeProducer(fail=RuntimeError("broker down")))
    results = await asyncio.gather(
        publisher.publish(Reading("LON", "LON-T1", -190.0, AT)),
        publisher.publish(Reading("LON", "LON-T1", -190.0, AT + timedelta(seconds=1))),
        return_exceptions=True,
    )
    assert [str(r) for r in results] == ["broker down", "broker down"]
