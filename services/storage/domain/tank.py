"""The tank aggregate: its layout and which unit holds each position (one unit per position)."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence

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
from shared.errors import InvalidArgument, NotFound, PreconditionFailed

TANK_ID = re.compile(r"[A-Z]{3}-[A-Z0-9]{1,12}")  # site-prefixed, e.g. LON-T1 (fullmatch)
POSITION = re.compile(r"R\d+/B\d+/P\d{2,}", re.ASCII)
MAX_POSITIONS = 20_000

Command = RegisterTank | OccupyPosition | VacatePosition


def address(tank_id: str, rack: int, box: int, position: int) -> str:
    return f"{tank_id}/R{rack}/B{box}/P{position:02d}"


def tank_of(address_: str) -> str:
    """The tank id an address belongs to (InvalidArgument if it is not an address)."""
    tank_id, _, rest = address_.partition("/")
    if not TANK_ID.fullmatch(tank_id) or not POSITION.fullmatch(rest):
        raise InvalidArgument("address", f"{address_!r} is not <tank>/R<n>/B<n>/P<nn>")
    return tank_id


def decide(state: Tank, command: Command) -> Sequence[TankEvent]:
    match command:
        case RegisterTank():
            return register(state, command)
        case OccupyPosition(address_, unit_id, segregated_unit, moving_from):
            if not state.registered:
                raise NotFound("tank is not registered")
            if address_ not in state.segregated:
                raise InvalidArgument("address", f"{address_} is not a position of {state.tank_id}")
            occupant = state.occupant.get(address_)
            if occupant == unit_id:
                return []  # already there: a retried store
            if occupant is not None:
                raise PreconditionFailed("position occupied", f"{address_} holds {occupant}")
            if segregated_unit and not state.segregated[address_]:
                raise PreconditionFailed(
                    "segregated storage", f"urgent-need unit {unit_id} needs a segregated position"
                )
            if state.segregated[address_] and not segregated_unit:
                raise PreconditionFailed(
                    "segregated storage", f"{address_} is kept for urgent-need (segregated) units"
                )
            # A unit holds one position: only a move from exactly where it is may take another
            # (and leaves the old one in the same decision); anything else is refused.
            held = [a for a, u in state.occupant.items() if u == unit_id]
            if held and held != [moving_from]:
                raise PreconditionFailed("unit already in a position", f"{unit_id} is at {held[0]}")
            left = [PositionVacated(a, unit_id) for a in held]
            return [*left, PositionOccupied(address_, unit_id)]
        case VacatePosition(address_, unit_id):
            if state.occupant.get(address_) != unit_id:
                return []  # already vacated
            return [PositionVacated(address_, unit_id)]
    raise TypeError(f"unknown command {command!r}")


def register(state: Tank, command: RegisterTank) -> list[TankEvent]:
    if state.registered:
        raise PreconditionFailed("tank already registered", command.tank_id)
    if not TANK_ID.fullmatch(command.tank_id):
        raise InvalidArgument("tank_id", "site-prefixed id, e.g. LON-T1")
    for name in ("racks", "boxes_per_rack", "positions_per_box"):
        if getattr(command, name) < 1:
            raise InvalidArgument(name, "must be >= 1")
    total = command.racks * command.boxes_per_rack * command.positions_per_box
    if total > MAX_POSITIONS:
        raise InvalidArgument(
            "positions_per_box", f"{total} positions exceed {MAX_POSITIONS} per tank"
        )
    boxes = {
        f"R{r}/B{b}"
        for r in range(1, command.racks + 1)
        for b in range(1, command.boxes_per_rack + 1)
    }
    unknown = sorted(set(command.segregated_boxes) - boxes)
    if unknown:
        raise InvalidArgument("segregated_boxes", f"not boxes of this tank: {', '.join(unknown)}")
    positions = tuple(
        PositionDef(address(command.tank_id, r, b, p), f"R{r}/B{b}" in command.segregated_boxes)
        for r in range(1, command.racks + 1)
        for b in range(1, command.boxes_per_rack + 1)
        for p in range(1, command.positions_per_box + 1)
    )
    return [TankRegistered(command.tank_id, positions)]


def evolve(state: Tank, event: TankEvent) -> Tank:
    match event:
        case TankRegistered(tank_id, positions):
            return Tank(tank_id, {p.address: p.segregated for p in positions}, {})
        case PositionOccupied(address_, unit_id):
            return dataclasses.replace(state, occupant={**state.occupant, address_: unit_id})
        case PositionVacated(address_):
            occupant = dict(state.occupant)
            occupant.pop(address_, None)
            return dataclasses.replace(state, occupant=occupant)
    raise TypeError(f"unknown event {event!r}")
