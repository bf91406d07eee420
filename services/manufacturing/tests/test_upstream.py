"""Manufacturing's anti-corruption module: published donor events → its facts."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from cellbank.donor.v1 import events_pb2 as pb
from google.protobuf.message import DecodeError, Message
from google.protobuf.timestamp_pb2 import Timestamp

from services.manufacturing.upstream import donor
from shared.events import StoredEvent

T0 = datetime(2026, 6, 1, 9, 30, 0, 123456, tzinfo=UTC)


def stored(event_type: str, payload: bytes) -> StoredEvent:
    return StoredEvent(
        1, "0190d5d8-0000-7000-8000-000000000001", event_type, 1, "donor", "donor-1", 3,
        "LON", T0, T0, "someone", "", "", "", payload, b"", b"",
    )  # fmt: skip


def published(message: Message) -> StoredEvent:
    return stored(message.DESCRIPTOR.full_name, message.SerializeToString())


def timestamp(at: datetime) -> Timestamp:
    ts = Timestamp()
    ts.FromDatetime(at)
    return ts


def test_eligibility_determined_becomes_the_donors_eligibility():
    event = published(pb.EligibilityDetermined(status="ELIGIBLE", reasons=["ok"], as_of="x"))
    assert donor.translate(event) == donor.DonorEligibility("ELIGIBLE")


def test_collection_recorded_becomes_a_collection():
    message = pb.CollectionRecorded(
        din="G123426000001", collected_at=timestamp(T0), volume_ml=250.0,
        eligibility="INELIGIBLE", urgent_physician_request="dr. who: urgent",
    )  # fmt: skip
    assert donor.translate(published(message)) == donor.Collection(
        "G123426000001", T0, "INELIGIBLE", "dr. who: urgent"
    )


@pytest.mark.parametrize("message", [pb.HlaTyped(), pb.DonorRegistered(), pb.DinAllocated()])
def test_events_manufacturing_does_not_use_are_ignored_undecoded(message):
    assert donor.translate(stored(message.DESCRIPTOR.full_name, b"\xff garbage")) is None


def test_an_undecodable_payload_is_poison():
    with pytest.raises(DecodeError):
        donor.translate(stored("cellbank.donor.v1.CollectionRecorded", b"\xff\xff\xff garbage"))


@pytest.mark.parametrize(
    "message",
    [
        pb.EligibilityDetermined(status="PROBABLY"),
        pb.CollectionRecorded(eligibility="ELIGIBLE", collected_at=Timestamp(seconds=2**62)),
    ],
)
def test_values_outside_the_published_language_are_poison(message):
    with pytest.raises(ValueError):
        donor.translate(published(message))
