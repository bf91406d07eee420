"""The anti-corruption translators: each upstream context's published messages (the generated
`cellbank.<context>.v1` classes, nothing of the producing service) as matching's own facts."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest
from cellbank.delivery.v1 import events_pb2 as delivery_pb
from cellbank.donor.v1 import events_pb2 as donor_pb
from cellbank.manufacturing.v1 import events_pb2 as manufacturing_pb
from cellbank.storage.v1 import events_pb2 as storage_pb
from google.protobuf.message import DecodeError, Message
from google.protobuf.timestamp_pb2 import Timestamp

from services.matching.domain.model import Cmv, OrderDispatched, OrderShipmentDispositioned
from services.matching.upstream import delivery, donor, manufacturing, storage
from shared.events import StoredEvent

AT = datetime(2026, 6, 1, 9, 30, tzinfo=UTC)
TRUNCATED = b"\x0a\x05ab"  # field 1, five bytes announced, two given


def stored(
    message: Message | str, aggregate_type: str, payload: bytes | None = None
) -> StoredEvent:
    """An event as a consumer receives it: the message's full name and its serialized bytes."""
    name = message if isinstance(message, str) else message.DESCRIPTOR.full_name
    data = (
        payload
        if payload is not None
        else b""
        if isinstance(message, str)
        else message.SerializeToString()
    )
    return StoredEvent(
        position=7, event_id="e-1", event_type=name, schema_version=1,
        aggregate_type=aggregate_type, aggregate_id="AGG-1", aggregate_version=3, site_id="MAN",
        occurred_at=AT, recorded_at=AT, actor="service:test", reason="test", correlation_id="",
        causation_id="", payload=data, prev_hash=b"", hash=b"",
    )  # fmt: skip


def timestamp(at: datetime) -> Timestamp:
    ts = Timestamp()
    ts.FromDatetime(at)
    return ts


# ---- storage ------------------------------------------------------------------------------


def test_a_stored_unit_becomes_stock_with_the_facts_matching_ranks_by() -> None:
    facts = storage_pb.UnitFacts(
        din="G1234", product_code="S1001VA0", product_type="NK-ALLO", viable_nk_cells=7e8,
        cd3_cells=2e5, volume_ml=20, expires_on="2027-01-31", segregated=False,
    )  # fmt: skip
    fact = storage.unit_fact(
        stored(storage_pb.UnitStored(address="T1/R1/B1/P01", facts=facts), "unit")
    )
    assert fact == storage.UnitStocked("G1234", "NK-ALLO", date(2027, 1, 31), 7e8, 2e5)


def test_a_reservation_is_a_hold_and_its_release_or_lapse_ends_it() -> None:
    reserved = storage_pb.UnitReserved(order_id="ORD-LON-1", hold_until=timestamp(AT))
    assert storage.unit_fact(stored(reserved, "unit")) == storage.UnitHeld("ORD-LON-1", AT)
    for ended in (storage_pb.ReservationReleased(order_id="ORD-LON-1"),
                  storage_pb.ReservationExpired(order_id="ORD-LON-1")):  # fmt: skip
        assert storage.unit_fact(stored(ended, "unit")) == storage.UnitHoldEnded()


@pytest.mark.parametrize(
    ("message", "status", "hold_ended"),
    [
        (storage_pb.UnitQuarantined(cause="excursion"), "QUARANTINED", False),
        (storage_pb.QuarantineLifted(signed_by="qa"), "STORED", False),
        (storage_pb.UnitExpired(expired_on="2027-01-31"), "EXPIRED", False),
        (storage_pb.UnitPicked(order_id="ORD-LON-1"), "PICKED", True),
        (storage_pb.UnitDiscarded(why="broken bag"), "DISCARDED", True),
        (storage_pb.UnitRecalled(recall_id="RCL-1"), "RECALLED", False),
    ],
)
def test_a_units_status_follows_its_owner(message: Message, status: str, hold_ended: bool) -> None:
    assert storage.unit_fact(stored(message, "unit")) == storage.UnitStatusChanged(
        status, hold_ended
    )


def test_a_move_or_an_unknown_kind_of_unit_event_only_moves_the_version_on() -> None:
    moved = storage_pb.UnitMoved(from_address="T1/R1/B1/P01", to_address="T1/R1/B1/P02")
    assert storage.unit_fact(stored(moved, "unit")) == storage.UnitRevised()
    assert (
        storage.unit_fact(stored("cellbank.storage.v1.UnitThawed", "unit")) == storage.UnitRevised()
    )


def test_tank_events_are_not_unit_facts() -> None:
    assert storage.unit_fact(stored(storage_pb.TankRegistered(tank_id="T1"), "tank")) is None


# ---- donor --------------------------------------------------------------------------------


