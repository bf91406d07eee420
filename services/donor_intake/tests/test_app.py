"""Donor intake's service layer against the in-memory event store."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from services.donor_intake.adapters.codec import CODEC, DIN_SEQUENCE
from services.donor_intake.app import DonorIntake
from services.donor_intake.domain import din_sequence
from services.donor_intake.domain.din_sequence import DinAllocated
from services.donor_intake.domain.eligibility import DEFAULT_MARKERS
from services.donor_intake.domain.model import (
    CollectionRecorded,
    GiveConsent,
    RecordQuestionnaire,
    WithdrawConsent,
)
from services.donor_intake.tests.test_donor_domain import (
    COLLECTED_AT,
    RULES,
    collection,
    screening,
)
from services.kernel.isbt128 import make_din
from shared.commands import Meta
from shared.errors import ConcurrencyConflict, NotFound, PreconditionFailed
from shared.events import NewEvent
from tests.factories import InterleavedEventStore

FACILITY = "G1234"
META = Meta(actor="nurse:nia", reason="test", at=COLLECTED_AT)
SEQUENCE = din_sequence.stream_id(FACILITY, COLLECTED_AT.year)


@pytest.fixture
def store() -> InterleavedEventStore:
    return InterleavedEventStore()


@pytest.fixture
def intake(store: InterleavedEventStore) -> DonorIntake:
    return DonorIntake(store, facility_id=FACILITY, rules=RULES)


async def eligible_donor(intake: DonorIntake) -> str:
    donor_id = (await intake.register("DR-2026-0001", META)).state.donor_id
    for command in (
        GiveConsent("CF-NK v3"),
        RecordQuestionnaire(True),
        *(screening(m) for m in (*DEFAULT_MARKERS, "CMV")),
    ):
        await intake.handle(donor_id, command, META, expected_version=None)
    return donor_id


def decoded(events: Sequence[object]) -> list[tuple[str, object]]:
    return [(e.aggregate_id, CODEC.decode(e.event_type, e.payload)) for e in events]  # type: ignore[attr-defined]


async def test_collection_takes_the_next_din_and_records_it_in_one_append(
    intake: DonorIntake, store: InterleavedEventStore
):
    donor_id = await eligible_donor(intake)
    head = await store.head_position()
    done = await intake.record_collection(donor_id, collection(din=""), META, None)
    din = make_din(FACILITY, COLLECTED_AT.year, 1)
    assert done.din == din and len(done.check_character) == 1
    written = decoded(await store.read_all(head))
    assert [(agg, type(e)) for agg, e in written] == [
        (SEQUENCE, DinAllocated),
        (donor_id, CollectionRecorded),
    ]
    assert written[1][1].din == din  # type: ignore[attr-defined]
    second = await intake.record_collection(donor_id, collection(din=""), META, None)
    assert second.din == make_din(FACILITY, COLLECTED_AT.year, 2)


async def test_refused_collection_burns_no_din(intake: DonorIntake, store: InterleavedEventStore):
    donor_id = await eligible_donor(intake)
    await intake.handle(donor_id, WithdrawConsent(), META, expected_version=None)
    head = await store.head_position()
    with pytest.raises(PreconditionFailed, match="consent"):
        await intake.record_collection(donor_id, collection(din=""), META, None)
    assert await store.head_position() == head
    assert await store.load(SEQUENCE) == []


async def test_collection_of_an_unknown_donor_is_not_found_and_writes_nothing(
    intake: DonorIntake, store: InterleavedEventStore
):
    with pytest.raises(NotFound):
        await intake.record_collection("donor-nobody", collection(din=""), META, None)
    assert await store.head_position() == 0


async def test_collection_with_a_stale_version_is_refused_and_writes_nothing(
    intake: DonorIntake, store: InterleavedEventStore
):
    donor_id = await eligible_donor(intake)
    head = await store.head_position()
    with pytest.raises(ConcurrencyConflict):
        await intake.record_collection(donor_id, collection(din=""), META, expected_version=1)
    assert await store.head_position() == head


async def test_a_din_taken_meanwhile_by_another_collection_is_taken_again(
    intake: DonorIntake, store: InterleavedEventStore
):
    donor_id = await eligible_donor(intake)
    taken = DinAllocated(make_din(FACILITY, COLLECTED_AT.year, 1), 1)
    event_type, payload = DIN_SEQUENCE.codec.encode(taken)
    store.before_next_append = (
        SEQUENCE,
        NewEvent(event_type, "din_sequence", payload, COLLECTED_AT, "nurse:other", "elsewhere"),
    )
    done = await intake.record_collection(donor_id, collection(din=""), META, None)
    assert done.din == make_din(FACILITY, COLLECTED_AT.year, 2)
    assert [e.aggregate_version for e in await store.load(SEQUENCE)] == [1, 2]
