"""Writes corpus/envelopes.jsonl once: realistic event histories, one envelope per line.

Run by hand (`python -m tests.contract.write_event_corpus`) only to ADD a new event type: give
it a history of its own (a new aggregate id) in HISTORIES. The file is the frozen record of what
was published; test_event_envelope_corpus reads it, never this script. The script only appends
the histories whose aggregate is not in the file yet: existing lines never change.
"""

from __future__ import annotations

import base64
import json
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from cellbank.common.v1 import envelope_pb2

from services.delivery.adapters.codec import CODEC as DELIVERY
from services.delivery.domain import model as dl
from services.donor_intake.adapters.codec import CODEC as DONOR
from services.donor_intake.domain import din_sequence
from services.donor_intake.domain import model as dn
from services.kernel.isbt128 import make_din
from services.manufacturing.adapters.codec import CODEC as MANUFACTURING
from services.manufacturing.domain import model as mf
from services.matching.adapters.codec import CODEC as MATCHING
from services.matching.domain import model as mt
from services.matching.domain import reference
from services.storage.adapters.codec import CODEC as STORAGE
from services.storage.domain import model as st
from shared.commands import ProtoEventCodec, Signed
from shared.envelope_codec import to_envelope
from shared.events import StoredEvent
from shared.signing import RecordLink

CORPUS = Path(__file__).parent / "corpus" / "envelopes.jsonl"
T0 = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
NS = uuid.UUID("6f1c2a52-3c1e-4a8e-9d55-0b7c1e2a9f10")
SITE, FIN = "LON", "G1234"
DIN = make_din(FIN, 2026, 1)
DIN2 = make_din(FIN, 2026, 2)
DONOR_ID, BATCH_ID, TANK_ID = "donor-7f3a", "batch-2026-0001", "LON-T1"
UNIT_1, UNIT_2, UNIT_3 = "unit-2026-0001-1", "unit-2026-0001-2", "unit-2026-0002-1"
P01, P02, P03 = f"{TANK_ID}/R1/B1/P01", f"{TANK_ID}/R1/B1/P02", f"{TANK_ID}/R1/B1/P03"
ORDER_1, ORDER_2, ORDER_3, ORDER_4 = "order-a1", "order-b2", "order-c3", "order-d4"
SHIP_1, SHIP_2, RECALL = "ship-0001", "ship-0002", "recall-0001"
HOSPITAL = "hospital-royal-free"


def at(hours: float) -> datetime:
    return T0 + timedelta(hours=hours)


FACTS = st.UnitFacts(
    din=DIN,
    product_code="S1001VA0",
    product_type="NK",
    viable_nk_cells=5.2e8,
    cd3_cells=1.1e6,
    volume_ml=50.0,
    expires_on=date(2027, 3, 2),
    segregated=False,
)
UNIT_RECORD = mf.UnitRecord(
    unit_id=UNIT_1,
    din=DIN,
    product_code="S1001VA0",
    division=1,
    viable_nk_cells=5.2e8,
    cd3_cells=1.1e6,
    volume_ml=50.0,
    expires_on=date(2027, 3, 2),
    status="RELEASED",
    segregated=False,
    labels=(),
)
PATIENT = mt.PatientSnapshot(
    patient_ref="pt-0042",
    weight_kg=71.5,
    hla_alleles=("A*02:01", "A*24:02", "B*07:02", "B*44:02", "C*05:01", "C*07:02"),
    abo="O",
    cmv=mt.Cmv.NEGATIVE,
)
ALLOCATED = mt.AllocatedUnit(
    unit_id=UNIT_1,
    din=DIN,
    site_id=SITE,
    dose_cells_per_kg=7.27e6,
    unit_version=3,
    score=0.92,
    reasons=("KIR ligand mismatch (HvG)", "ABO compatible"),
)
SHIPPER = dl.Shipper(
    shipper_id="dry-shipper-07", qualified_hold_hours=168.0, uses_since_requalification=3
)


def storage_sig(hours: float) -> st.Signature:
    return st.Signature("Dana Scully", "QA release", at(hours), "kc-sub-qa-1", "", "")


def matching_sig(meaning: str, hours: float) -> mt.Signature:
    return mt.Signature("Dr Gregory House", meaning, at(hours), "kc-sub-clin-9", "", "")


