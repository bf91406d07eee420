"""Delivery's anti-corruption layer: each foreign event it uses becomes the right fact of its
own, the events it ignores become None, and a poison record raises as the codecs do."""

from __future__ import annotations

import base64
import json
from datetime import UTC, date, datetime
from pathlib import Path

import pytest
from cellbank.donor.v1 import events_pb2 as dpb
from cellbank.manufacturing.v1 import events_pb2 as mpb
from cellbank.matching.v1 import events_pb2 as xpb
from cellbank.storage.v1 import events_pb2 as spb
from google.protobuf.message import DecodeError, Message
from google.protobuf.timestamp_pb2 import Timestamp

from services.delivery.upstream import donor, manufacturing, matching, storage
from services.delivery.upstream.published import Translator
from shared.events import StoredEvent

CORPUS = Path(__file__).resolve().parents[3] / "tests" / "contract" / "corpus"
AT = datetime(2026, 3, 1, 9, 30, tzinfo=UTC)
TRANSLATORS: dict[str, Translator[object]] = {
    "donor": donor.translate,
    "manufacturing": manufacturing.translate,
    "storage": storage.translate,
    "matching": matching.translate,
}


def stored(event_type: str, payload: bytes) -> StoredEvent:
    return StoredEvent(
        position=1, event_id="e-1", event_type=event_type, schema_version=1,
        aggregate_type="unit", aggregate_id="U-1", aggregate_version=1, site_id="LON",
        occurred_at=AT, recorded_at=AT, actor="test", reason="", correlation_id="",
        causation_id="", payload=payload, prev_hash=b"", hash=b"",
    )  # fmt: skip


def of(message: Message) -> StoredEvent:
    return stored(message.DESCRIPTOR.full_name, message.SerializeToString())


def timestamp(at: datetime) -> Timestamp:
    ts = Timestamp()
    ts.FromDatetime(at)
    return ts


S = storage.Stock
STORAGE_FACTS = [
    (spb.UnitStored(address="LON-T1/R1/B1/P01"),
     storage.UnitChanged(S.STORED, address="LON-T1/R1/B1/P01")),
    (spb.UnitMoved(from_address="a", to_address="b"), storage.UnitChanged(address="b")),
    (spb.UnitQuarantined(cause="excursion"), storage.UnitChanged(S.QUARANTINED)),
    (spb.QuarantineLifted(signed_by="qa"), storage.UnitChanged(S.STORED)),
    (spb.UnitExpired(expired_on="2026-03-01"), storage.UnitChanged(S.EXPIRED)),
    (spb.UnitPicked(order_id="O-1", from_address="a"),
     storage.UnitChanged(S.PICKED, address="", reserved_for="")),
    (spb.UnitDiscarded(from_address="a", why="broken"),
     storage.UnitChanged(S.DISCARDED, address="", reserved_for="")),
    (spb.UnitRecalled(recall_id="RCL-1"), storage.UnitChanged(S.RECALLED)),
    (spb.UnitReserved(order_id="O-1"), storage.UnitChanged(reserved_for="O-1")),
    (spb.ReservationReleased(order_id="O-1"), storage.UnitChanged(reserved_for="")),
    (spb.ReservationExpired(order_id="O-1"), storage.UnitChanged(reserved_for="")),
]  # fmt: skip


@pytest.mark.parametrize(("message", "fact"), STORAGE_FACTS, ids=lambda v: type(v).__name__)
def test_each_storage_unit_event_is_the_unit_change_lookback_keeps(message, fact):
    assert storage.translate(of(message)) == fact


def test_donor_events_become_registrations_collections_and_positive_results():
    assert donor.translate(of(dpb.DonorRegistered(donor_id="D-1"))) == donor.DonorRegistered()
    collection = dpb.CollectionRecorded(din="A9999260000017", collected_at=timestamp(AT))
    assert donor.translate(of(collection)) == donor.Collected("A9999260000017", AT)
    positive = dpb.PositiveResultAfterCollection(
        marker="HIV", specimen_date="2026-02-27", dins=["A1", "A2"]
    )
    assert donor.translate(of(positive)) == donor.PositiveAfterCollection(
        "HIV", date(2026, 2, 27), ("A1", "A2")
    )


def test_batch_events_become_starts_releases_and_sterility_failures():
    started = mpb.BatchStarted(batch_id="B-1", din="A1", donor_id="D-1", product_type="NK")
    assert manufacturing.translate(of(started)) == manufacturing.BatchStarted("A1", "D-1", "NK")
    released = mpb.BatchReleased(
        units=[mpb.UnitRecord(unit_id="U-1", din="A1"), mpb.UnitRecord(unit_id="U-2", din="A1")]
    )
    assert manufacturing.translate(of(released)) == manufacturing.BatchReleased(
        (manufacturing.ReleasedUnit("U-1", "A1"), manufacturing.ReleasedUnit("U-2", "A1"))
    )
    failed = mpb.BatchSterilityFailed(din="A1", unit_ids=["U-1", "U-2"])
    assert manufacturing.translate(of(failed)) == manufacturing.SterilityFailed(
        "A1", ("U-1", "U-2")
    )


