"""Storage properties: invariants under any command sequence, replay, codec round trip."""

from __future__ import annotations

import copy
import dataclasses
import functools
import typing
from datetime import timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.storage.adapters.codec import CODEC
from services.storage.domain import tank, unit
from services.storage.domain.model import (
    DiscardUnit,
    Disposition,
    DispositionUnit,
    ExpireReservation,
    ExpireUnit,
    MoveUnit,
    OccupyPosition,
    PickUnit,
    PositionOccupied,
    PositionVacated,
    QuarantineUnit,
    RecallUnit,
    RegisterTank,
    ReleaseReservation,
    ReserveUnit,
    StoredUnit,
    StoreUnit,
    Tank,
    TankEvent,
    UnitEvent,
    UnitPicked,
    UnitReserved,
    UnitStatus,
    VacatePosition,
)
from services.storage.domain.tank import address
from services.storage.tests.test_unit_domain import FACTS, HERE, NOW, THERE
from shared.errors import CellBankError
from tests.support.strategies import dataclass_strategy

# ---- tanks ----------------------------------------------------------------------------------

TANK_ID = "LON-T1"
REGISTER = RegisterTank(TANK_ID, 1, 2, 2, segregated_boxes=("R1/B2",))
ADDRESSES = [
    *(address(TANK_ID, 1, b, p) for b in (1, 2) for p in (1, 2)),
    address(TANK_ID, 1, 3, 1),  # not a position of the tank
    address("LON-T2", 1, 1, 1),
]
UNITS = ["unit-1", "unit-2", "unit-3"]

tank_commands = st.one_of(
    st.just(REGISTER),
    st.builds(RegisterTank, st.just(TANK_ID), st.integers(-1, 2), st.just(2), st.just(2)),
    *[st.builds(OccupyPosition, st.sampled_from(ADDRESSES), st.sampled_from(UNITS), st.booleans())]
    * 3,
    st.builds(VacatePosition, st.sampled_from(ADDRESSES), st.sampled_from(UNITS)),
)
tank_histories = st.tuples(
    st.sampled_from([[], *[[REGISTER]] * 4]), st.lists(tank_commands, min_size=8, max_size=30)
)


def apply_tank_event(state: Tank, event: TankEvent) -> Tank:
    """evolve, checking that the event never puts two units in a position."""
    if isinstance(event, PositionOccupied):
        assert state.occupant.get(event.address) is None, "position already held"
        assert event.unit_id not in state.occupant.values(), "unit already in a position"
    if isinstance(event, PositionVacated):
        assert state.occupant.get(event.address) == event.unit_id
    return tank.evolve(state, event)


def run_tank(history: tuple[list[tank.Command], list[tank.Command]]) -> tuple[Tank, list]:
    state, emitted = Tank(), []
    for command in [*history[0], *history[1]]:
        snapshot = copy.deepcopy(state)
        try:
            events = list(tank.decide(state, command))
        except CellBankError:
            assert state == snapshot  # a refusal changes nothing
            continue
        state = functools.reduce(apply_tank_event, events, state)
        held = list(state.occupant.values())
        assert len(held) == len(set(held)), "a unit in two positions"
        for position, unit_id in state.occupant.items():
            assert position in state.segregated
            assert unit_id in UNITS
        emitted.extend(events)
    return state, emitted


@settings(deadline=None, max_examples=200)
@given(tank_histories)
def test_no_position_ever_holds_two_units_nor_a_unit_two_positions(history):
    run_tank(history)


@settings(deadline=None, max_examples=100)
@given(tank_histories)
def test_replaying_the_tanks_events_rebuilds_the_same_tank(history):
    state, emitted = run_tank(history)
    assert functools.reduce(tank.evolve, emitted, Tank()) == state
    decoded = (CODEC.decode(*CODEC.encode(e)) for e in emitted)
    assert functools.reduce(tank.evolve, decoded, Tank()) == state


# ---- stored units ---------------------------------------------------------------------------

