"""Donor aggregate properties: invariants under any command sequence, replay, codec round trip."""

from __future__ import annotations

import copy
import dataclasses
import functools
import typing
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.donor_intake.adapters.codec import CODEC
from services.donor_intake.domain.din_sequence import DinAllocated
from services.donor_intake.domain.donor import Command, decide, evolve
from services.donor_intake.domain.eligibility import (
    DEFAULT_MARKERS,
    determine_eligibility,
)
from services.donor_intake.domain.model import (
    Cmv,
    CollectionRecorded,
    Consent,
    DeferDonor,
    DetermineEligibility,
    Donor,
    DonorEvent,
    Eligibility,
    EligibilityDetermined,
    GiveConsent,
    PositiveResultAfterCollection,
    RecordCollection,
    RecordQuestionnaire,
    RecordScreeningResult,
    RecordTyping,
    RegisterDonor,
    Result,
    WithdrawConsent,
)
from services.donor_intake.tests.test_donor_domain import HLA, RULES, TODAY
from shared.errors import CellBankError
from tests.support.strategies import dataclass_strategy

days = st.integers(-20, 5).map(lambda n: TODAY + timedelta(days=n))


def single(strategy: st.SearchStrategy[Command]) -> st.SearchStrategy[tuple[Command, ...]]:
    return strategy.map(lambda command: (command,))


screen_all_negative = days.map(
    lambda specimen: tuple(
        RecordScreeningResult(m, Result.NEGATIVE, specimen, max(specimen, TODAY))
        for m in DEFAULT_MARKERS
    )
)
made_eligible = st.builds(  # a CMV result is required too; a reactive one does not disqualify
    lambda n, cmv: (
        GiveConsent("CF-NK v3"),
        RecordQuestionnaire(True),
        *(
            RecordScreeningResult(m, Result.NEGATIVE, TODAY + timedelta(n), TODAY)
            for m in DEFAULT_MARKERS
        ),
        RecordScreeningResult("CMV", cmv, TODAY + timedelta(n), TODAY),
    ),
    st.integers(-3, 0),
    st.sampled_from(Result),
)
collection_commands = st.builds(
    RecordCollection,
    din=st.sampled_from(["G123426000001", "G123426000002"]),
    collected_at=st.integers(-3, 3).map(
        lambda n: datetime(2026, 3, 2, 9, tzinfo=UTC) + timedelta(days=n)
    ),
    volume_ml=st.just(250.0),
    total_nucleated_cells=st.just(1e10),
    nk_cells=st.just(1e9),
    cd3_cells=st.just(5e9),
    urgent_physician_request=st.sampled_from(["", "Dr Roe: relapse"]),
)
MALFORMED: list[dict[str, typing.Any]] = [
    {"din": "G1234260000"},
    {"volume_ml": 0.0},
    {"volume_ml": float("nan")},
    {"nk_cells": -1.0},
    {"nk_cells": 6e9},  # with 5e9 CD3+ cells: more than the total
]
malformed = st.sampled_from(MALFORMED)
commands = st.one_of(
    made_eligible,
    single(collection_commands),
    single(collection_commands),
    st.tuples(collection_commands, malformed).map(lambda c: (dataclasses.replace(c[0], **c[1]),)),
    single(st.builds(RegisterDonor, st.just("donor-1"), st.sampled_from(["DR-0001", "Jo Doe"]))),
    single(st.builds(GiveConsent, st.sampled_from(["CF-NK v3", " "]))),
    single(st.just(WithdrawConsent())),
    screen_all_negative,
    single(
        st.builds(
            RecordScreeningResult,
            st.sampled_from([*RULES.known_markers, "anti-HIV"]),
            st.sampled_from(Result),
            days,
            st.just(TODAY),
        )
    ),
    single(st.builds(RecordQuestionnaire, st.booleans())),
    single(st.builds(DetermineEligibility, days)),
    single(st.builds(DeferDonor, st.integers(-1, 30).map(lambda n: TODAY + timedelta(n)), days)),
    single(
        st.builds(
            RecordTyping,
            st.sampled_from([HLA, {**HLA, "A": ("A*2:01", "A*24:02")}]),
            st.sampled_from([("KIR2DL1", "KIR3DL1"), ("KIR9XX9",)]),
            st.sampled_from(["O", "AB", "X"]),
            st.sampled_from(["POS", "NEG"]),
            st.sampled_from(Cmv),
        )
    ),
)
# most histories start from an eligible donor, so collections and lookbacks happen often
histories = st.tuples(
    st.just(()) | made_eligible | made_eligible, st.lists(commands, max_size=20)
).map(lambda h: [RegisterDonor("donor-1", "DR-0001"), *h[0], *(c for step in h[1] for c in step)])


def check_decision(before: Donor, events: list[DonorEvent], after: Donor) -> None:
    for event in events:
        if isinstance(event, CollectionRecorded):
            assert before.consent is Consent.GIVEN
            assert event.din not in before.collections
            status, _ = determine_eligibility(before, event.collected_at.date(), RULES)
            assert event.eligibility is status
            urgent = bool(event.urgent_physician_request)
            assert urgent is (status is not Eligibility.ELIGIBLE)
            assert min(event.volume_ml, event.nk_cells, event.cd3_cells) >= 0
        if isinstance(event, PositiveResultAfterCollection):
            assert event.dins == before.collections != ()
        if isinstance(event, EligibilityDetermined):
            assert (event.status is Eligibility.ELIGIBLE) is (event.reasons == ())
            assert event.rules_version == RULES.version
    assert after.collections[: len(before.collections)] == before.collections
    assert len(set(after.collections)) == len(after.collections)
    if after.eligibility is Eligibility.ELIGIBLE:
        assert not any(
            s.result is Result.POSITIVE and s.marker in RULES.required_markers
            for s in after.screening.values()
        )
        assert all(m in after.screening for m in RULES.known_markers)  # CMV included


@settings(deadline=None, max_examples=100)
@given(histories)
def test_any_command_sequence_keeps_the_donor_invariants(history):
    state = Donor()
    for command in history:
        snapshot = copy.deepcopy(state)
        try:
            events = list(decide(state, command, RULES))
        except CellBankError:
            assert state == snapshot  # a refusal changes nothing
            continue
        after = functools.reduce(evolve, events, state)
        check_decision(state, events, after)
        state = after


@settings(deadline=None, max_examples=100)
@given(histories)
def test_replaying_the_emitted_events_rebuilds_the_same_state(history):
    state, emitted = Donor(), []
    for command in history:
        try:
            events = list(decide(state, command, RULES))
        except CellBankError:
            continue
        for event in events:
            state = evolve(state, event)
        emitted.extend(events)
    assert functools.reduce(evolve, emitted, Donor()) == state
    stored = [CODEC.encode(e) for e in emitted]
    assert functools.reduce(evolve, (CODEC.decode(*s) for s in stored), Donor()) == state


EVENT_TYPES = [*typing.get_args(DonorEvent), DinAllocated]


def test_codec_maps_every_event_type():
    assert len(CODEC.event_types()) == len(EVENT_TYPES)


@pytest.mark.parametrize("event_type", EVENT_TYPES, ids=lambda t: t.__name__)
@settings(deadline=None, max_examples=50)
@given(data=st.data())
def test_every_event_round_trips_through_the_codec(event_type, data):
    event = data.draw(dataclass_strategy(event_type))
    assert CODEC.decode(*CODEC.encode(event)) == event
