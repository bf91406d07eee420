"""Each anti-corruption module reads a published event as its producer's own codec does, on
every field the consumer uses (so the read-model rows built from the facts stay as they were)."""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import given, settings
from hypothesis import strategies as st

from services.donor_intake.adapters.codec import CODEC as DONOR_CODEC
from services.donor_intake.domain import model as donor_model
from services.manufacturing.adapters.codec import CODEC as MANUFACTURING_CODEC
from services.manufacturing.domain import model as manufacturing_model
from services.manufacturing.upstream import donor as manufacturing_sees_donor
from services.storage.upstream import donor as storage_sees_donor
from services.storage.upstream import manufacturing as storage_sees_manufacturing
from shared.events import StoredEvent
from tests.support.strategies import dataclass_strategy

T0 = datetime(2026, 6, 1, 9, tzinfo=UTC)


def stored(event_type: str, payload: bytes) -> StoredEvent:
    return StoredEvent(
        1, "0190d5d8-0000-7000-8000-000000000001", event_type, 1, "x", "agg-1", 1,
        "LON", T0, T0, "someone", "", "", "", payload, b"", b"",
    )  # fmt: skip


def test_every_translated_type_is_a_type_its_producer_publishes():
    assert storage_sees_donor.EVENT_TYPES <= set(DONOR_CODEC.event_types())
    assert manufacturing_sees_donor.EVENT_TYPES <= set(DONOR_CODEC.event_types())
    assert storage_sees_manufacturing.EVENT_TYPES <= set(MANUFACTURING_CODEC.event_types())


@settings(deadline=None, max_examples=50)
@given(
    st.one_of(
        dataclass_strategy(manufacturing_model.BatchStarted),
        dataclass_strategy(manufacturing_model.BatchReleased),
        dataclass_strategy(manufacturing_model.QcResultRecorded),
    )
)
def test_storage_reads_manufacturing_events_as_manufacturing_wrote_them(event):
    fact = storage_sees_manufacturing.translate(stored(*MANUFACTURING_CODEC.encode(event)))
    match event:
        case manufacturing_model.BatchStarted():
            assert fact == storage_sees_manufacturing.BatchOrigin(
                event.donor_id, event.product_type
            )
        case manufacturing_model.BatchReleased():
            assert isinstance(fact, storage_sees_manufacturing.UnitsReleased)
            assert [
                (u.unit_id, u.din, u.product_code, u.viable_nk_cells, u.cd3_cells, u.volume_ml,
                 u.expires_on, u.segregated, u.restricting_allele)
                for u in event.units
            ] == [
                (u.unit_id, u.din, u.product_code, u.viable_nk_cells, u.cd3_cells, u.volume_ml,
                 u.expires_on, u.segregated, u.restricting_allele)
                for u in fact.units
            ]  # fmt: skip
        case _:
            assert fact is None


@settings(deadline=None, max_examples=50)
@given(
    st.one_of(
        dataclass_strategy(donor_model.HlaTyped),
        dataclass_strategy(donor_model.KirGenotyped),
        dataclass_strategy(donor_model.CmvSerostatusRecorded),
        dataclass_strategy(donor_model.BloodGroupRecorded),
        dataclass_strategy(donor_model.EligibilityDetermined),
        dataclass_strategy(donor_model.CollectionRecorded),
        dataclass_strategy(donor_model.ConsentGiven),
    )
)
def test_storage_and_manufacturing_read_donor_events_as_donor_intake_wrote_them(event):
    record = stored(*DONOR_CODEC.encode(event))
    seen_by_storage = storage_sees_donor.translate(record)
    seen_by_manufacturing = manufacturing_sees_donor.translate(record)
    match event:
        case donor_model.HlaTyped(loci):
            alleles = tuple(a for t in loci for a in t.alleles)
            assert seen_by_storage == storage_sees_donor.HlaAlleles(alleles)
        case donor_model.KirGenotyped(genes):
            assert seen_by_storage == storage_sees_donor.KirGenes(genes)
        case donor_model.CmvSerostatusRecorded(status):
            assert seen_by_storage == storage_sees_donor.CmvStatus(status.value)
        case donor_model.BloodGroupRecorded(abo, rh):
            assert seen_by_storage == storage_sees_donor.BloodGroup(abo, rh)
        case donor_model.EligibilityDetermined(status):
            assert seen_by_manufacturing == manufacturing_sees_donor.DonorEligibility(status.value)
        case donor_model.CollectionRecorded():
            assert seen_by_manufacturing == manufacturing_sees_donor.Collection(
                event.din, event.collected_at, event.eligibility.value,
                event.urgent_physician_request,
            )  # fmt: skip
    if not isinstance(
        event,
        (
            donor_model.HlaTyped,
            donor_model.KirGenotyped,
            donor_model.CmvSerostatusRecorded,
            donor_model.BloodGroupRecorded,
        ),
    ):
        assert seen_by_storage is None
    if not isinstance(event, (donor_model.EligibilityDetermined, donor_model.CollectionRecorded)):
        assert seen_by_manufacturing is None
