"""A site's log, synthesised: the real domain events of donor intake, manufacturing and storage,
encoded by the services' own codecs into the platform's envelopes, hash-chained per service
store and keyed by aggregate — what a site's relays publish. Used by the replay benchmark and
by the tests that hold batched projection writes equal to one-by-one ones.

A donor's life is 17 events (registration, consent, eight screening results, questionnaire,
HLA, KIR, ABO, CMV, eligibility, collection), its batch two (started, released with four
units) and each unit six (stored, moved, reserved, released, reserved again, picked).
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta

from services.donor_intake.adapters.codec import CODEC as DONOR_CODEC
from services.donor_intake.domain import model as donor
from services.manufacturing.adapters.codec import CODEC as MANUFACTURING_CODEC
from services.manufacturing.domain import model as manufacturing
from services.matching.adapters.codec import CODEC as MATCHING_CODEC
from services.matching.domain import model as matching
from services.storage.adapters.codec import CODEC as STORAGE_CODEC
from services.storage.domain import model as storage
from shared.chain_key import ChainKey
from shared.events import StoredEvent
from shared.hashchain import GENESIS, event_hash
from shared.topics import DONOR_EVENTS, MANUFACTURING_EVENTS, MATCHING_EVENTS, STORAGE_EVENTS

SITE = "RPL"
EVENTS_PER_DONOR = 43
MARKERS = ("HIV-1/2", "HIV-1 NAT", "HBsAg", "anti-HBc", "HCV", "HCV NAT", "HTLV-I/II", "Syphilis")
# Now (at import), not a fixed date: the session's site keys are valid from their making (less
# an hour's clock slack), and a record recorded before its key was valid does not verify.
T0 = datetime.now(UTC).replace(microsecond=0)
SERVICES = ("donor_intake", "manufacturing", "storage", "matching")  # whose events it holds


class Store:
    """One service's event store as its relay would publish it: positions and a hash chain."""

    def __init__(self, service: str, key: ChainKey | None = None) -> None:
        self.service = service
        self.key = key or ChainKey.generate()  # the store's chain key (a restore needs it)
        self.position = 0
        self.prev = GENESIS

    def event(
        self, aggregate_type: str, aggregate_id: str, version: int, event: object, at: datetime
    ) -> StoredEvent:
        codec = {
            "donor_intake": DONOR_CODEC,
            "manufacturing": MANUFACTURING_CODEC,
            "storage": STORAGE_CODEC,
            "matching": MATCHING_CODEC,
        }[self.service]
        event_type, payload = codec.encode(event)
        self.position += 1
        stored = StoredEvent(
            position=self.position, event_id=str(uuid.uuid4()), event_type=event_type,
            schema_version=1, aggregate_type=aggregate_type, aggregate_id=aggregate_id,
            aggregate_version=version, site_id=SITE, occurred_at=at, recorded_at=at,
            actor="operator:bench", reason="bench replay log", correlation_id=aggregate_id,
            causation_id="", payload=payload, prev_hash=self.prev, hash=b"",
        )  # fmt: skip
        digest = event_hash(self.key, self.prev, stored)
        self.prev = digest
        return dataclasses.replace(stored, hash=digest)


def donor_life(n: int, stores: dict[str, Store]) -> Iterator[tuple[str, StoredEvent]]:
    """(topic, event) of one donor's whole life at the site, in log order."""
    at = T0 + timedelta(minutes=n)
    donor_id, din = (
        f"donor-{SITE}-{n:08d}",
        f"G1234{26 + n // 1_000_000 % 70:02d}{n % 1_000_000:06d}",
    )
    batch_id = f"batch-{din}"
    donor_events: list[object] = [
        donor.DonorRegistered(donor_id, f"REF-{n:08d}"),
        donor.ConsentGiven("consent-v3"),
        *(donor.ScreeningResultRecorded(m, donor.Result.NEGATIVE, at.date()) for m in MARKERS),
        donor.QuestionnaireRecorded(True),
        donor.HlaTyped(
            (
                donor.LocusTyping("A", ("A*02:01", "A*11:01")),
                donor.LocusTyping("B", ("B*07:02", "B*44:02")),
                donor.LocusTyping("C", ("C*07:02", "C*05:01")),
            ),
            "high",
        ),
        donor.KirGenotyped(("2DL1", "2DL2", "2DL3", "2DS2", "3DL1")),
        donor.BloodGroupRecorded("O", "+"),
        donor.CmvSerostatusRecorded(donor.Cmv.NEGATIVE),
        donor.EligibilityDetermined(donor.Eligibility.ELIGIBLE, (), at.date(), "rules-2026.1"),
        donor.CollectionRecorded(
            din, at, 250.0, 2.5e10, 1.2e9, 3.0e8, donor.Eligibility.ELIGIBLE, ""
        ),
    ]
    d = stores["donor_intake"]
    for version, e in enumerate(donor_events, start=1):
        yield DONOR_EVENTS, d.event("donor", donor_id, version, e, at)
    expires = date(2031, 1, 1)
    units = tuple(
        manufacturing.UnitRecord(
            f"{din}-S1001-{k:02d}", din, "S1001", k, 7e8, 2e5, 20.0, expires, "RELEASED", False, ()
        )
        for k in range(1, 5)
    )
    m = stores["manufacturing"]
    started = manufacturing.BatchStarted(batch_id, din, donor_id, "NK-ALLO", "nk-2026.1", "op")
    yield MANUFACTURING_EVENTS, m.event("batch", batch_id, 1, started, at)
    released = manufacturing.BatchReleased(
        manufacturing.Signature("qa-quinn", at, "release"), "ELIGIBLE", "", units
    )
    yield MANUFACTURING_EVENTS, m.event("batch", batch_id, 2, released, at)
    s = stores["storage"]
    for k, u in enumerate(units):
        for version, e in enumerate(unit_life(n, k, din, at, expires), start=1):
            yield STORAGE_EVENTS, s.event("unit", u.unit_id, version, e, at)