STAGE = matching.OrderStage
MATCHING_FACTS = [
    (xpb.OrderPlaced(hospital_id="H-1", patient=xpb.PatientSnapshot(patient_ref="P-1")),
     matching.OrderPlaced("H-1", "P-1")),
    (xpb.OrderAllocated(units=[xpb.AllocatedUnit(unit_id="U-1"), xpb.AllocatedUnit(unit_id="U-2")]),
     matching.OrderProgressed(STAGE.ALLOCATED, ("U-1", "U-2"))),
    (xpb.AllocationLost(unit_id="U-1"), matching.OrderProgressed(STAGE.PLACED, ())),
    (xpb.OrderRejected(reason="none"), matching.OrderProgressed(STAGE.REJECTED)),
    (xpb.OrderCancelled(reason="x"), matching.OrderProgressed(STAGE.CANCELLED)),
    (xpb.OrderDispatched(shipment_id="S-1"), matching.OrderProgressed(STAGE.DISPATCHED)),
    (xpb.OrderDelivered(shipment_id="S-1"), matching.OrderProgressed(STAGE.DELIVERED)),
    (xpb.OrderReceived(), matching.OrderProgressed(STAGE.RECEIVED)),
    (xpb.OrderInfused(unit_id="U-1"), matching.UnitInfused("U-1")),
    (xpb.NotificationIssued(hospital_id="H-1", recall_id="RCL-1", order_id="O-1"),
     matching.HospitalNotified("H-1", "RCL-1", "O-1")),
    (xpb.NotificationAcknowledged(by="nurse"), matching.NotificationAcknowledged()),
    (xpb.HlaReferenceLoaded(release="3.58.0", classification_version="v", source="/ref",
                            checksums=[xpb.FileChecksum(file="a.txt", sha256="ab")]),
     matching.HlaReference("3.58.0", "v", (("a.txt", "ab"),), "/ref")),
]  # fmt: skip


@pytest.mark.parametrize(("message", "fact"), MATCHING_FACTS, ids=lambda v: type(v).__name__)
def test_each_matching_event_lookback_uses_is_its_fact(message, fact):
    assert matching.translate(of(message)) == fact


@pytest.mark.parametrize(
    "message",
    [
        spb.TankRegistered(tank_id="LON-T1"),
        spb.TemperatureReading(tank_id="LON-T1"),
        dpb.ConsentGiven(consent_form="v1"),
        dpb.DinAllocated(din="A1"),
        mpb.QcResultRecorded(test="sterility"),
        xpb.OrderShipmentCompromised(shipment_id="S-1"),
        xpb.AdverseEventReported(report_id="R-1"),
    ],
    ids=lambda m: m.DESCRIPTOR.name,
)
def test_a_published_event_delivery_keeps_nothing_of_is_none(message):
    context = message.DESCRIPTOR.full_name.split(".")[1]  # cellbank.<context>.v1.<Event>
    assert TRANSLATORS[context](of(message)) is None


@pytest.mark.parametrize("context", sorted(TRANSLATORS))
def test_an_event_type_this_version_does_not_know_is_ignored_not_poison(context):
    # A newer version of the context may publish it: an older delivery must keep flowing.
    assert TRANSLATORS[context](stored(f"cellbank.{context}.v1.NoSuchEvent", b"\xff")) is None


@pytest.mark.parametrize(
    ("translate", "event_type"),
    [
        (storage.translate, "cellbank.storage.v1.UnitStored"),
        (donor.translate, "cellbank.donor.v1.CollectionRecorded"),
        (manufacturing.translate, "cellbank.manufacturing.v1.BatchReleased"),
        (matching.translate, "cellbank.matching.v1.OrderPlaced"),
    ],
)
def test_a_payload_that_does_not_parse_is_poison(translate, event_type):
    with pytest.raises(DecodeError):
        translate(stored(event_type, b"\xff\xff\xff\xff"))


def test_a_timestamp_out_of_range_is_poison():
    collection = dpb.CollectionRecorded(din="A1")
    collection.collected_at.seconds = 10**12
    with pytest.raises(ValueError, match="timestamp out of range"):
        donor.translate(of(collection))


@pytest.mark.parametrize("context", sorted(TRANSLATORS))
def test_every_frozen_historical_event_still_translates(context):
    """The frozen corpus of the producers' events (tests/contract) still reads: a fact for
    every type delivery uses, None for the others."""
    translate = TRANSLATORS[context]
    lines = [json.loads(line) for line in (CORPUS / f"{context}.jsonl").read_text().splitlines()]
    assert lines
    facts = {
        line["event_type"]: translate(stored(line["event_type"], base64.b64decode(line["payload"])))
        for line in lines
    }
    assert {t for t, fact in facts.items() if fact is not None} == translate.event_types()