def delivery_sig(meaning: str, hours: float) -> dl.ESignature:
    return dl.ESignature("Sam Courier", meaning, at(hours), "kc-sub-courier-3", "", "")


def order_placed(request_id: str) -> mt.OrderPlaced:
    return mt.OrderPlaced(
        hospital_id=HOSPITAL,
        request_id=request_id,
        patient=PATIENT,
        product_type=mt.ProductCategory.NK,
        dose_min=5e6,
        dose_max=1e7,
        needed_by=at(96),
        allow_multiple_units=False,
    )


ALLOCATION = mt.OrderAllocated(units=(ALLOCATED,), classification_version="3.58.0/2026-01")

# (owning codec, aggregate type, aggregate id, the aggregate's events in order)
HISTORIES: list[tuple[ProtoEventCodec, str, str, list[object]]] = [
    (DONOR, "din_sequence", f"{FIN}-2026", [din_sequence.DinAllocated(din=DIN, sequence=1)]),
    (DONOR, "donor", DONOR_ID, [
        dn.DonorRegistered(donor_id=DONOR_ID, donor_ref="LON-D-000731"),
        dn.ConsentGiven(consent_form="NK-DONOR-CONSENT v4"),
        dn.QuestionnaireRecorded(passed=True),
        dn.ScreeningResultRecorded(marker="HIV-1/2 Ab", result=dn.Result.NEGATIVE, specimen_date=date(2026, 3, 1)),
        dn.HlaTyped(loci=(dn.LocusTyping("A", ("A*02:01", "A*11:01")), dn.LocusTyping("B", ("B*07:02", "B*35:01")), dn.LocusTyping("C", ("C*04:01", "C*07:02"))), resolution="2-field"),
        dn.KirGenotyped(genes=("KIR2DL1", "KIR2DL3", "KIR3DL1", "KIR2DS4")),
        dn.BloodGroupRecorded(abo="O", rh="POS"),
        dn.CmvSerostatusRecorded(status=dn.Cmv.NEGATIVE),
        dn.EligibilityDetermined(status=dn.Eligibility.ELIGIBLE, reasons=(), as_of=date(2026, 3, 2), rules_version="2026.1"),
        dn.CollectionRecorded(din=DIN, collected_at=at(2), volume_ml=210.0, total_nucleated_cells=1.8e10, nk_cells=1.4e9, cd3_cells=3.0e9, eligibility=dn.Eligibility.ELIGIBLE, urgent_physician_request=""),
        dn.PositiveResultAfterCollection(marker="HBV NAT", specimen_date=date(2026, 4, 1), dins=(DIN,)),
        dn.DonorDeferred(until=date(2027, 4, 1), reason="HBV NAT positive"),
        dn.ConsentWithdrawn(),
    ]),
    (MANUFACTURING, "batch", BATCH_ID, [
        mf.BatchStarted(batch_id=BATCH_ID, din=DIN, donor_id=DONOR_ID, product_type="NK", spec_version="NK-SPEC-3", operator="op-jones"),
        mf.ProcessStepRecorded(step="CD3 depletion", day=0, performed_by="op-jones", performed_at=at(5), viable_cells=1.3e9, viability_pct=96.5),
        mf.QcResultRecorded(test="viability", value=95.1, text="", passed=True, tested_at=at(30)),
        mf.QcResultRecorded(test="endotoxin", value=None, text="< 0.5 EU/mL", passed=True, tested_at=at(30)),
        mf.BatchReleased(signature=mf.Signature("Dana Scully", at(48), "QA release", "kc-sub-qa-1", "", ""), donor_eligibility="ELIGIBLE", urgent_physician_request="", units=(UNIT_RECORD,)),
        mf.SterilityResultRecorded(positive=True, specimen_date=date(2026, 3, 9)),
        mf.BatchSterilityFailed(din=DIN, unit_ids=(UNIT_1,)),
    ]),
    (STORAGE, "tank", TANK_ID, [
        st.TankRegistered(tank_id=TANK_ID, positions=(st.PositionDef(P01, False), st.PositionDef(P02, False), st.PositionDef(P03, True))),
        st.PositionOccupied(address=P01, unit_id=UNIT_1),
        st.PositionVacated(address=P01, unit_id=UNIT_1),
    ]),
    (STORAGE, "unit", UNIT_1, [
        st.UnitStored(address=P01, facts=FACTS),
        st.UnitMoved(from_address=P01, to_address=P02),
        st.UnitQuarantined(cause=f"excursion:{TANK_ID}:2026-03-04T02:00:00+00:00", detail="-142.0 °C for 14 min"),
        st.QuarantineLifted(signed_by="dscully", meaning="QA release", signature=storage_sig(60)),
        st.UnitReserved(order_id=ORDER_2, hold_until=at(66)),
        st.ReservationReleased(order_id=ORDER_2, why="allocation lost"),
        st.UnitReserved(order_id=ORDER_3, hold_until=at(70)),
        st.ReservationExpired(order_id=ORDER_3, hold_until=at(70)),
        st.UnitReserved(order_id=ORDER_1, hold_until=at(80)),
        st.UnitPicked(order_id=ORDER_1, from_address=P02),
    ]),
    (STORAGE, "unit", UNIT_2, [
        st.UnitStored(address=P03, facts=FACTS),
        st.UnitRecalled(recall_id=RECALL, why="donor HBV NAT positive"),
        st.UnitDiscarded(from_address=P03, why="recalled", signature=storage_sig(200)),
    ]),
    (STORAGE, "unit", UNIT_3, [
        st.UnitStored(address=P01, facts=FACTS),
        st.UnitExpired(expired_on=date(2027, 3, 2)),
    ]),
    (MATCHING, "hla_reference", "ipd-imgt-hla", [
        reference.HlaReferenceLoaded(release="3.58.0", classification_version="3.58.0/2026-01", checksums=(reference.FileChecksum("hla.dat", "9f2c" * 16),), source="/srv/ipd-imgt-hla/3.58.0"),
    ]),
    (MATCHING, "order", ORDER_1, [
        order_placed("req-1001"),
        ALLOCATION,
        mt.OrderDispatched(shipment_id=SHIP_1, at=at(82)),
        mt.OrderShipmentCompromised(shipment_id=SHIP_1, cause="logger excursion"),
        mt.OrderShipmentDispositioned(shipment_id=SHIP_1, decision="ACCEPT"),
        mt.OrderDelivered(shipment_id=SHIP_1, at=at(90)),
        mt.OrderReceived(signature=matching_sig("received intact", 90.5)),
        mt.OrderInfused(unit_id=UNIT_1, signature=matching_sig("infused", 92), order_to_infusion_seconds=27 * 3600.0),
        mt.AdverseEventReported(report_id="ae-0001", unit_id=UNIT_1, description="grade 1 fever", severity="MILD", occurred_at=at(95)),
    ]),
    (MATCHING, "order", ORDER_2, [
        order_placed("req-1002"),
        ALLOCATION,
        mt.AllocationLost(unit_id=UNIT_1, why="unit quarantined"),
        mt.OrderRejected(reason="no unit within the dose range", classification_version="3.58.0/2026-01"),
    ]),
    (MATCHING, "order", ORDER_3, [order_placed("req-1003"), mt.OrderCancelled(reason="patient transferred")]),
    (MATCHING, "order", ORDER_4, [
        order_placed("req-1004"),
        ALLOCATION,
        mt.OrderDispatched(shipment_id=SHIP_2, at=at(84)),
        mt.OrderShipmentReturned(shipment_id=SHIP_2, outcome="RETURNED"),
    ]),
    (MATCHING, "notification", "notice-0001", [
        mt.NotificationIssued(hospital_id=HOSPITAL, recall_id=RECALL, order_id=ORDER_1, unit_ids=(UNIT_1,), message="Recall: donor HBV NAT positive", kind="RECALL"),
        mt.NotificationAcknowledged(by="Dr Gregory House"),
    ]),
    (DELIVERY, "shipment", SHIP_1, [
        dl.ShipmentCreated(order_id=ORDER_1, order_site_id=SITE, hospital_id=HOSPITAL, unit_ids=(UNIT_1,), shipper=SHIPPER, logger_id="logger-55", courier="MedCourier", route="LON→Royal Free", planned_transit_minutes=90.0, promised_at=at(90), order_placed_at=at(64)),
        dl.ShipmentDispatched(at=at(82), custodian="MedCourier", safety_factor=2.0),
        dl.ShipmentAtRisk(promised_at=at(90), expected_at=at(91), why="traffic"),
        dl.CustodyOffered(from_party="MedCourier", to_party=HOSPITAL, place="Royal Free pharmacy", at=at(89.5)),
        dl.CustodyAccepted(party=HOSPITAL, place="Royal Free pharmacy", at=at(89.6), signature=delivery_sig("custody accepted", 89.6)),
        dl.ShipmentDelivered(at=at(89.6), place="Royal Free pharmacy", order_to_delivery_seconds=25.6 * 3600, late=False),
    ]),
    (DELIVERY, "shipment", SHIP_2, [
        dl.ShipmentCreated(order_id=ORDER_4, order_site_id=SITE, hospital_id=HOSPITAL, unit_ids=(UNIT_3,), shipper=SHIPPER, logger_id="logger-56", courier="MedCourier", route="LON→Royal Free", planned_transit_minutes=90.0, promised_at=at(92), order_placed_at=None),
        dl.ShipmentDispatched(at=at(84), custodian="MedCourier", safety_factor=2.0),
        dl.ShipmentCompromised(cause="logger excursion", detail="-120 °C for 20 min"),
        dl.ShipmentDispositioned(decision=dl.Decision.REJECT, signature=delivery_sig("QA reject", 86)),
        dl.ShipmentReturned(outcome=dl.ReturnOutcome.DISCARDED, why="excursion"),
    ]),
    (DELIVERY, "recall", RECALL, [
        dl.RecallRaised(trigger=dl.Trigger.DONOR_POSITIVE, subject=DONOR_ID, reason="HBV NAT positive", dins=(DIN, DIN2), unit_ids=(UNIT_1, UNIT_2), source_event_id=str(uuid.uuid5(NS, f"donor/{DONOR_ID}/11")), notices=(dl.RecallNotice(ORDER_1, SITE, HOSPITAL, (UNIT_1,), "pt-0042"),)),
        dl.RecallUnitHeld(unit_id=UNIT_2, site_id=SITE, outcome="HELD"),
    ]),
]  # fmt: skip