# a few instants, so holds lapse, units expire (day 5) and picks meet their reservation
hours = st.sampled_from([-24, 0, 1, 3, 30, 24 * 5, 24 * 8]).map(lambda h: NOW + timedelta(hours=h))
days = hours.map(lambda t: t.date())
facts = st.sampled_from(
    [FACTS, None, dataclasses.replace(FACTS, expires_on=NOW.date() + timedelta(days=5))]
)
orders = st.sampled_from(["order-1", "order-2", " "])
store_commands = st.builds(
    StoreUnit, st.just("unit-1"), st.sampled_from([HERE, THERE]), facts, days
)
reserve_commands = st.builds(
    lambda order, now, h: ReserveUnit(order, now + timedelta(hours=h), now),
    orders,
    hours,
    st.sampled_from([-1, 2, 48]),
)
WEIGHTED_UNIT_COMMANDS: list[tuple[int, st.SearchStrategy[unit.Command]]] = [
    (2, store_commands),
    (2, st.builds(MoveUnit, st.sampled_from([HERE, THERE]))),
    (2, st.builds(QuarantineUnit, st.sampled_from(["excursion:a", "silent:b"]), st.just("d"))),
    (
        3,
        st.builds(
            DispositionUnit,
            st.sampled_from(Disposition),
            st.just("qa-anna"),
            st.sampled_from(["qa", "qa", "operator"]),
            st.sampled_from(["reviewed", " "]),
        ),
    ),
    (6, reserve_commands),
    (2, st.builds(ReleaseReservation, orders)),
    (2, st.builds(ExpireReservation, hours)),
    (2, st.builds(ExpireUnit, days)),
    (4, st.builds(PickUnit, orders, hours)),
    (1, st.builds(DiscardUnit, st.sampled_from(["bag damaged", ""]))),  # rarer: both end the
    (1, st.builds(RecallUnit, st.just("recall-1"), st.just("donor positive"))),  # story
]
unit_commands = st.sampled_from(
    [strategy for weight, strategy in WEIGHTED_UNIT_COMMANDS for _ in range(weight)]
).flatmap(lambda strategy: strategy)
# most histories start from a stored unit, so reservations, picks and expiry happen often
unit_histories = st.tuples(
    st.sampled_from([[], *[[StoreUnit("unit-1", HERE, FACTS, NOW.date())]] * 4]),
    st.lists(unit_commands, min_size=8, max_size=30),
).map(lambda h: [*h[0], *h[1]])
IN_A_POSITION = (
    UnitStatus.STORED,
    UnitStatus.QUARANTINED,
    UnitStatus.RECALLED,
    UnitStatus.EXPIRED,
)


def check_unit_step(before: StoredUnit, command: unit.Command, events: list[UnitEvent]) -> None:
    """What any accepted command may emit, judged on the state it was decided on."""
    if before.status in (UnitStatus.PICKED, UnitStatus.DISCARDED):
        assert events == [], "a unit gone from stock never changes again"
    state = before
    for event in events:
        if isinstance(event, UnitReserved):
            assert isinstance(command, ReserveUnit)
            held = state.reservation
            # At most one holder: a new reservation only once the unit is free, or the same
            # order renewing its own hold for longer.
            assert held is None or (
                held.order_id == event.order_id and event.hold_until > held.hold_until
            ), "two reservations at once"
            assert before.status is UnitStatus.STORED  # never quarantined/recalled/expired
            assert before.facts is not None
            assert before.facts.expires_on >= command.now.date()  # usable to its day's end
            assert event.hold_until > command.now
        if isinstance(event, UnitPicked):
            assert isinstance(command, PickUnit)
            assert before.status is UnitStatus.STORED
            assert before.facts is not None
            assert before.facts.expires_on >= command.now.date()  # usable to its day's end
            active = before.active_reservation(command.now)
            assert active is not None and active.order_id == event.order_id
        state = unit.evolve(state, event)


def check_unit_state(state: StoredUnit) -> None:
    if state.reservation is not None:
        assert state.status is UnitStatus.STORED, "a held-back unit keeps no reservation"
    if state.status is UnitStatus.QUARANTINED:
        assert state.quarantine_causes
    assert bool(state.address) is (state.status in IN_A_POSITION)


def run_unit(history: list[unit.Command]) -> tuple[StoredUnit, list[UnitEvent]]:
    state, emitted = StoredUnit(), []
    for command in history:
        snapshot = copy.deepcopy(state)
        try:
            events = list(unit.decide(state, command))
        except CellBankError:
            assert state == snapshot  # a refusal changes nothing
            continue
        check_unit_step(state, command, events)
        state = functools.reduce(unit.evolve, events, state)
        check_unit_state(state)
        emitted.extend(events)
    return state, emitted


@settings(deadline=None, max_examples=200)
@given(unit_histories)
def test_any_unit_command_sequence_keeps_one_reservation_and_only_for_available_units(history):
    run_unit(history)


@settings(deadline=None, max_examples=100)
@given(unit_histories)
def test_replaying_the_units_events_rebuilds_the_same_unit(history):
    state, emitted = run_unit(history)
    assert functools.reduce(unit.evolve, emitted, StoredUnit()) == state
    decoded = (CODEC.decode(*CODEC.encode(e)) for e in emitted)
    assert functools.reduce(unit.evolve, decoded, StoredUnit()) == state


# ---- codec ----------------------------------------------------------------------------------

EVENT_TYPES = [*typing.get_args(TankEvent), *typing.get_args(UnitEvent)]


def test_codec_maps_every_storage_event_type():
    assert len(CODEC.event_types()) == len(EVENT_TYPES)


@pytest.mark.parametrize("event_type", EVENT_TYPES, ids=lambda t: t.__name__)
@settings(deadline=None, max_examples=50)
@given(data=st.data())
def test_every_storage_event_round_trips_through_the_codec(event_type, data):
    event = data.draw(dataclass_strategy(event_type))
    assert CODEC.decode(*CODEC.encode(event)) == event