def new_stores() -> dict[str, Store]:
    return {name: Store(name) for name in SERVICES}


def site_log(donors: int, first: int = 0) -> Iterator[tuple[str, StoredEvent]]:
    """The lives of `donors` donors, one after another (each aggregate's events in order)."""
    stores = new_stores()
    for n in range(first, first + donors):
        yield from donor_life(n, stores)


def order_life(n: int, stores: dict[str, Store]) -> Iterator[tuple[str, StoredEvent]]:
    """(topic, event) of one hospital order's life at the site — placed, allocated, shipped,
    delivered, received, infused — and the recall notice its hospital then gets and
    acknowledges (not part of the replay benchmark's log: the lookback read model's tests)."""
    at = T0 + timedelta(minutes=n)
    order_id, notice = f"ORD-{SITE}-{n:08d}", f"NTF-{SITE}-{n:08d}"
    unit = f"G1234{26 + n // 1_000_000 % 70:02d}{n % 1_000_000:06d}-S1001-01"
    signed = matching.Signature("H1 nurse", "received", at)
    order_events: list[object] = [
        matching.OrderPlaced(
            "H1", f"req-{n}",
            matching.PatientSnapshot(f"PT-{n}", 70.0, ("A*02:01",), "O", matching.Cmv.NEGATIVE),
            matching.ProductCategory.NK, 5e6, 3e7, None,
        ),
        matching.OrderAllocated(
            (matching.AllocatedUnit(unit, unit[:13], SITE, 1e7, 3, 42.0, ("KIR +40",)),),
            "kir-ligand-2026.1+rank-1",
        ),
        matching.OrderDispatched(f"SHP-{n}", at),
        matching.OrderDelivered(f"SHP-{n}", at),
        matching.OrderReceived(signed),
        matching.OrderInfused(unit, signed, 3600.0),
    ]  # fmt: skip
    m = stores["matching"]
    for version, e in enumerate(order_events, start=1):
        yield MATCHING_EVENTS, m.event("order", order_id, version, e, at)
    issued = matching.NotificationIssued("H1", f"RCL-{n}", order_id, (unit,), "recall")
    yield MATCHING_EVENTS, m.event("notification", notice, 1, issued, at)
    acknowledged = matching.NotificationAcknowledged("H1 nurse")
    yield MATCHING_EVENTS, m.event("notification", notice, 2, acknowledged, at)


def unit_life(n: int, k: int, din: str, at: datetime, expires: date) -> list[object]:
    """Storage's events of donor n's unit k: stored, moved, reserved, released, reserved again,
    picked."""
    here, there = f"{SITE}-T1/R{n % 10 + 1}/B{k + 1}/P01", f"{SITE}-T2/R1/B{k + 1}/P01"
    facts = storage.UnitFacts(din, "S1001", "NK-ALLO", 7e8, 2e5, 20.0, expires, False)
    order, hold = f"ORD-{SITE}-{n:08d}", at + timedelta(hours=24)
    return [
        storage.UnitStored(here, facts),
        storage.UnitMoved(here, there),
        storage.UnitReserved(order, hold),
        storage.ReservationReleased(order, "cancelled"),
        storage.UnitReserved(order + "-2", hold),
        storage.UnitPicked(order + "-2", there),
    ]