def envelopes(skip: set[tuple[str, str]]) -> Iterator[tuple[str, str]]:
    """(event type, base64 envelope) for the events of HISTORIES, in order, but those of the
    aggregates in skip."""
    for codec, aggregate_type, aggregate_id, events in HISTORIES:
        if (aggregate_type, aggregate_id) in skip:
            continue
        for version, event in enumerate(events, start=1):
            event_id = str(uuid.uuid5(NS, f"{aggregate_type}/{aggregate_id}/{version}"))
            if isinstance(event, Signed):
                event = event.sealed(RecordLink(aggregate_id, version, event_id))
            event_type, payload = codec.encode(event)
            stored = StoredEvent(
                position=0,
                event_id=event_id,
                event_type=event_type,
                schema_version=codec.schema_version,
                aggregate_type=aggregate_type,
                aggregate_id=aggregate_id,
                aggregate_version=version,
                site_id=SITE,
                occurred_at=at(version),
                recorded_at=at(version),
                actor="operator:corpus",
                reason="frozen event corpus",
                correlation_id=f"corr-{aggregate_id}",
                causation_id="",
                payload=payload,
                prev_hash=b"",
                hash=b"",
            )
            data = to_envelope(stored).SerializeToString(deterministic=True)
            yield event_type, base64.b64encode(data).decode()


def main() -> int:
    frozen = CORPUS.read_text().splitlines() if CORPUS.exists() else []
    envelope = envelope_pb2.EventEnvelope
    parsed = [
        envelope.FromString(base64.b64decode(json.loads(line)["envelope"])) for line in frozen
    ]
    have = {(e.aggregate_type, e.aggregate_id) for e in parsed}
    new = [json.dumps({"event_type": t, "envelope": e}, sort_keys=True) for t, e in envelopes(have)]
    CORPUS.write_text("".join(f"{line}\n" for line in [*frozen, *new]))
    print(f"{len(new)} envelopes added to {CORPUS}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
