"""Batch aggregate properties: invariants under any command sequence, replay, codec round trip."""

from __future__ import annotations

import copy
import functools
import typing
from datetime import UTC, date, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.kernel.isbt128 import parse_product_code
from services.manufacturing.adapters.codec import CODEC
from services.manufacturing.domain.batch import Command, decide, evolve
from services.manufacturing.domain.model import (
    NOT_EVALUATED_LABELS,
    Batch,
    BatchEvent,
    BatchReleased,
    BatchStatus,
    BatchSterilityFailed,
    ProcessStepRecorded,
    QcResultRecorded,
    RecordProcessStep,
    RecordQcResult,
    RecordSterilityResult,
    ReleaseBatch,
    Signature,
    StartBatch,
    Step,
    UnitSpec,
)
from services.manufacturing.domain.product_types import ALLOGENEIC_NK
from services.manufacturing.tests.test_batch_domain import DIN, PASSING_QC, PRODUCTS, T0
from shared.errors import CellBankError
from tests.support.strategies import dataclass_strategy

REQUIRED = [t.name for t in ALLOGENEIC_NK.tests if t.required_for_release]
PEOPLE = ["olga", "pavel", "quinn", "rosa", ""]

moments = st.builds(
    lambda hours, tz: (T0 + timedelta(hours=hours)).astimezone(tz),
    st.integers(0, 24 * 30),
    st.sampled_from([UTC, timezone(timedelta(hours=2))]),
)


def single(strategy: st.SearchStrategy[Command]) -> st.SearchStrategy[tuple[Command, ...]]:
    return strategy.map(lambda command: (command,))


all_qc_passing = moments.map(
    lambda at: tuple(RecordQcResult(name, v, t, at) for name, (v, t) in PASSING_QC.items())
)
units = st.lists(
    st.sampled_from(
        [
            UnitSpec(1e9, 1e5, 20.0),
            UnitSpec(8e8, 0.0, 18.5),
            UnitSpec(1e9, 1e5, 20.0),
            UnitSpec(0.0, 1e5, 20.0),  # malformed: no NK cells
        ]
    ),
    max_size=4,
).map(tuple)
releases = st.builds(
    ReleaseBatch,
    st.builds(
        Signature,
        st.sampled_from(PEOPLE),
        moments,
        st.sampled_from(["QA release: meets specification", ""]),
    ),
    st.sampled_from(["qa", "qa", "operator"]),
    st.sampled_from(["ELIGIBLE", "PENDING", "INELIGIBLE"]),
    units,
    st.sampled_from(["", "Dr Roe: relapse"]),
)
signed_releases = st.builds(  # a QA signer outside the operators, for an eligible or urgent donor
    lambda signer, at, eligibility, count: ReleaseBatch(
        Signature(signer, at, "QA release: meets specification"),
        "qa",
        eligibility,
        (UnitSpec(1e9, 1e5, 20.0),) * count,
        "" if eligibility == "ELIGIBLE" else "Dr Roe: relapse",
    ),
    st.sampled_from(["quinn", "rosa"]),
    moments,
    st.sampled_from(["ELIGIBLE", "PENDING", "INELIGIBLE"]),
    st.integers(1, 4),
)
cryopreservations = st.builds(  # release needs one: expiry counts from it
    RecordProcessStep,
    st.just(Step.CRYOPRESERVATION),
    st.just(0),
    st.sampled_from(["olga", "pavel"]),
    moments,
    st.just(3e9),
    st.just(92.0),
)
sterility_results = st.builds(RecordSterilityResult, st.booleans(), st.dates(date(2026, 3, 1)))
commands = st.one_of(
    single(
        st.builds(
            StartBatch,
            st.just("batch-1"),
            st.sampled_from([DIN, "G12342600000"]),
            st.just("donor-1"),
            st.sampled_from(["NK-ALLO", "NK-AUTO"]),
            st.sampled_from(PEOPLE),
        )
    ),
    single(
        st.builds(
            RecordProcessStep,
            st.sampled_from(Step),
            st.integers(0, 61),
            st.sampled_from(PEOPLE),
            moments,
            st.sampled_from([3e9, 3e9, 0.0, -1.0, float("nan")]),
            st.sampled_from([92.0, 92.0, 100.0, 101.0, -1.0]),
        )
    ),
    single(cryopreservations),
    all_qc_passing,
    all_qc_passing,
    single(
        st.builds(
            RecordQcResult,
            st.sampled_from([*REQUIRED, "sterility_14d", "hemoglobin"]),
            st.none() | st.sampled_from([0.0, 4.9, 5.0, 20.0, 69.9, 70.0, 95.0, -1.0]),
            st.sampled_from(["", "negative", "no growth", "confirmed", "detected"]),
            moments,
        )
    ),
    single(releases),
    single(signed_releases),
    single(sterility_results),
    st.tuples(signed_releases, sterility_results),
)
# most histories start a batch run by olga, so QC, release and sterility are reached often
start = StartBatch("batch-1", DIN, "donor-1", "NK-ALLO", "olga")
frozen = RecordProcessStep(Step.CRYOPRESERVATION, 0, "pavel", T0, 3e9, 92.0)
histories = st.tuples(
    st.integers(0, 3).map(lambda n: ((), (start,), (start, frozen), (start, frozen))[n]),
    st.lists(commands, max_size=20),
).map(lambda h: [*h[0], *(c for step in h[1] for c in step)])


