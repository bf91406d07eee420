"""Tank aggregate: given events → when command → then events or refusal."""

from __future__ import annotations

import functools

import pytest

from services.storage.domain.model import (
    OccupyPosition,
    PositionDef,
    PositionOccupied,
    PositionVacated,
    RegisterTank,
    Tank,
    TankEvent,
    TankRegistered,
    VacatePosition,
)
from services.storage.domain.tank import MAX_POSITIONS, Command, address, decide, evolve, tank_of
from shared.errors import InvalidArgument, NotFound, PreconditionFailed

TANK_ID = "LON-T1"
P1 = address(TANK_ID, 1, 1, 1)  # "LON-T1/R1/B1/P01"
P2 = address(TANK_ID, 1, 1, 2)
SEG = address(TANK_ID, 1, 2, 1)  # in the segregated box R1/B2
REGISTERED: tuple[TankEvent, ...] = tuple(
    decide(Tank(), RegisterTank(TANK_ID, 1, 2, 2, segregated_boxes=("R1/B2",)))
)
HOLDING_U1 = (*REGISTERED, PositionOccupied(P1, "unit-1"))


def given(*events: TankEvent) -> Tank:
    return functools.reduce(evolve, events, Tank())


def when(events: tuple[TankEvent, ...], command: Command) -> list[TankEvent]:
    return list(decide(given(*events), command))


# ---- register -------------------------------------------------------------------------------


def test_register_lays_out_every_position_with_its_segregation():
    assert when((), RegisterTank(TANK_ID, 1, 2, 2, segregated_boxes=("R1/B2",))) == [
        TankRegistered(
            TANK_ID,
            (
                PositionDef("LON-T1/R1/B1/P01", False),
                PositionDef("LON-T1/R1/B1/P02", False),
                PositionDef("LON-T1/R1/B2/P01", True),
                PositionDef("LON-T1/R1/B2/P02", True),
            ),
        )
    ]


def test_registered_tank_starts_empty():
    tank = given(*REGISTERED)
    assert tank.registered
    assert tank.units() == ()
    assert len(tank.segregated) == 4


@pytest.mark.parametrize("tank_id", ["T1", "lon-T1", "LON_T1", "LON-", "LON-T1/R1", "LON-T1\n"])
def test_register_refuses_tank_id_that_is_not_site_prefixed(tank_id):
    with pytest.raises(InvalidArgument) as refused:
        when((), RegisterTank(tank_id, 1, 1, 1))
    assert refused.value.field == "tank_id"


@pytest.mark.parametrize("field", ["racks", "boxes_per_rack", "positions_per_box"])
@pytest.mark.parametrize("size", [0, -3])
def test_register_refuses_sizes_below_one(field, size):
    sizes = {"racks": 2, "boxes_per_rack": 2, "positions_per_box": 2, field: size}
    with pytest.raises(InvalidArgument) as refused:
        when((), RegisterTank(TANK_ID, **sizes))
    assert refused.value.field == field


def test_register_refuses_more_positions_than_a_tank_holds():
    with pytest.raises(InvalidArgument, match=f"exceed {MAX_POSITIONS}"):
        when((), RegisterTank(TANK_ID, 10, 21, 100))


def test_register_accepts_exactly_the_largest_tank():
    (registered,) = when((), RegisterTank(TANK_ID, 10, 20, 100))
    assert isinstance(registered, TankRegistered)
    assert len(registered.positions) == MAX_POSITIONS


@pytest.mark.parametrize("box", ["R1/B3", "R2/B1", "B1", "R1/B2/P01"])
def test_register_refuses_segregated_box_the_tank_does_not_have(box):
    with pytest.raises(InvalidArgument) as refused:
        when((), RegisterTank(TANK_ID, 1, 2, 2, segregated_boxes=(box,)))
    assert refused.value.field == "segregated_boxes"
    assert box in str(refused.value)


def test_register_twice_refused():
    with pytest.raises(PreconditionFailed, match="already registered"):
        when(REGISTERED, RegisterTank(TANK_ID, 1, 1, 1))


# ---- occupy ---------------------------------------------------------------------------------


def test_occupy_records_the_unit_in_the_position():
    assert when(REGISTERED, OccupyPosition(P1, "unit-1", False)) == [PositionOccupied(P1, "unit-1")]
    assert given(*HOLDING_U1).units() == ("unit-1",)


