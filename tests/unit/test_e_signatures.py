"""Part 11 records: a signature is linked to the event holding it (event id + hash of what was
signed), and replaying the stored events gives the state the live command produced."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

import pytest

from services.delivery.adapters.codec import SHIPMENT
from services.delivery.domain import shipment
from services.delivery.domain.model import (
    CustodyAccepted,
    Decision,
    ESignature,
    ShipmentDispositioned,
)
from services.delivery.tests.test_shipment import OFFERED, SIGNED, accept
from services.manufacturing.domain.model import BatchReleased, Signature
from services.storage.domain.model import QuarantineLifted, UnitDiscarded
from services.storage.domain.model import Signature as StorageSignature
from shared.commands import Meta, execute, load
from shared.eventstore import InMemoryEventStore
from shared.signing import RecordLink, signed_content_hash

AT = datetime(2026, 6, 1, 9, 0, tzinfo=UTC)
LINK = RecordLink("shipment-1", 5, "0190b6a2-0000-7000-8000-000000000001")
META = Meta("courier:bob", "took it", AT)


async def _shipment_with_offer(store: InMemoryEventStore) -> None:
    await execute(store, SHIPMENT, "shipment-1", lambda _: list(OFFERED), META)


async def test_execute_links_a_signature_to_the_event_that_holds_it():
    store = InMemoryEventStore("LON")
    await _shipment_with_offer(store)
    outcome = await execute(
        store, SHIPMENT, "shipment-1", lambda s: shipment.decide(s, accept()), META
    )
    (stored,) = outcome.events
    recorded = SHIPMENT.codec.decode(stored.event_type, stored.payload)
    assert isinstance(recorded, CustodyAccepted)
    assert recorded.signature.event_id == stored.event_id
    link = RecordLink(stored.aggregate_id, stored.aggregate_version, stored.event_id)
    unsealed = dataclasses.replace(
        recorded, signature=dataclasses.replace(recorded.signature, event_id="", content_hash="")
    )
    assert unsealed.sealed(link) == recorded, "the stored hash is the hash of what was signed"
    assert len(recorded.signature.content_hash) == 64


async def test_replaying_signed_events_gives_the_live_state():
    store = InMemoryEventStore("LON")
    await _shipment_with_offer(store)
    live = await execute(
        store, SHIPMENT, "shipment-1", lambda s: shipment.decide(s, accept()), META
    )
    replayed, version = await load(store, SHIPMENT, "shipment-1")
    assert (replayed, version) == (live.state, live.version)
    signature = replayed.handoffs[-1].signature
    assert signature is not None and signature.event_id == live.events[0].event_id


def test_the_hash_covers_the_record_link_and_every_signed_field():
    event = CustodyAccepted("courier:bob", "LON dock", AT, SIGNED)
    sealed = event.sealed(LINK).signature.content_hash
    assert event.sealed(LINK).signature.content_hash == sealed  # deterministic
    other_links = [
        dataclasses.replace(LINK, aggregate_id="shipment-2"),
        dataclasses.replace(LINK, aggregate_version=6),
        dataclasses.replace(LINK, event_id="0190b6a2-0000-7000-8000-000000000002"),
    ]
    assert all(event.sealed(link).signature.content_hash != sealed for link in other_links)
    changed = [
        dataclasses.replace(event, party="courier:eve"),
        dataclasses.replace(event, place="M6 depot"),
        dataclasses.replace(event, signature=dataclasses.replace(SIGNED, signer_name="Eve")),
        dataclasses.replace(event, signature=dataclasses.replace(SIGNED, signer_subject="s-2")),
        dataclasses.replace(event, signature=dataclasses.replace(SIGNED, meaning="damaged")),
        dataclasses.replace(
            event, signature=dataclasses.replace(SIGNED, signed_at=AT + timedelta(seconds=1))
        ),
    ]
    assert all(e.sealed(LINK).signature.content_hash != sealed for e in changed)


def test_a_qa_decision_is_part_of_what_is_signed():
    qa = ESignature("Quinn Adeyemi", "excursion reviewed", AT, "sub-quinn")
    accept_hash = ShipmentDispositioned(Decision.ACCEPT, qa).sealed(LINK).signature.content_hash
    reject_hash = ShipmentDispositioned(Decision.REJECT, qa).sealed(LINK).signature.content_hash
    assert accept_hash != reject_hash


def test_a_batch_release_signature_covers_the_released_units_and_eligibility():
    released = BatchReleased(
        Signature("Quinn Adeyemi", AT, "approved", "sub-quinn"), "ELIGIBLE", "", ()
    )
    sealed = released.sealed(LINK)
    assert sealed.signature.event_id == LINK.event_id
    assert sealed.signature.content_hash == signed_content_hash(
        LINK,
        {
            "record": "BatchReleased", "name": "Quinn Adeyemi", "subject": "sub-quinn",
            "signed_at": AT, "meaning": "approved", "donor_eligibility": "ELIGIBLE",
            "urgent_physician_request": "", "units": [],
        },
    )  # fmt: skip
    urgent = dataclasses.replace(released, donor_eligibility="PENDING")
    assert urgent.sealed(LINK).signature.content_hash != sealed.signature.content_hash


@pytest.mark.parametrize(
    "event",
    [QuarantineLifted("quinn", "ok"), UnitDiscarded("LON-T1/R1/B1/P01", "damaged bag")],
    ids=["legacy lift", "discard without a QA signature"],
)
def test_storage_events_without_a_signature_are_stored_as_they_are(event):
    assert event.sealed(LINK) == event


def test_a_qa_disposition_signature_names_the_decision():
    qa = StorageSignature("Quinn Adeyemi", "warmed above -130", AT, "sub-quinn")
    lifted = QuarantineLifted("quinn", qa.meaning, qa).sealed(LINK)
    discarded = UnitDiscarded("LON-T1/R1/B1/P01", "QA", qa).sealed(LINK)
    assert lifted.signature is not None and discarded.signature is not None
    assert lifted.signature.event_id == discarded.signature.event_id == LINK.event_id
    assert lifted.signature.content_hash != discarded.signature.content_hash