def check_decision(before: Batch, command: Command, events: list[BatchEvent], after: Batch) -> None:
    for event in events:
        if isinstance(event, ProcessStepRecorded | QcResultRecorded):
            assert before.status is BatchStatus.IN_PROCESS  # closed after release
        if isinstance(event, BatchReleased):
            assert isinstance(command, ReleaseBatch)
            assert before.status is BatchStatus.IN_PROCESS
            assert command.signer_role == "qa"
            assert event.signature.name.strip() and event.signature.meaning.strip()
            assert event.signature.name not in before.operators  # two-person rule
            assert all(before.qc[name].passed for name in REQUIRED)
            urgent = event.donor_eligibility != "ELIGIBLE"
            assert urgent is bool(event.urgent_physician_request)
            assert [u.division for u in event.units] == list(range(1, len(command.units) + 1))
            assert len({u.unit_id for u in event.units}) == len(event.units) >= 1
            assert all(
                parse_product_code(u.product_code) and u.unit_id == f"{u.din}-{u.product_code}"
                for u in event.units
            )
            # shelf life counts from the first cryopreservation, whenever QA signs
            frozen = min(s.performed_at for s in before.steps if s.step == "CRYOPRESERVATION")
            expires = frozen.astimezone(UTC).date() + timedelta(days=ALLOGENEIC_NK.stability_days)
            assert {u.expires_on for u in event.units} == {expires}
            assert all(
                u.din == before.din
                and u.status == "RELEASED"
                and u.segregated is urgent
                and u.labels == (NOT_EVALUATED_LABELS if urgent else ())
                and u.viable_nk_cells > 0
                and u.cd3_cells >= 0
                for u in event.units
            )
        if isinstance(event, BatchSterilityFailed):
            assert before.status is BatchStatus.RELEASED
            assert event.unit_ids == tuple(u.unit_id for u in before.units) != ()
    if before.status is BatchStatus.RELEASED:
        assert after.status is BatchStatus.RELEASED
        assert (after.units, after.qc, after.operators) == (
            before.units,
            before.qc,
            before.operators,
        )


@settings(deadline=None, max_examples=100)
@given(histories)
def test_any_command_sequence_keeps_the_batch_invariants(history):
    state, signer = Batch(), ""
    for command in history:
        snapshot = copy.deepcopy(state)
        try:
            events = list(decide(state, command, PRODUCTS))
        except CellBankError:
            assert state == snapshot  # a refusal changes nothing
            continue
        after = functools.reduce(evolve, events, state)
        check_decision(state, command, events, after)
        signer = next((e.signature.name for e in events if isinstance(e, BatchReleased)), signer)
        state = after
    if state.status is BatchStatus.RELEASED:
        # a released batch always had every required QC passed and a signer outside the operators
        assert all(state.qc[name].passed for name in REQUIRED)
        assert signer not in state.operators


@settings(deadline=None, max_examples=100)
@given(histories)
def test_replaying_the_emitted_events_rebuilds_the_same_state(history):
    state, emitted = Batch(), []
    for command in history:
        try:
            events = list(decide(state, command, PRODUCTS))
        except CellBankError:
            continue
        for event in events:
            state = evolve(state, event)
        emitted.extend(events)
    assert functools.reduce(evolve, emitted, Batch()) == state
    stored = [CODEC.encode(e) for e in emitted]
    assert functools.reduce(evolve, (CODEC.decode(*s) for s in stored), Batch()) == state


EVENT_TYPES = list(typing.get_args(BatchEvent))


def test_codec_maps_every_event_type():
    assert len(CODEC.event_types()) == len(EVENT_TYPES)


@pytest.mark.parametrize("event_type", EVENT_TYPES, ids=lambda t: t.__name__)
@settings(deadline=None, max_examples=50)
@given(data=st.data())
def test_every_event_round_trips_through_the_codec(event_type, data):
    event = data.draw(dataclass_strategy(event_type))
    assert CODEC.decode(*CODEC.encode(event)) == event