def test_donor_typing_and_tests_become_the_donor_facts_matching_ranks_by() -> None:
    hla = donor_pb.HlaTyped(loci=[
        donor_pb.LocusTyping(locus="A", alleles=["A*02:01", "A*01:01"]),
        donor_pb.LocusTyping(locus="B", alleles=["B*07:02"]),
    ])  # fmt: skip
    assert donor.donor_fact(stored(hla, "donor")) == donor.DonorHlaTyped(
        ("A*02:01", "A*01:01", "B*07:02")
    )
    kir = donor_pb.KirGenotyped(genes=["KIR2DL1", "KIR3DL1"])
    assert donor.donor_fact(stored(kir, "donor")) == donor.DonorKirGenotyped(("KIR2DL1", "KIR3DL1"))
    cmv = donor_pb.CmvSerostatusRecorded(status="POSITIVE")
    assert donor.donor_fact(stored(cmv, "donor")) == donor.DonorCmvTested(Cmv.POSITIVE)
    abo = donor_pb.BloodGroupRecorded(abo="O", rh="NEG")
    assert donor.donor_fact(stored(abo, "donor")) == donor.DonorBloodGrouped("O")


def test_donor_events_matching_does_not_rank_by_are_ignored() -> None:
    registered = donor_pb.DonorRegistered(donor_id="D1", donor_ref="ref")
    assert donor.donor_fact(stored(registered, "donor")) is None


def test_a_cmv_status_matching_does_not_know_is_poison() -> None:
    with pytest.raises(ValueError):
        donor.donor_fact(stored(donor_pb.CmvSerostatusRecorded(status="MAYBE"), "donor"))


# ---- manufacturing ------------------------------------------------------------------------


def test_a_batch_names_its_donor_and_its_release_the_units_it_made() -> None:
    started = manufacturing_pb.BatchStarted(batch_id="B1", donor_id="D1", product_type="VST-CMV")
    assert manufacturing.batch_fact(stored(started, "batch")) == manufacturing.BatchOfDonor("D1")
    released = manufacturing_pb.BatchReleased(units=[
        manufacturing_pb.UnitRecord(unit_id="U1", restricting_allele="A*02:01"),
        manufacturing_pb.UnitRecord(unit_id="U2"),
    ])  # fmt: skip
    assert manufacturing.batch_fact(stored(released, "batch")) == manufacturing.BatchUnitsReleased(
        (manufacturing.ReleasedUnit("U1", "A*02:01"), manufacturing.ReleasedUnit("U2", ""))
    )
    qc = manufacturing_pb.QcResultRecorded(test="sterility", passed=True)
    assert manufacturing.batch_fact(stored(qc, "batch")) is None


# ---- delivery -----------------------------------------------------------------------------


def test_a_shipment_names_its_order_and_its_progress_becomes_facts_of_the_order() -> None:
    created = delivery_pb.ShipmentCreated(order_id="ORD-LON-1", order_site_id="LON")
    assert delivery.delivery_fact(stored(created, "shipment")) == delivery.ShipmentOpened(
        "AGG-1", "ORD-LON-1", "LON"
    )
    dispatched = delivery_pb.ShipmentDispatched(at=timestamp(AT), custodian="courier")
    assert delivery.delivery_fact(stored(dispatched, "shipment")) == OrderDispatched("AGG-1", AT)
    decided = delivery_pb.ShipmentDispositioned(decision="ACCEPT")
    assert delivery.delivery_fact(stored(decided, "shipment")) == OrderShipmentDispositioned(
        "AGG-1", "ACCEPT"
    )
    custody = delivery_pb.CustodyOffered(from_party="bank", to_party="courier")
    assert delivery.delivery_fact(stored(custody, "shipment")) is None


def test_a_recall_lists_the_hospitals_to_notify() -> None:
    notice = delivery_pb.RecallNotice(
        order_id="ORD-LON-1", order_site_id="LON", hospital_id="H1", unit_ids=["U1"],
        patient_ref="pt-1",
    )  # fmt: skip
    raised = delivery_pb.RecallRaised(trigger="DONOR_POSITIVE", reason="HIV", notices=[notice])
    assert delivery.delivery_fact(stored(raised, "recall")) == delivery.UnitsRecalled(
        "AGG-1", "DONOR_POSITIVE", "HIV",
        (delivery.RecallNotice("ORD-LON-1", "LON", "H1", ("U1",), "pt-1"),),
    )  # fmt: skip


# ---- every context ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("translate", "event_type", "aggregate_type"),
    [
        (storage.unit_fact, "cellbank.storage.v1.UnitStored", "unit"),
        (storage.unit_fact, "cellbank.storage.v1.UnitPicked", "unit"),
        (donor.donor_fact, "cellbank.donor.v1.HlaTyped", "donor"),
        (manufacturing.batch_fact, "cellbank.manufacturing.v1.BatchReleased", "batch"),
        (delivery.delivery_fact, "cellbank.delivery.v1.ShipmentCreated", "shipment"),
        (delivery.delivery_fact, "cellbank.delivery.v1.RecallRaised", "recall"),
    ],
)
def test_a_payload_that_does_not_parse_raises_what_the_codec_raises(
    translate: object, event_type: str, aggregate_type: str
) -> None:
    with pytest.raises(DecodeError):
        translate(stored(event_type, aggregate_type, TRUNCATED))  # type: ignore[operator]