def test_occupy_in_unregistered_tank_is_not_found():
    with pytest.raises(NotFound):
        when((), OccupyPosition(P1, "unit-1", False))


@pytest.mark.parametrize(
    "unknown", [address(TANK_ID, 1, 1, 3), address(TANK_ID, 2, 1, 1), address("LON-T2", 1, 1, 1)]
)
def test_occupy_refuses_position_the_tank_does_not_have(unknown):
    with pytest.raises(InvalidArgument) as refused:
        when(REGISTERED, OccupyPosition(unknown, "unit-1", False))
    assert refused.value.field == "address"


def test_occupied_position_refuses_another_unit_naming_the_occupant():
    with pytest.raises(PreconditionFailed, match="position occupied") as refused:
        when(HOLDING_U1, OccupyPosition(P1, "unit-2", False))
    assert "unit-1" in str(refused.value)


def test_occupying_with_the_same_unit_again_records_nothing():
    assert when(HOLDING_U1, OccupyPosition(P1, "unit-1", False)) == []


def test_a_move_from_where_the_unit_is_takes_the_new_position_and_leaves_the_old():
    assert when(HOLDING_U1, OccupyPosition(P2, "unit-1", False, moving_from=P1)) == [
        PositionVacated(P1, "unit-1"),
        PositionOccupied(P2, "unit-1"),
    ]


@pytest.mark.parametrize("moving_from", ["", "elsewhere"])
def test_a_unit_already_in_a_position_cannot_take_a_second_one(moving_from):
    with pytest.raises(PreconditionFailed, match="unit already in a position"):
        when(HOLDING_U1, OccupyPosition(P2, "unit-1", False, moving_from=moving_from))


def test_segregated_unit_refused_in_an_ordinary_position():
    with pytest.raises(PreconditionFailed, match="segregated storage"):
        when(REGISTERED, OccupyPosition(P1, "unit-u", True))


def test_ordinary_unit_refused_in_a_segregated_position():
    with pytest.raises(PreconditionFailed, match="segregated storage"):
        when(REGISTERED, OccupyPosition(SEG, "unit-1", False))


def test_segregated_unit_takes_a_segregated_position():
    assert when(REGISTERED, OccupyPosition(SEG, "unit-u", True)) == [
        PositionOccupied(SEG, "unit-u")
    ]


# ---- vacate ---------------------------------------------------------------------------------


def test_vacate_frees_the_position():
    assert when(HOLDING_U1, VacatePosition(P1, "unit-1")) == [PositionVacated(P1, "unit-1")]
    assert given(*HOLDING_U1, PositionVacated(P1, "unit-1")).units() == ()


def test_vacate_twice_records_nothing():
    assert when((*HOLDING_U1, PositionVacated(P1, "unit-1")), VacatePosition(P1, "unit-1")) == []


def test_vacate_for_another_unit_leaves_the_occupant():
    assert when(HOLDING_U1, VacatePosition(P1, "unit-2")) == []


def test_vacated_position_can_be_occupied_again():
    vacated = (*HOLDING_U1, PositionVacated(P1, "unit-1"))
    assert when(vacated, OccupyPosition(P1, "unit-2", False)) == [PositionOccupied(P1, "unit-2")]


# ---- addresses ------------------------------------------------------------------------------


def test_address_is_tank_rack_box_position():
    assert address("MAN-TANK12", 3, 14, 7) == "MAN-TANK12/R3/B14/P07"


@pytest.mark.parametrize(
    "address_", ["LON-T1/R1/B1/P01", "LON-T1/R10/B20/P100", "MAN-TANK12/R3/B14/P07"]
)
def test_tank_of_accepts_addresses(address_):
    assert tank_of(address_) == address_.split("/")[0]


@pytest.mark.parametrize(
    "address_",
    [
        "",
        "LON-T1",
        "LON-T1/",
        "LON-T1/R1/B1",
        "LON-T1/R1/B1/P1",  # positions have two digits at least
        "LON-T1/R1/B1/P01/X",
        "lon-t1/R1/B1/P01",
        "T1/R1/B1/P01",
        "LON-T1/RX/B1/P01",
        "LON-T1\n/R1/B1/P01",
        "LON-T1/R1/B1/P01\n",
        "LON-T1/R١/B1/P01",  # a non-ASCII digit
    ],
)
def test_tank_of_refuses_what_is_not_an_address(address_):
    with pytest.raises(InvalidArgument) as refused:
        tank_of(address_)
    assert refused.value.field == "address"
