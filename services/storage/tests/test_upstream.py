"""Storage's anti-corruption modules: published donor and manufacturing events → its facts."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest
from cellbank.donor.v1 import events_pb2 as donor_pb
from cellbank.manufacturing.v1 import events_pb2 as manufacturing_pb
from google.protobuf.message import DecodeError, Message

from services.storage.upstream import donor, manufacturing
from shared.events import StoredEvent

T0 = datetime(2026, 6, 1, 9, tzinfo=UTC)


def published(message: Message, aggregate_type: str = "donor") -> StoredEvent:
    return stored(message.DESCRIPTOR.full_name, message.SerializeToString(), aggregate_type)


def stored(event_type: str, payload: bytes, aggregate_type: str = "donor") -> StoredEvent:
    return StoredEvent(
        1, "0190d5d8-0000-7000-8000-000000000001", event_type, 1, aggregate_type, "agg-1", 1,
        "MAN", T0, T0, "someone", "", "", "", payload, b"", b"",
    )  # fmt: skip


UNIT = manufacturing_pb.UnitRecord(
    unit_id="unit-1", din="G123426000001", product_code="E7654V00", division=1,
    viable_nk_cells=5e8, cd3_cells=1e6, volume_ml=50.0, expires_on="2027-03-01",
    status="RELEASED", segregated=True, labels=["x"], restricting_allele="A*02:01",
)  # fmt: skip


@pytest.mark.parametrize(
    ("message", "fact"),
    [
        (
            manufacturing_pb.BatchStarted(batch_id="b", din="d", donor_id="donor-1",
                                          product_type="NK", operator="op"),
            manufacturing.BatchOrigin("donor-1", "NK"),
        ),
        (
            manufacturing_pb.BatchReleased(donor_eligibility="ELIGIBLE", units=[UNIT]),
            manufacturing.UnitsReleased((manufacturing.ReleasedUnit(
                "unit-1", "G123426000001", "E7654V00", 5e8, 1e6, 50.0, date(2027, 3, 1), True,
                "A*02:01",
            ),)),
        ),
    ],
)  # fmt: skip
def test_each_used_manufacturing_event_becomes_a_storage_fact(message, fact):
    assert manufacturing.translate(published(message, "batch")) == fact


@pytest.mark.parametrize(
    ("message", "fact"),
    [
        (
            donor_pb.HlaTyped(loci=[donor_pb.LocusTyping(locus="A", alleles=["A*02:01", "A*24:02"]),
                                    donor_pb.LocusTyping(locus="B", alleles=["B*07:02"])]),
            donor.HlaAlleles(("A*02:01", "A*24:02", "B*07:02")),
        ),
        (donor_pb.KirGenotyped(genes=["KIR2DL1", "KIR3DL1"]), donor.KirGenes(("KIR2DL1", "KIR3DL1"))),
        (donor_pb.CmvSerostatusRecorded(status="NEGATIVE"), donor.CmvStatus("NEGATIVE")),
        (donor_pb.BloodGroupRecorded(abo="O", rh="NEG"), donor.BloodGroup("O", "NEG")),
    ],
)  # fmt: skip
def test_each_used_donor_event_becomes_a_storage_fact(message, fact):
    assert donor.translate(published(message)) == fact


@pytest.mark.parametrize(
    ("translate", "message"),
    [
        (manufacturing.translate, manufacturing_pb.QcResultRecorded(test="sterility")),
        (donor.translate, donor_pb.ConsentGiven()),
        (donor.translate, donor_pb.DinAllocated()),
    ],
)
def test_events_storage_does_not_use_are_ignored_undecoded(translate, message):
    assert translate(stored(message.DESCRIPTOR.full_name, b"\xff not a message")) is None


@pytest.mark.parametrize(
    ("translate", "event_type"),
    [
        (manufacturing.translate, "cellbank.manufacturing.v1.BatchReleased"),
        (donor.translate, "cellbank.donor.v1.HlaTyped"),
    ],
)
def test_an_undecodable_payload_is_poison(translate, event_type):
    with pytest.raises(DecodeError):
        translate(stored(event_type, b"\xff\xff\xff garbage"))


def test_values_outside_the_published_language_are_poison():
    with pytest.raises(ValueError, match="CMV"):
        donor.translate(published(donor_pb.CmvSerostatusRecorded(status="MAYBE")))
    unit = manufacturing_pb.UnitRecord(unit_id="u", expires_on="next spring")
    with pytest.raises(ValueError):
        manufacturing.translate(published(manufacturing_pb.BatchReleased(units=[unit]), "batch"))
